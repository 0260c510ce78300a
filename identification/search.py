"""Searching the catalogue for a submission's photos and storing the candidates.

The ranking (``candidates_search``) reads the pgvector index through ``nearest_images``; the
queries are the vectors the worker stored with each photo, so a search never runs a model and can
run in a web request (narrowing the candidates). A photo is searched in the index of the model
version that embedded it (``SubmissionImage.embedding_model``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import transaction
from pgvector.django import CosineDistance

from collection.models import CANDIDATE_FILTER_KINDS, ImageEmbedding, Item, Side
from identification.models import Candidate, Submission, SubmissionImage

# How many nearest images are read per turn before grouping them into items (several specimens of one
# item must not crowd out other items), and how many vote for the metadata: mlcore's constants, so
# that `python -m mlcore process --catalogue` ranks as the platform does (numpy only, no torch).
from mlcore.lookup import METADATA_NEIGHBOURS, NEIGHBOUR_IMAGES

logger = logging.getLogger(__name__)

CANDIDATES = 8


@dataclass
class ItemHit:
    """One candidate item with its evidence."""

    item_id: int
    score: float
    side_scores: dict[str, float]
    image_id: int | None
    query_position: int
    # Degrees counter-clockwise that turned the query to match its evidence image (rotation search);
    # None when the photo was searched at the estimator's angle only.
    angle: float | None = None
    # Added to ``score`` to rank: how far the item's metadata agrees with the vote of the photos'
    # nearest images (``mlcore.metadata.agreement_bonuses``); may be negative.
    agreement: float = 0.0


def nearest_images(
    *, vector, side: str | None, model: tuple[str, str], filters: dict[str, str] | None = None, limit: int
) -> list[tuple[int, int, float]]:
    """[(image_id, item_id, cosine similarity)] nearest first, from pgvector's HNSW index.

    Filters (side, metadata) are applied inside the index scan; pgvector 0.8's iterative scan
    keeps reading the graph until enough rows pass them, so recall holds under selective filters.
    """
    queryset = ImageEmbedding.objects.filter(model_name=model[0], model_version=model[1], item__isnull=False)
    if side:
        queryset = queryset.filter(side=side)
    for kind, slug in (filters or {}).items():
        if kind in CANDIDATE_FILTER_KINDS and slug:
            queryset = queryset.filter(item__concepts__kind=kind, item__concepts__slug=slug)
    queryset = queryset.annotate(distance=CosineDistance("vector", vector)).order_by("distance")
    with transaction.atomic(), _hnsw_settings():
        rows = list(queryset.values_list("image_id", "item_id", "distance")[:limit])
    return sorted(((image_id, item_id, 1.0 - float(d)) for image_id, item_id, d in rows), key=lambda r: -r[2])


class _hnsw_settings:
    """SET LOCAL the HNSW search parameters for the current transaction."""

    def __enter__(self):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL hnsw.ef_search = %s", [settings.OBVERSE_HNSW_EF_SEARCH])
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        return self

    def __exit__(self, *exc):
        return False


def candidates_search(
    *, queries: Sequence[tuple], model: tuple[str, str], filters=None, k: int = CANDIDATES
) -> list[ItemHit]:
    """The k best items for one or two query photos [(position, side, vector[, angles[, bonus]])].

    Rotation search: a photo may come as (T, dim) vectors, its cut-out turned T ways, with ``angles``
    the correction angle of each turn and ``bonus`` a score added to that turn's hits (the
    orientation prior). Every turn is searched and each image scores by its best turn
    (``mlcore.retrieval.merge_turns``); that turn's angle is the candidate's alignment angle.
    Each photo's image hits are grouped into items (best image per item). With two photos of
    different sides, an item's score is the mean of its best score on each side (an item missing
    on a side gets that side's weakest score), so agreement of both sides wins.
    Items are ranked by that score plus their metadata ``agreement`` with each photo's nearest images
    (``mlcore.metadata.agreement_bonuses``, mean over photos; why, in docs/ml-notes.md).
    """
    from mlcore.metadata import agreement_bonuses
    from mlcore.retrieval import merge_turns

    merged_per_query = []
    for query in queries:
        vectors = np.asarray(query[2], dtype=np.float32)
        vectors = vectors.reshape(1, -1) if vectors.ndim == 1 else vectors
        angles = list(query[3]) if len(query) > 3 else [None] * len(vectors)
        bonus = list(query[4]) if len(query) > 4 else None
        per_turn = [
            nearest_images(vector=turned, side=query[1], model=model, filters=filters, limit=NEIGHBOUR_IMAGES)
            for turned in vectors
        ]
        merged_per_query.append((merge_turns(per_turn, bonus), angles))
    if not merged_per_query:
        return []
    labels = item_labels(sorted({hit.item_id for merged, _ in merged_per_query for hit in merged}))
    per_query: list[dict[int, tuple[float, int, int, float | None]]] = []
    bonuses_per_query = []
    for query, (merged, angles) in zip(queries, merged_per_query, strict=True):
        best: dict[int, tuple[float, int, int, float | None]] = {}
        for image_id, item_id, score, turn in merged:
            if item_id not in best or score > best[item_id][0]:
                best[item_id] = (score, image_id, query[0], angles[turn])
        per_query.append(best)
        # How far each item's metadata agrees with this photo's nearest images (mlcore.metadata).
        bonuses_per_query.append(agreement_bonuses([(hit.item_id, labels[hit.item_id], hit.score) for hit in merged]))
    hits: list[ItemHit] = []
    items = set().union(*per_query)
    floors = [min((v[0] for v in best.values()), default=0.0) for best in per_query]
    for item_id in items:
        scores, side_scores, evidence = [], {}, None
        for query, best, floor in zip(queries, per_query, floors, strict=True):
            position, side = query[0], query[1]
            score, image_id, _, angle = best.get(item_id, (floor, None, position, None))
            scores.append(score)
            side_scores[side or f"photo{position + 1}"] = round(score, 4)
            if image_id is not None and (evidence is None or score > evidence[0]):
                evidence = (score, image_id, position, angle)
        hits.append(
            ItemHit(
                item_id,
                float(np.mean(scores)),
                side_scores,
                evidence[1] if evidence else None,
                evidence[2] if evidence else queries[0][0],
                angle=evidence[3] if evidence else None,
                agreement=float(np.mean([bonuses.get(item_id, 0.0) for bonuses in bonuses_per_query])),
            )
        )
    hits.sort(key=lambda h: -(h.score + h.agreement))
    return hits[:k]


def item_labels(item_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    """{item id: {concept kind: label}} of these items (the first label of a kind), in one query."""
    labels: dict[int, dict[str, str]] = {i: {} for i in item_ids}
    through = Item.concepts.through.objects.filter(item_id__in=item_ids).select_related("concept")
    for row in through:
        labels[row.item_id].setdefault(row.concept.kind, row.concept.label)
    return labels


def metadata_predict(pipeline, *, vector, side: str | None, model: tuple[str, str]) -> dict:
    """{field: {value, confidence}} for a photo: what its nearest catalogue images say (worker only)."""
    neighbours = nearest_images(vector=vector, side=side, model=model, limit=METADATA_NEIGHBOURS)
    labels = item_labels([item_id for _, item_id, _ in neighbours])
    predictions = pipeline.predict_metadata([(labels[item_id], score) for _, item_id, score in neighbours])
    return {
        field: {"value": p.value, "confidence": round(float(p.confidence), 3)}
        for field, p in predictions.items()
        if p is not None and p.value
    }


def search_side(image: SubmissionImage) -> str | None:
    """The side to search: the predicted one, or None (both sides) when the pipeline could not tell."""
    return image.side if image.side in (Side.OBVERSE, Side.REVERSE) else None


def queries_of(images: list[SubmissionImage]) -> list[tuple]:
    """[(position, side, (T, dim) vectors, T correction angles, T score bonuses)] to search for each photo.

    Rotation search (the upright estimate is the largest loss of recall, docs/ml-notes.md): each photo
    is searched at the turns the worker stored; turn 0 is its embedding at the estimated angle. A
    photo stored without turns is searched by its one embedding.
    """
    queries = [(image.position, search_side(image), *_image_turns(image)) for image in images]
    if len(images) == 2 and images[0].side == images[1].side:
        queries = [(query[0], None, *query[2:]) for query in queries]  # sides unsure: search both
    return queries


def _image_turns(image: SubmissionImage) -> tuple[np.ndarray, list[float], list[float]]:
    if image.turn_vectors and image.turns.get("angles"):
        angles = [float(a) for a in image.turns["angles"]]
        vectors = np.frombuffer(bytes(image.turn_vectors), dtype=np.float32).reshape(len(angles), -1)
        return vectors, angles, [float(b) for b in image.turns["bonus"]]
    vector = np.asarray(image.embedding, dtype=np.float32)
    return vector.reshape(1, -1), [float(image.angle or 0.0)], [0.0]


def embedded_with(images: Sequence[SubmissionImage]) -> tuple[str, str] | None:
    """The (name, version) of the model that embedded all these photos; None when unknown or not one."""
    models = {image.embedding_model for image in images}
    return models.pop() if len(models) == 1 else None


def index_has(model: tuple[str, str] | None) -> bool:
    """Whether the catalogue is indexed for this model version (a retraining prunes the previous one)."""
    if model is None:
        return False
    return ImageEmbedding.objects.filter(model_name=model[0], model_version=model[1]).exists()


def candidates_store(submission: Submission, images: list[SubmissionImage], model: tuple[str, str]) -> None:
    """Search with the submission's filters and store the result; a rerun replaces, never duplicates."""
    hits = candidates_search(queries=queries_of(images), model=model, filters=submission.filters)
    by_position = {image.position: image for image in images}
    submission.candidates.all().delete()
    Candidate.objects.bulk_create(
        Candidate(
            submission=submission,
            item_id=hit.item_id,
            rank=rank,
            score=round(hit.score, 4),
            agreement=round(hit.agreement, 4),
            side_scores=hit.side_scores,
            matched_image_id=hit.image_id,
            query_image=by_position[hit.query_position],
            # Catalogue photos are upright; turning one back by the angle that aligned the query with it
            # (rotation search), else by the estimator's angle, shows it as the query was photographed.
            rotation=-(hit.angle if hit.angle is not None else (by_position[hit.query_position].angle or 0.0)),
        )
        for rank, hit in enumerate(hits, start=1)
    )
