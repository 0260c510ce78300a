"""Fitting and measuring each learned part from training's one pass over the catalogue.

``mlcore.train.train_all`` reads the catalogue once (``mlcore.train_reading``), then fits, in this
order: the side network, the orientation estimator, the held-out folds of catalogue types, the
embedding's learned projection (kept only when it raises recall@1 on types it was not fitted on)
and the metadata vote's calibration. The steps share one random generator, so their order is part
of what a seed means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mlcore.dataset import CatalogueRecord
from mlcore.side import SideNet, side_net_fit
from mlcore.train_feedback import FeedbackPairs
from mlcore.train_reading import CatalogueReading

TYPE_FOLDS = 5


@dataclass
class TrainingRows:
    """The images the pass read, one row each: side, specimen, type and labels, clean and query-like descriptors."""

    sides: np.ndarray
    groups: np.ndarray  # the specimen (record id)
    types: list[str]  # the catalogue type, or the record itself when it has none
    labels: list[dict[str, str]]
    clean: np.ndarray
    upright: np.ndarray

    @classmethod
    def of(cls, records: Sequence[CatalogueRecord], reading: CatalogueReading) -> TrainingRows:
        return cls(
            sides=np.array([side for _, side in reading.rows]),
            groups=np.array([records[index].record_id for index, _ in reading.rows]),
            types=[records[index].type_id or f"record:{records[index].record_id}" for index, _ in reading.rows],
            labels=[records[index].labels for index, _ in reading.rows],
            clean=np.concatenate(reading.clean_parts),
            upright=np.concatenate(reading.upright_parts),
        )


# --- Measures ------------------------------------------------------------------------------------


def _neighbours(
    catalogue: np.ndarray,
    catalogue_sides: np.ndarray,
    catalogue_folds: np.ndarray,
    catalogue_labels: list[dict[str, str]],
    query: np.ndarray,
    side: str,
    fold: int,
    k: int,
) -> list[tuple[dict[str, str], float]]:
    """The k most similar catalogue images of the same side from other folds (their types unseen)."""
    similarities = catalogue @ query
    allowed = (catalogue_sides == side) & (catalogue_folds != fold)
    similarities = np.where(allowed, similarities, -np.inf)
    top = np.argpartition(-similarities, min(k, len(similarities) - 1))[:k]
    top = [i for i in top[np.argsort(-similarities[top])] if np.isfinite(similarities[i])]
    return [(catalogue_labels[i], float(similarities[i])) for i in top]


def _hits_at_1(
    catalogue: np.ndarray,
    queries: np.ndarray,
    sides: np.ndarray,
    types: list[str],
    records: list[str],
    rows: np.ndarray,
) -> tuple[int, int]:
    """(hits, counted): query ``rows`` whose nearest catalogue image (same side, another specimen) has their type.

    Only queries whose type has another specimen count (the others cannot be answered).
    """
    types_arr, records_arr = np.array(types), np.array(records)
    hits, counted = 0, 0
    for i in rows:
        allowed = (sides == sides[i]) & (records_arr != records_arr[i])
        if not (allowed & (types_arr == types_arr[i])).any():
            continue
        similarities = np.where(allowed, catalogue @ queries[i], -np.inf)
        hits += int(types_arr[int(np.argmax(similarities))] == types_arr[i])
        counted += 1
    return hits, counted


def _feedback_hits_at_1(
    catalogue: np.ndarray,
    sides: np.ndarray,
    types: list[str],
    records: list[str],
    feedback: FeedbackPairs,
    vectors: np.ndarray,
    rows,
) -> tuple[int, int]:
    """(hits, counted): reviewed photos ``rows`` whose nearest catalogue image of their side has the accepted type.

    The catalogue record made from the photo itself (an approved identification) is left out.
    """
    types_arr, records_arr = np.array(types), np.array(records)
    hits, counted = 0, 0
    for i in rows:
        allowed = (sides == feedback.sides[i]) & (records_arr != feedback.own[i])
        if not (allowed & (types_arr == feedback.types[i])).any():
            continue
        similarities = np.where(allowed, catalogue @ vectors[i], -np.inf)
        hits += int(types_arr[int(np.argmax(similarities))] == feedback.types[i])
        counted += 1
    return hits, counted


def _rate(hits: int, counted: int) -> float | None:
    return round(hits / counted, 4) if counted else None


# --- The parts, in training order ----------------------------------------------------------------


def fit_side(
    reading: CatalogueReading, rows: TrainingRows, embedder, *, seed: int, say: Callable[[str], None]
) -> tuple[SideNet, dict[str, Any]]:
    """The side network fine-tuned on clean, query-like upright and turned copies (``side_net_fit``).

    Calibrated and measured on specimens held out of the fine-tuning, also on the phone-like photos
    of some coins (cut with their true masks). Consumes the reading's maps and phone photos (memory).
    """
    say("training the side classifier")
    obverse = (rows.sides == "obverse").astype(int)
    extra = {}
    phone = reading.phone
    if phone["row"]:
        phone_rows = np.array(phone["row"])
        for name in ("turned", "upright"):
            extra[f"phone_{name}"] = (
                embedder.read(phone[name], stems=True).stems,
                obverse[phone_rows],
                rows.groups[phone_rows],
            )
    phone.clear()
    kinds = list(reading.stems)
    stems = torch.cat([torch.cat(reading.stems[kind]) for kind in kinds])
    reading.stems.clear()
    return side_net_fit(
        stems,
        np.concatenate([obverse] * len(kinds)),
        np.concatenate([rows.groups] * len(kinds)),
        features=embedder.backbone.module,
        seed=seed,
        kinds=np.repeat(kinds, len(rows.sides)),
        extra=extra,
        progress=say,
    )


def fit_orientation(
    reading: CatalogueReading, embedder, rng: np.random.Generator, *, say: Callable[[str], None]
) -> tuple[Any, dict[str, Any]] | None:
    """(estimator, metrics) from the query-like copies' layout features and known angles; None without copies.

    Consumes the reading's layout features (memory).
    """
    fitted = None
    if reading.layout_rows:
        from mlcore.orientation import OrientationEstimator

        say(f"training the orientation estimator on {len(reading.layout_rows)} turned copies")
        fitted = OrientationEstimator.fit_features(
            np.concatenate(reading.layout_parts),
            reading.layout_angles,
            reading.layout_rows,
            embedder=embedder,
            rng=rng,
        )
    reading.layout_parts.clear()
    return fitted


def type_folds(types: list[str], rng: np.random.Generator) -> dict[str, int]:
    """{type: fold} in ``TYPE_FOLDS`` seeded folds: held-out types for the projection and metadata calibration."""
    unique_types = sorted(set(types))
    shuffled = rng.permutation(len(unique_types))
    return {unique_types[i]: rank % TYPE_FOLDS for rank, i in enumerate(shuffled)}


def _projection_fit(
    anchors: np.ndarray,
    positives: np.ndarray,
    fb: FeedbackPairs | None,
    fb_folds: np.ndarray | None,
    *,
    dim: int,
    held_out_fold: int | None = None,
):
    """The learned whitening from synthetic pairs plus the reviewed photos' pairs (minus a held-out fold)."""
    from mlcore.embed import projection_fit

    if fb is None or not len(fb.query):
        return projection_fit(anchors, positives, dim=dim)
    keep = np.ones(len(fb.query), dtype=bool)
    keep_negative = np.ones(len(fb.negative_query), dtype=bool)
    if held_out_fold is not None:
        keep = fb_folds[fb.example] != held_out_fold
        keep_negative = fb_folds[fb.negative_example] != held_out_fold
    if not keep.any():
        return projection_fit(anchors, positives, dim=dim)
    negatives = (fb.negative_query[keep_negative], fb.negative[keep_negative]) if keep_negative.any() else None
    return projection_fit(
        np.concatenate([anchors, fb.positive[keep]]),
        np.concatenate([positives, fb.query[keep]]),
        weights=np.concatenate([np.ones(len(anchors)), fb.weight[keep]]),
        negatives=negatives,
        dim=dim,
    )


def _held_out_hits(
    rows: TrainingRows,
    vectors_of: Callable[[np.ndarray], np.ndarray],
    folds: np.ndarray,
    fb: FeedbackPairs | None,
    fb_folds: np.ndarray,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(hits, counted) on fold 0 of the query-like copies, then of the reviewed photos.

    ``vectors_of`` turns descriptors into the vectors compared (the plain embedding, or a trial projection).
    """
    catalogue = vectors_of(rows.clean)
    test_rows = np.flatnonzero(folds == 0)
    hits = _hits_at_1(catalogue, vectors_of(rows.upright), rows.sides, rows.types, list(rows.groups), test_rows)
    fb_hits = (0, 0)
    if fb is not None and fb.used:
        fb_test = np.flatnonzero(fb_folds == 0)
        fb_hits = _feedback_hits_at_1(
            catalogue, rows.sides, rows.types, list(rows.groups), fb, vectors_of(fb.queries), fb_test
        )
    return hits, fb_hits


def fit_projection(
    rows: TrainingRows,
    folds: np.ndarray,
    fb: FeedbackPairs | None,
    fb_folds: np.ndarray,
    embedder,
    *,
    mode: str,
    max_dim: int,
    min_dim: int,
    say: Callable[[str], None],
) -> tuple[Any, dict[str, Any]]:
    """(learned whitening or None, metrics): fitted on all but fold 0 first, kept when it raises recall@1 there.

    Recall@1 on fold 0's types (unseen by the trial fit) counts query-like copies and held-out reviewed
    photos together. ``mode``: ``auto`` keeps a projection that raises it, ``always`` any that could be
    fitted, ``off`` fits none; ``max_dim``/``min_dim`` bound its width (half the fitting pairs at most).
    """
    say("measuring the learned embedding projection")
    fit_rows = np.flatnonzero(folds != 0)
    plain_hits, fb_plain = _held_out_hits(rows, embedder.embed_descriptors, folds, fb, fb_folds)
    fb_projected = (0, 0)
    learned = None
    projected_hits = None
    fb_fit = np.flatnonzero(fb_folds[fb.example] != 0) if fb is not None else fb_folds
    dim = min(max_dim, (len(fit_rows) + len(fb_fit)) // 2)
    if mode != "off" and dim >= min_dim:
        trial = _projection_fit(rows.clean[fit_rows], rows.upright[fit_rows], fb, fb_folds, dim=dim, held_out_fold=0)
        projected_hits, fb_projected = _held_out_hits(rows, trial.apply, folds, fb, fb_folds)
        plain_all = _rate(plain_hits[0] + fb_plain[0], plain_hits[1] + fb_plain[1])
        projected_all = _rate(projected_hits[0] + fb_projected[0], projected_hits[1] + fb_projected[1])
        raises = plain_all is not None and projected_all is not None and projected_all > plain_all + 0.005
        if mode == "always" or raises:
            learned = _projection_fit(rows.clean, rows.upright, fb, None, dim=dim)
    metrics = {
        "recall_at_1_plain": _rate(*plain_hits),
        "recall_at_1_projected": _rate(*projected_hits) if projected_hits else None,
        "projection_used": learned is not None,
        "projection_dim": dim if learned is not None else None,
    }
    if fb is not None:
        metrics["feedback_recall_at_1_plain"] = _rate(*fb_plain)
        metrics["feedback_recall_at_1_projected"] = _rate(*fb_projected)
        metrics["feedback_held_out"] = fb_plain[1]
    return learned, metrics


def calibrate_metadata(
    rows: TrainingRows,
    folds: np.ndarray,
    fb: FeedbackPairs | None,
    fb_folds: np.ndarray,
    embedder,
    rng: np.random.Generator,
    *,
    say: Callable[[str], None],
) -> tuple[Any, dict[str, Any]]:
    """(model, metrics) of the metadata vote, calibrated on held-out types with the embeddings the index will hold.

    ``embedder`` is the trained version's (with its projection, when one was kept).
    """
    from mlcore.metadata import metadata_fields, metadata_fit

    say("calibrating metadata votes on held-out types")
    catalogue = embedder.embed_descriptors(rows.clean)
    queries = embedder.embed_descriptors(rows.upright)
    sides, labels = rows.sides, rows.labels
    samples = [
        (_neighbours(catalogue, sides, folds, labels, queries[i], sides[i], folds[i], k=20), labels[i])
        for i in rng.permutation(len(rows.sides))
    ]
    if fb is not None and fb.used:
        # Reviewed photos are real queries with known answers: calibration samples too.
        fb_vectors = embedder.embed_descriptors(fb.queries)
        for i in range(fb.used):
            neighbours = _neighbours(catalogue, sides, folds, labels, fb_vectors[i], fb.sides[i], fb_folds[i], k=20)
            samples.append((neighbours, fb.labels[i]))
    return metadata_fit(samples, fields=metadata_fields(labels))
