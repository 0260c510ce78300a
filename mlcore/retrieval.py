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
* ``rerank_by_agreement`` adds to each item's score how far its metadata (ruler, mint…) agrees with
  the nearest images (``mlcore.metadata.agreement_bonuses``), before grouping.
* ``rank_items`` is *the* ranking: the platform (over pgvector), the command-line lookup and the
  evaluations (over ``InMemoryIndex``) all call it, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from mlcore.metadata import AGREEMENT_WEIGHT, agreement_bonuses

CANDIDATES = 8  # items shown for one query
NEIGHBOUR_IMAGES = 80  # catalogue images read for each turn of a query photo before grouping into items
METADATA_NEIGHBOURS = 24  # nearest images whose labels vote for a photo's metadata


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


def rerank_by_agreement(
    hits: Iterable[Any], labels_of: Mapping[Any, Mapping[str, str]], weight: float = AGREEMENT_WEIGHT
) -> list[Any]:
    """Image hits (``Hit``/``RotatedHit``) with their item's metadata agreement bonus added, best first.

    The bonus (``mlcore.metadata.agreement_bonuses``) compares the nearest hits with the whole list,
    so pass every hit the search read, not a top-k of them. ``labels_of`` maps item ids to labels.
    """
    ranked = sorted(hits, key=lambda h: -h.score)
    bonus = agreement_bonuses([(h.item_id, labels_of.get(h.item_id, {}), h.score) for h in ranked], weight=weight)
    if not bonus:
        return ranked
    return sorted((h._replace(score=h.score + bonus[h.item_id]) for h in ranked), key=lambda h: -h.score)


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


# --- Rotation search ------------------------------------------------------------------------------
#
# Catalogue embeddings are of upright cut-outs, and the upright step is the largest single loss of
# recall (docs/ml-notes.md). So a query is also embedded turned by several angles (a "sweep"), every
# turn is searched, and each catalogue image scores by its best turn: that turn is also the angle
# that aligns query and candidate. A turn may carry a ``bonus`` (e.g. β·log p(angle) from the
# orientation estimator) so that implausible turns must match clearly better to win.


class RotatedHit(NamedTuple):
    """An image hit scored by its best turn of the query: ``turn`` indexes the query's turns.

    Ids are kept as given (strings here, database keys on the Django side).
    """

    image_id: Any
    item_id: Any
    score: float
    turn: int


def merge_turns(per_turn_hits: Sequence[Iterable[Sequence]], bonus: Sequence[float] | None = None) -> list[RotatedHit]:
    """Image hits of each turn of one query → each image once, scored by its best turn (+ that turn's bonus).

    With each turn's top-k, this is exact for the top-k of the merged score: an image in the merged
    top-k is in the top-k of its best turn (every image above it there also scores higher overall).
    Images missing from a turn's list are simply not scored at that turn (their score there is lower
    than anything listed), so the merge needs no extra vectors. Best first.
    """
    bonus = list(bonus) if bonus is not None else [0.0] * len(per_turn_hits)
    if len(bonus) != len(per_turn_hits):
        raise ValueError("one bonus per turn")
    best: dict[Any, RotatedHit] = {}
    for turn, (hits, extra) in enumerate(zip(per_turn_hits, bonus, strict=True)):
        for raw in hits:
            score = float(raw[2]) + float(extra)
            current = best.get(raw[0])
            if current is None or score > current.score:
                best[raw[0]] = RotatedHit(raw[0], raw[1], score, turn)
    return sorted(best.values(), key=lambda h: (-h.score, str(h.image_id)))


def search_turns(
    index: InMemoryIndex,
    vectors: np.ndarray,
    k: int = 200,
    side: str | None = None,
    *,
    exclude: Iterable[str] = (),
    bonus: Sequence[float] | None = None,
) -> list[RotatedHit]:
    """The k best images for a query given as (T, dim) vectors, one per turn; see ``merge_turns``."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    excluded = set(exclude)
    per_turn = [index.search(vector, k, side, exclude=excluded) for vector in vectors]
    return merge_turns(per_turn, bonus)[:k]


def turn_probabilities(probabilities: np.ndarray, angles: Sequence[float]) -> np.ndarray:
    """How plausible each correction angle is, read off the orientation estimator's bins (not normalised).

    ``probabilities[b]`` is the probability that the image is turned by b·(360/B)° counter-clockwise
    from upright, so the correction angle ``a`` (turn the image by ``a`` to make it upright) is
    plausible in proportion to p(−a), interpolated between bins.
    """
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    width = 360.0 / len(p)
    position = ((-np.asarray(angles, dtype=np.float64)) % 360.0) / width
    low = np.floor(position).astype(int) % len(p)
    frac = position - np.floor(position)
    return (1 - frac) * p[low] + frac * p[(low + 1) % len(p)]


def turn_bonus(probabilities: np.ndarray, angles: Sequence[float], weight: float, floor: float = 1e-3) -> np.ndarray:
    """``weight``·log p for each correction angle, p from ``turn_probabilities``.

    ``floor`` keeps one confident but wrong estimate from ruling a turn out entirely. ``weight`` 0
    gives zeros (a plain best-turn search).
    """
    if weight == 0 or len(np.asarray(probabilities).reshape(-1)) == 0:
        return np.zeros(len(angles))
    return weight * np.log(turn_probabilities(probabilities, angles) + floor)


def recall_at(rows: Sequence[tuple[Sequence, object]], k: int) -> float | None:
    """Share of (ranked answers, truth) rows whose truth is among the first ``k`` answers; None without rows."""
    if not rows:
        return None
    return round(sum(truth in list(ranked)[:k] for ranked, truth in rows) / len(rows), 4)


# --- The ranking ------------------------------------------------------------------------------------


class QueryPhoto(NamedTuple):
    """One photo of a query, as the rotation search reads it.

    ``vectors``: (T, dim), the cut-out turned T ways (turn 0 at the estimated angle); ``angles``: the
    correction angle of each turn; ``bonus``: a score added to each turn's hits (the orientation
    prior), or None; ``side``: the side to search, None for both.
    """

    position: int
    side: str | None
    vectors: np.ndarray
    angles: Sequence[float | None]
    bonus: Sequence[float] | None = None


class RankedItem(NamedTuple):
    """A candidate item: its similarity, its metadata agreement and the evidence (best image, photo, angle).

    ``score`` is the mean over the photos of the item's best image similarity; ``side_scores`` each
    photo's part (by side, or ``photoN``); the ranking is ``score + agreement`` (``total``).
    """

    item_id: Any
    score: float
    side_scores: dict[str, float]
    image_id: Any
    position: int
    angle: float | None = None
    agreement: float = 0.0

    @property
    def total(self) -> float:
        return self.score + self.agreement


SearchFn = Callable[[np.ndarray, str | None], Sequence[Sequence]]
LabelsFn = Callable[[Sequence[Any]], Mapping[Any, Mapping[str, str]]]


def rank_items(
    photos: Sequence[QueryPhoto], search: SearchFn, labels_of: LabelsFn, k: int = CANDIDATES
) -> list[RankedItem]:
    """The ``k`` best items for one or two photos of one object, best first.

    ``search(vector, side)`` returns the nearest catalogue images as (image_id, item_id, similarity)
    (``NEIGHBOUR_IMAGES`` of them: an ``InMemoryIndex`` or pgvector); ``labels_of(item_ids)`` their
    metadata labels. Each photo's turns are searched and merged (each image by its best turn,
    ``merge_turns``), then grouped into items (best image per item). With two photos an item scores
    the mean of its best score in each (an item one photo did not find gets that photo's weakest
    listed score: an upper bound, so agreement of both photos wins). Items rank by that score plus
    their metadata agreement with each photo's nearest images (``agreement_bonuses``, mean over photos).
    """
    merged = [
        merge_turns([search(vector, photo.side) for vector in np.atleast_2d(photo.vectors)], photo.bonus)
        for photo in photos
    ]
    if not merged:
        return []
    labels = labels_of(sorted({hit.item_id for hits in merged for hit in hits}, key=str))
    best_per_photo: list[dict[Any, tuple[float, Any, float | None]]] = []
    bonuses_per_photo = []
    for photo, hits in zip(photos, merged, strict=True):
        best: dict[Any, tuple[float, Any, float | None]] = {}
        for hit in hits:
            if hit.item_id not in best or hit.score > best[hit.item_id][0]:
                best[hit.item_id] = (hit.score, hit.image_id, photo.angles[hit.turn])
        best_per_photo.append(best)
        bonuses_per_photo.append(agreement_bonuses([(h.item_id, labels.get(h.item_id, {}), h.score) for h in hits]))
    floors = [min((v[0] for v in best.values()), default=0.0) for best in best_per_photo]
    ranked = []
    for item_id in set().union(*best_per_photo):
        scores, side_scores, evidence = [], {}, None
        for photo, best, floor in zip(photos, best_per_photo, floors, strict=True):
            score, image_id, angle = best.get(item_id, (floor, None, None))
            scores.append(score)
            side_scores[photo.side or f"photo{photo.position + 1}"] = round(score, 4)
            if image_id is not None and (evidence is None or score > evidence[0]):
                evidence = (score, image_id, photo.position, angle)
        _, image_id, position, angle = evidence or (None, None, photos[0].position, None)
        agreement = float(np.mean([bonuses.get(item_id, 0.0) for bonuses in bonuses_per_photo]))
        ranked.append(RankedItem(item_id, float(np.mean(scores)), side_scores, image_id, position, angle, agreement))
    ranked.sort(key=lambda item: (-item.total, str(item.item_id)))
    return ranked[:k]
