"""Searching the catalogue for a submission's photos and storing the candidates.

The ranking is mlcore's (``mlcore.retrieval.rank_items``, the one the command line and the
evaluations use); ``candidates_search`` gives it the pgvector index (``nearest_images``) and the
items' labels. The queries are the vectors the worker stored with each photo, so a search never
runs a model and can run in a web request (narrowing the candidates). A photo is searched in the index of the model
version that embedded it (``SubmissionImage.embedding_model``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from django.conf import settings
from django.db import transaction
from pgvector.django import CosineDistance

from collection.filtersets import dates_overlap
from collection.models import CANDIDATE_FILTER_KINDS, ImageEmbedding, Item, Side
from collection.search import item_legend_match, legend_pattern
from identification.models import Candidate, Submission, SubmissionImage
from mlcore.retrieval import CANDIDATES, METADATA_NEIGHBOURS, NEIGHBOUR_IMAGES, QueryPhoto, RankedItem, rank_items

logger = logging.getLogger(__name__)


# Everything a sender may narrow the candidates by, in the order the page and the API offer it.
NARROWING_FIELDS: tuple[str, ...] = (*CANDIDATE_FILTER_KINDS, "date_from", "date_to", "legend")


def filters_clean(filters: dict) -> dict:
    """What a sender may narrow the candidates by, as stored on the submission: a concept slug per kind
    (``CANDIDATE_FILTER_KINDS``), a date range (years, negative BC) and a legend hint (the letters they can read).

    Unknown keys and blank values are dropped; years are whole numbers.
    """
    clean: dict = {kind: str(filters[kind]) for kind in CANDIDATE_FILTER_KINDS if filters.get(kind)}
    for key in ("date_from", "date_to"):
        if filters.get(key) not in (None, ""):
            clean[key] = int(filters[key])
    if legend_pattern(str(filters.get("legend") or "")):
        clean["legend"] = " ".join(str(filters["legend"]).split())[:200]
    return clean


def nearest_images(
    *, vector, side: str | None, model: tuple[str, str], filters: dict | None = None, limit: int
) -> list[tuple[int, int, float]]:
    """[(image_id, item_id, cosine similarity)] nearest first, from pgvector's HNSW index.

    Filters (side, metadata, dates, legend; ``filters_clean``) are applied inside the index scan;
    pgvector 0.8's iterative scan keeps reading the graph until enough rows pass them, so recall
    holds under selective filters.
    """
    filters = filters_clean(filters or {})
    queryset = ImageEmbedding.objects.filter(model_name=model[0], model_version=model[1], item__isnull=False)
    if side:
        queryset = queryset.filter(side=side)
    for kind in CANDIDATE_FILTER_KINDS:
        if kind in filters:
            queryset = queryset.filter(item__concepts__kind=kind, item__concepts__slug=filters[kind])
    if "date_from" in filters or "date_to" in filters:
        queryset = queryset.filter(
            dates_overlap(date_from=filters.get("date_from"), date_to=filters.get("date_to"), prefix="item__")
        )
    if "legend" in filters:
        queryset = queryset.filter(item__in=item_legend_match(Item.objects.all(), hint=filters["legend"]).values("pk"))
    queryset = queryset.annotate(distance=CosineDistance("vector", vector)).order_by("distance")
    with transaction.atomic(), _hnsw_settings(pin_index=not filters):
        rows = list(queryset.values_list("image_id", "item_id", "distance")[:limit])
    return sorted(((image_id, item_id, 1.0 - float(d)) for image_id, item_id, d in rows), key=lambda r: -r[2])


class _hnsw_settings:
    """SET LOCAL the HNSW search parameters for the current transaction.

    ``pin_index``: an unfiltered search of a large index (more rows than
    ``OBVERSE_HNSW_PIN_ABOVE``, by the planner's own estimate) always reads the HNSW index. Around
    100,000 images the planner's costs for the index and for an exact scan and sort are close, and
    it was seen choosing the scan (250–350 ms instead of 14–30 ms; docs/scaling.md). With sorting
    off, the only plan left is the one that needs no sort: the HNSW index (turning sequential scans
    off is not enough: a btree on the side, then a sort, is exact and as slow). A small index is
    left to the planner: an exact scan is cheap there and exact. A filtered search keeps the
    planner's choice: a selective filter is best answered exactly from the few rows it leaves.
    """

    def __init__(self, *, pin_index: bool = False) -> None:
        self.pin_index = pin_index

    def __enter__(self):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL hnsw.ef_search = %s", [settings.OBVERSE_HNSW_EF_SEARCH])
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            if self.pin_index:
                table = ImageEmbedding._meta.db_table
                cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [table])
                row = cursor.fetchone()
                if row and row[0] > settings.OBVERSE_HNSW_PIN_ABOVE:
                    cursor.execute("SET LOCAL enable_sort = off")  # the one plan that needs no sort: HNSW
        return self

    def __exit__(self, *exc):
        return False


def candidates_search(
    *, queries: Sequence[tuple], model: tuple[str, str], filters=None, k: int = CANDIDATES
) -> list[RankedItem]:
    """The k best items for one or two query photos [(position, side, vector[, angles[, bonus]])].

    A photo may come as (T, dim) vectors, its cut-out turned T ways (the rotation search), with
    ``angles`` the correction angle of each turn and ``bonus`` a score added to that turn's hits;
    ``mlcore.retrieval.rank_items`` says how they are ranked. ``filters`` narrow the index scan.
    """
    photos = []
    for query in queries:
        vectors = np.atleast_2d(np.asarray(query[2], dtype=np.float32))
        angles = list(query[3]) if len(query) > 3 else [None] * len(vectors)
        photos.append(QueryPhoto(query[0], query[1], vectors, angles, list(query[4]) if len(query) > 4 else None))

    def search(vector, side):
        return nearest_images(vector=vector, side=side, model=model, filters=filters, limit=NEIGHBOUR_IMAGES)

    return rank_items(photos, search, item_labels, k=k)


def item_labels(item_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    """{item id: {concept kind: label}} of these items (the first label of a kind), in one query."""
    labels: dict[int, dict[str, str]] = {i: {} for i in item_ids}
    through = Item.concepts.through.objects.filter(item_id__in=item_ids).select_related("concept")
    for row in through:
        labels[row.item_id].setdefault(row.concept.kind, row.concept.label)
    return labels


def metadata_predict(pipeline, *, vector, side: str | None, model: tuple[str, str]) -> dict:
    """{field: {value, confidence, calibrated}} for a photo: what its nearest catalogue images say (worker only).

    ``calibrated`` is false while no trained version calibrates the confidences (raw vote shares):
    the result page does not show such a prediction as a fact (``identification.results``).
    """
    neighbours = nearest_images(vector=vector, side=side, model=model, limit=METADATA_NEIGHBOURS)
    labels = item_labels([item_id for _, item_id, _ in neighbours])
    predictions = pipeline.predict_metadata([(labels[item_id], score) for _, item_id, score in neighbours])
    calibrated = bool(pipeline.metadata_calibrated())
    return {
        field: {"value": p.value, "confidence": round(float(p.confidence), 3), "calibrated": calibrated}
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
            query_image=by_position[hit.position],
            # Catalogue photos are upright; turning one back by the angle that aligned the query with it
            # (rotation search), else by the estimator's angle, shows it as the query was photographed.
            rotation=-(hit.angle if hit.angle is not None else (by_position[hit.position].angle or 0.0)),
        )
        for rank, hit in enumerate(hits, start=1)
    )
