"""In-memory nearest-neighbour search over image embeddings, and the rules that turn image hits into items.

The database does the same with pgvector in production; this index serves the evaluation, tests and
small tools without a database. Vectors are L2-normalised, so the score is the cosine similarity.

* ``group_by_item`` keeps each item's best image hit only, so several specimens of one type cannot
  crowd the candidate list.
* ``combine_sides`` merges the hits of an obverse photo and a reverse photo of one coin: an item
  scores by its best obverse hit plus its best reverse hit. An item found by one side only gets, for
  the missing side, that side's weakest listed score: an upper bound of what it would have scored
  there, so an item both photos agree on is never ranked below an item with the same scores that
  only one photo found.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np


class Hit(NamedTuple):
    """One search result: the catalogue image, its item and the cosine similarity."""

    image_id: str
    item_id: str
    score: float


class InMemoryIndex:
    """Exact cosine top-k over a matrix of L2-normalised vectors, with an optional side filter."""

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self._vectors: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        self.image_ids: list[str] = []
        self.item_ids: list[str] = []
        self.sides: list[str | None] = []

    def __len__(self) -> int:
        return len(self.image_ids)

    def add(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        item_ids: Sequence[str],
        sides: Sequence[str | None] | None = None,
    ) -> None:
        """Add images: their ids, (N, dim) vectors (normalised here again), item ids and sides."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids) or len(ids) != len(item_ids):
            raise ValueError("ids, vectors and item_ids must have the same length (vectors 2-D)")
        if self.dim is None:
            self.dim = vectors.shape[1]
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {vectors.shape[1]}, the index {self.dim}")
        sides = list(sides) if sides is not None else [None] * len(ids)
        if len(sides) != len(ids):
            raise ValueError("sides must have the same length as ids")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self._vectors.append(vectors / np.maximum(norms, 1e-12))
        self._matrix = None
        self.image_ids += [str(i) for i in ids]
        self.item_ids += [str(i) for i in item_ids]
        self.sides += sides

    @property
    def matrix(self) -> np.ndarray:
        if self._matrix is None:
            dim = self.dim or 0
            self._matrix = np.concatenate(self._vectors) if self._vectors else np.zeros((0, dim), np.float32)
            self._vectors = [self._matrix]
            self._sides_array = np.array(self.sides, dtype=object)
        return self._matrix

    def scores(self, vector: np.ndarray, *, side: str | None = None, exclude: Iterable[str] = ()) -> np.ndarray:
        """Cosine similarity to every image; -inf for images of another side or excluded image ids."""
        matrix = self.matrix
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        similarities = matrix @ (vector / max(float(np.linalg.norm(vector)), 1e-12))
        if side is not None:
            similarities = np.where(self._sides_array == side, similarities, -np.inf)
        excluded = set(exclude)
        if excluded:
            mask = np.fromiter((i in excluded for i in self.image_ids), dtype=bool, count=len(self.image_ids))
            similarities = np.where(mask, -np.inf, similarities)
        return similarities

    def search(
        self, vector: np.ndarray, k: int = 8, side: str | None = None, *, exclude: Iterable[str] = ()
    ) -> list[Hit]:
        """The k most similar images (best first), optionally of one side only, minus excluded ids."""
        if len(self) == 0 or k <= 0:
            return []
        similarities = self.scores(vector, side=side, exclude=exclude)
        k = min(k, len(similarities))
        top = np.argpartition(-similarities, k - 1)[:k]
        top = top[np.argsort(-similarities[top], kind="stable")]
        return [
            Hit(self.image_ids[i], self.item_ids[i], float(similarities[i]))
            for i in top
            if np.isfinite(similarities[i])
        ]


def group_by_item(hits: Iterable[Sequence], k: int = 8) -> list[Hit]:
    """Each item once, with its best-scoring image hit, best first; at most ``k`` items.

    ``hits`` are (image_id, item_id, score) triples in any order.
    """
    best: dict[str, Hit] = {}
    for raw in hits:
        hit = Hit(str(raw[0]), str(raw[1]), float(raw[2]))
        current = best.get(hit.item_id)
        if current is None or hit.score > current.score:
            best[hit.item_id] = hit
    return sorted(best.values(), key=lambda h: (-h.score, h.item_id))[:k]


class PairHit(NamedTuple):
    """An item found from two photos of one coin: combined score and each side's best hit (or None)."""

    item_id: str
    score: float
    obverse: Hit | None
    reverse: Hit | None


def combine_sides(hits_obv: Iterable[Sequence], hits_rev: Iterable[Sequence], k: int = 8) -> list[PairHit]:
    """Items ranked by best obverse score + best reverse score (see the module docstring for absent sides).

    Pass each side's hits deep enough (e.g. 50–100 images) that a true item appears in both lists.
    """
    obverse = {h.item_id: h for h in group_by_item(hits_obv, k=10**9)}
    reverse = {h.item_id: h for h in group_by_item(hits_rev, k=10**9)}
    # An item missing from one side's list scored at most that list's lowest score there.
    floor_obv = min((h.score for h in obverse.values()), default=0.0)
    floor_rev = min((h.score for h in reverse.values()), default=0.0)
    combined = []
    for item_id in set(obverse) | set(reverse):
        o, r = obverse.get(item_id), reverse.get(item_id)
        score = (o.score if o else floor_obv) + (r.score if r else floor_rev)
        combined.append(PairHit(item_id, float(score), o, r))
    combined.sort(key=lambda p: (-p.score, p.item_id))
    return combined[:k]
