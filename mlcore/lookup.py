"""Identify one photo against a catalogue folder, without a database: for ``python -m mlcore process``.

The Django side searches pgvector; this is the same search in memory (``mlcore.retrieval``), so a
developer or curator can see why a photo was matched as it was from the command line: the
metadata the nearest catalogue images vote for, and the 8 best types with the turn that matched.

Catalogue photos are processed as the platform indexes them (``Pipeline.process(..., assume_upright=True)``
with their known side), ~0.5 s each here; ``cache`` keeps the vectors in an ``.npz`` file, reused
while the model versions and the catalogue's images are the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlcore.dataset import CatalogueRecord, type_key
from mlcore.retrieval import METADATA_NEIGHBOURS, NEIGHBOUR_IMAGES, InMemoryIndex, QueryPhoto, rank_items


@dataclass
class Catalogue:
    """A catalogue's images in an in-memory index; items are catalogue types (``type_key``)."""

    index: InMemoryIndex
    labels: dict[str, dict[str, str]]  # type_id → metadata labels
    paths: dict[str, str]  # image id ("record_id:side") → photo path


def _image_ids(records: Sequence[CatalogueRecord]) -> list[tuple[str, CatalogueRecord, str]]:
    return [(f"{r.record_id}:{side}", r, side) for r in records for side in sorted(r.images)]


def build_catalogue(
    pipeline,
    records: Sequence[CatalogueRecord],
    *,
    cache: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Catalogue:
    """Embed every image of ``records`` as the platform indexes them (or read them from ``cache``).

    A photo in which no coin is found is left out (as indexing does), and so is its image id.
    """
    from mlcore.imageio import ImageDecodeError
    from mlcore.pipeline import NoObjectFound

    wanted = _image_ids(records)
    versions = json.dumps(pipeline.model_versions(), sort_keys=True)
    labels = {type_key(r): dict(r.labels) for r in records}
    paths = {image_id: str(r.images[side]) for image_id, r, side in wanted}
    index = InMemoryIndex()
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as stored:
            current = str(stored["versions"]) == versions
            if current and set(stored["requested"].tolist()) == {i for i, _, _ in wanted}:
                if len(stored["ids"]):
                    index.add(
                        stored["ids"].tolist(), stored["vectors"], stored["items"].tolist(), stored["sides"].tolist()
                    )
                return Catalogue(index, labels, paths)
    ids, vectors, items, sides = [], [], [], []
    for done, (image_id, record, side) in enumerate(wanted, start=1):
        try:
            result = pipeline.process(record.images[side], known_side=side, assume_upright=True)
        except (ImageDecodeError, NoObjectFound):
            result = None
        if result is not None:
            ids.append(image_id)
            vectors.append(result.embedding)
            items.append(type_key(record))
            sides.append(side)
        if on_progress is not None:
            on_progress(done, len(wanted))
    matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, 0), np.float32)
    if ids:
        index.add(ids, matrix, items, sides)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("wb") as fh:  # np.savez would append ".npz" to a name without it
            np.savez(
                fh,
                versions=np.array(versions),
                requested=np.array([i for i, _, _ in wanted]),
                ids=np.array(ids),
                vectors=matrix,
                items=np.array(items),
                sides=np.array(sides),
            )
    return Catalogue(index, labels, paths)


def identify(pipeline, result, catalogue: Catalogue, *, exclude: Iterable[str] = (), k: int = 8) -> dict[str, Any]:
    """Metadata and the ``k`` best types for one ``ProcessResult``, as the platform ranks them.

    The search reads the rotation search's turns (when the pipeline made them) on the predicted side
    (both sides when it is unknown), adds the metadata agreement and keeps each type's best image.
    ``exclude``: record ids left out of the catalogue (a photo of a catalogue specimen).
    """
    side = result.side if result.side in ("obverse", "reverse") else None
    left_out = set(exclude)
    excluded = {image_id for image_id in catalogue.index.image_ids if image_id.rsplit(":", 1)[0] in left_out}
    nearest = catalogue.index.search(result.embedding, METADATA_NEIGHBOURS, side, exclude=excluded)
    predictions = pipeline.predict_metadata([(catalogue.labels.get(h.item_id, {}), h.score) for h in nearest])
    turns = result.turns
    if turns is not None:
        photo = QueryPhoto(0, side, turns.vectors, [float(a) for a in turns.angles], turns.bonus)
    else:
        photo = QueryPhoto(0, side, result.embedding[None, :], [float(result.angle)])
    ranked = rank_items(
        [photo],
        lambda vector, side: catalogue.index.search(vector, NEIGHBOUR_IMAGES, side, exclude=excluded),
        lambda item_ids: {item_id: catalogue.labels.get(item_id, {}) for item_id in item_ids},
        k=k,
    )
    candidates = [
        {
            "rank": rank,
            "type_id": item.item_id,
            "score": round(item.score, 4),
            "agreement": round(item.agreement, 4),
            "image": item.image_id,
            "photo": catalogue.paths.get(item.image_id, ""),
            "angle": round(item.angle, 1),  # the query's turn that matched this image
        }
        for rank, item in enumerate(ranked, start=1)
    ]
    metadata = {
        name: {"value": p.value, "confidence": round(float(p.confidence), 3)}
        for name, p in predictions.items()
        if p is not None and p.value
    }
    return {"metadata": metadata, "candidates": candidates}
