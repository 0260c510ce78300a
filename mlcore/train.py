"""Train every learned part of the pipeline from the catalogue's own labelled photos, as a new version.

``python -m mlcore.train --dataset DIR [--models-dir DIR] [--seed S] [--limit N] [--exclude-records FILE]``
trains from a folder in the ans-roman layout; ``train_all`` does the same for records built from
the database (``manage.py train_models``). Parts: the side classifier, the orientation estimator
(``mlcore.orientation``, when present), the embedder's learned part (when it has one) and the
metadata vote's calibration. Everything lands in ``trained/<version>/`` with ``metrics.json``, and
the version becomes active; ``--list``, ``--activate VERSION`` and ``--rollback`` manage versions.

Catalogue photos are studio shots on a plain light background, so training cuts them out with a
fast threshold mask (framed like the pipeline's cut-outs) rather than running the saliency model
on thousands of images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mlcore.cutout import catalogue_cutout, cutout_with_mask
from mlcore.dataset import CatalogueRecord, load_ans_layout
from mlcore.modelfiles import models_dir as default_models_dir
from mlcore.pipeline import TURN_RESIDUAL
from mlcore.side import FILENAME as SIDE_FILENAME
from mlcore.side import NEUTRAL, SIDES, SideClassifier, augment_like_query, side_net_fit
from mlcore.versions import (
    list_versions,
    version_abort,
    version_activate,
    version_commit,
    version_rollback,
    version_start,
)

logger = logging.getLogger(__name__)

CUTOUT_SIZE = 384
BATCH = 32
# Images whose two query-like copies train the orientation estimator (their features come free with
# the descriptors' pass); bounds its memory (5,120 numbers a copy) and fitting time on big catalogues.
ORIENTATION_MAX_IMAGES = 6000
PHONE_SAMPLES = 150  # phone-like photos made to score the side classifier on the real query path
PROJECTION_DIM = 512
# Small catalogues fit a smaller projection (half the fitting pairs) rather than none, down to this;
# the held-out recall check still decides whether it is kept.
MIN_PROJECTION_DIM = 64
# A reviewed photo's pairs together weigh as much as this many synthetic pairs in the whitening:
# they show the real gap (the pipeline's own cut-out and rotation, a real photo) that copies only imitate.
FEEDBACK_WEIGHT = 4.0
FEEDBACK_MAX_SPECIMENS = 4  # catalogue specimens of the accepted item paired with one reviewed photo
FEEDBACK_MAX_NEGATIVES = 12  # hard-negative catalogue specimens per reviewed photo
TYPE_FOLDS = 5


@dataclass
class TrainingReport:
    """What a training run produced: the version, where it is, its metrics and what it skipped."""

    version: str
    path: Path
    records: int
    images: int
    seconds: float
    activated: bool
    parts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    feedback_pairs: int = 0  # matching pairs (reviewed photo, accepted item's specimen) used

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


@dataclass
class FeedbackExample:
    """One reviewed identification, as training signal: a query photo and what reviewers decided.

    ``query`` is the pipeline's upright cut-out of the photo (a PIL image, or the path of the file
    the identification stored), ``side`` its side (anything else: the closer side of the accepted
    item), ``positives`` catalogue specimens of the accepted item and ``negatives`` specimens of
    the look-alike items ranked above it or rejected (hard negatives). ``label`` names the source
    (e.g. the submission image) in logs. ``own_record_id``: a catalogue record made from this very
    photo (an approved identification becomes a specimen), never its own match when it is scored.
    """

    query: Image.Image | Path | str
    side: str
    positives: Sequence[CatalogueRecord]
    negatives: Sequence[CatalogueRecord] = ()
    label: str = ""
    own_record_id: str = ""


@dataclass
class FeedbackPairs:
    """Descriptor pairs made from reviewed examples: what training actually uses of them.

    Matching pairs (``query``/``positive``, weighted) join the whitening's matching pairs;
    non-matching pairs (``negative_query``/``negative``) its second, supervised step.
    ``example``/``negative_example`` say which usable example (row of ``queries``) each pair came from.
    """

    query: np.ndarray
    positive: np.ndarray
    weight: np.ndarray
    example: np.ndarray
    negative_query: np.ndarray
    negative: np.ndarray
    negative_example: np.ndarray
    queries: np.ndarray  # one descriptor per usable example
    types: list[str]
    sides: list[str]
    labels: list[dict[str, str]]
    given: int
    skipped: int
    own: list[str] = field(default_factory=list)  # per usable example: the record made from the photo, if any

    @property
    def used(self) -> int:
        return len(self.queries)

    def summary(self) -> dict[str, Any]:
        return {
            "examples": self.given,
            "used": self.used,
            "skipped": self.skipped,
            "positive_pairs": len(self.query),
            "hard_negative_pairs": len(self.negative_query),
        }


def _open_query(query: Image.Image | Path | str) -> Image.Image:
    """An upright cut-out as RGB on neutral grey (a transparent cut-out is laid on neutral)."""
    if isinstance(query, Image.Image):
        image = query
    else:
        with Image.open(query) as raw:
            raw.load()
            image = raw.copy()
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*NEUTRAL, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def feedback_pairs(
    examples: Sequence[FeedbackExample],
    *,
    describe: Callable[[list[Image.Image]], np.ndarray],
    catalogue_descriptor: Callable[[CatalogueRecord, str], np.ndarray | None],
    weight: float = FEEDBACK_WEIGHT,
    max_specimens: int = FEEDBACK_MAX_SPECIMENS,
    max_negatives: int = FEEDBACK_MAX_NEGATIVES,
) -> FeedbackPairs:
    """Turn reviewed examples into descriptor pairs (deterministic: no randomness, input order kept).

    ``describe`` gives plain descriptors of upright cut-outs; ``catalogue_descriptor`` the clean
    descriptor of a record's image of one side (None when it has none). An example whose query
    cannot be read or whose accepted item has no catalogue image is skipped (counted). The pairs of
    one example share ``weight`` (so an item with many specimens does not outweigh one with few).
    """
    dim = None
    usable: list[tuple[FeedbackExample, np.ndarray]] = []
    skipped = 0
    for start in range(0, len(examples), BATCH):
        batch, images = [], []
        for example in examples[start : start + BATCH]:
            try:
                images.append(_open_query(example.query))
                batch.append(example)
            except (OSError, ValueError) as exc:
                logger.warning("feedback %s: query unreadable: %s", example.label or example.query, exc)
                skipped += 1
        if images:
            usable += list(zip(batch, describe(images), strict=True))
    pairs: dict[str, list] = {name: [] for name in ("q", "p", "w", "e", "nq", "n", "ne")}
    queries, types, sides, labels, own = [], [], [], [], []
    for example, query in usable:
        dim = len(query)
        positives = sorted(
            (r for r in example.positives if r.record_id != example.own_record_id), key=lambda r: r.record_id
        )
        side = example.side
        if side not in SIDES:
            # Side unknown: the side of the accepted item this photo is closer to.
            best = (-np.inf, None)
            for candidate in SIDES:
                for record in positives:
                    descriptor = catalogue_descriptor(record, candidate)
                    if descriptor is not None and float(descriptor @ query) > best[0]:
                        best = (float(descriptor @ query), candidate)
            side = best[1] or ""
        matched = [d for d in (catalogue_descriptor(r, side) for r in positives) if d is not None][:max_specimens]
        if not matched:
            skipped += 1
            continue
        row = len(queries)
        queries.append(query)
        types.append(positives[0].type_id or f"record:{positives[0].record_id}")
        sides.append(side)
        labels.append(dict(positives[0].labels))
        own.append(example.own_record_id)
        for descriptor in matched:
            pairs["q"].append(query)
            pairs["p"].append(descriptor)
            pairs["w"].append(weight / len(matched))
            pairs["e"].append(row)
        wrong = [catalogue_descriptor(r, side) for r in example.negatives]
        for descriptor in [d for d in wrong if d is not None][:max_negatives]:
            pairs["nq"].append(query)
            pairs["n"].append(descriptor)
            pairs["ne"].append(row)

    def stack(rows: list) -> np.ndarray:
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), dim or 0)

    return FeedbackPairs(
        query=stack(pairs["q"]),
        positive=stack(pairs["p"]),
        weight=np.asarray(pairs["w"], dtype=np.float64),
        example=np.asarray(pairs["e"], dtype=int),
        negative_query=stack(pairs["nq"]),
        negative=stack(pairs["n"]),
        negative_example=np.asarray(pairs["ne"], dtype=int),
        queries=stack(queries),
        types=types,
        sides=sides,
        labels=labels,
        given=len(examples),
        skipped=skipped,
        own=own,
    )


# --- Preparing catalogue images ----------------------------------------------------------------


def phone_cutouts(image: Image.Image, rng: np.random.Generator, *, size: int = CUTOUT_SIZE):
    """(turned, upright) cut-outs of a phone-like degraded copy (``mlcore.degrade``), cut with its true mask."""
    from mlcore.degrade import degrade_with_truth

    photo = degrade_with_truth(image, rng)
    turned = cutout_with_mask(photo.image, photo.mask, size=size)
    upright = turned.rotate(-photo.angle, resample=Image.Resampling.BILINEAR, fillcolor=NEUTRAL)
    return turned, upright


# --- Training ---------------------------------------------------------------------------------


def current_recipes(models_dir: str | Path) -> dict[str, str]:
    """{kind: recipe} the code computes features with now; a trained version must match every one.

    Recorded in each version's ``version.json`` (``<kind>_recipe``); ``mlcore.versions.stale_kind``
    compares. Nothing is loaded.
    """
    from mlcore.embed import Embedder
    from mlcore.orientation import OrientationEstimator

    embedder = Embedder(models_dir, use_trained=False)
    orientation = OrientationEstimator(models_dir, embedder=embedder)
    side = SideClassifier(models_dir, embedder=embedder)
    return {"embedding": embedder.base_version, "orientation": orientation.recipe, "side": side.recipe}


def _fingerprint(records: Sequence[CatalogueRecord], seed: int, feedback: Sequence[FeedbackExample] = ()) -> str:
    digest = hashlib.sha256(f"seed={seed}".encode())
    for record in records:
        digest.update(f"{record.record_id}|{record.type_id}|{sorted(record.images)}".encode())
    for example in feedback:
        positives = sorted(r.record_id for r in example.positives)
        negatives = sorted(r.record_id for r in example.negatives)
        digest.update(f"feedback|{example.label}|{example.side}|{positives}|{negatives}".encode())
    return digest.hexdigest()


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


def _recall_at_1(
    catalogue: np.ndarray,
    queries: np.ndarray,
    sides: np.ndarray,
    types: list[str],
    records: list[str],
    rows: np.ndarray,
) -> float | None:
    """Share of query ``rows`` whose nearest catalogue image (same side, another specimen) has their type."""
    hits, counted = _hits_at_1(catalogue, queries, sides, types, records, rows)
    return round(hits / counted, 4) if counted else None


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


def train_all(
    records: Sequence[CatalogueRecord],
    *,
    models_dir: str | Path,
    seed: int = 0,
    exclude: Iterable[str] = frozenset(),
    progress: Callable[[str], None] | None = None,
    activate: bool = True,
    phone_samples: int = PHONE_SAMPLES,
    orientation_images: int = ORIENTATION_MAX_IMAGES,
    feedback: Sequence[FeedbackExample] | None = None,
    feedback_weight: float = FEEDBACK_WEIGHT,
    projection: str = "auto",
) -> TrainingReport:
    """Train every learned part from ``records`` (minus ``exclude`` record ids) into a new version.

    Seeded: the same records, feedback and seed give the same weights. Raises ValueError when the
    records cannot train a side classifier (fewer than two specimens or one side only).
    ``phone_samples`` catalogue images are also turned into phone-like photos (``mlcore.degrade``)
    to measure the side classifier on the real query path; ``orientation_images`` bounds the
    images whose copies train the orientation estimator (evenly spread; 0: none).

    ``feedback``: reviewed identifications (``FeedbackExample``). Each reviewed photo paired with
    specimens of its accepted item joins the whitening's matching pairs (together weighing
    ``feedback_weight`` synthetic pairs), its hard negatives the whitening's second step, and the
    photo a calibration sample of the metadata vote. The metrics say how many pairs were used.
    No feedback (None or empty) trains exactly what it trained before.

    ``projection``: ``auto`` keeps the learned whitening only when it raises held-out recall@1
    (synthetic query-like copies and held-out reviewed photos together), ``always`` keeps it
    whenever there are enough pairs to fit one, ``off`` never fits one.
    """
    if projection not in ("auto", "always", "off"):
        raise ValueError(f"projection must be auto, always or off, not {projection!r}")
    from mlcore.embed import FILENAME as EMBED_FILENAME
    from mlcore.embed import Embedder
    from mlcore.metadata import FILENAME as METADATA_FILENAME
    from mlcore.metadata import metadata_fields, metadata_fit

    started = time.monotonic()
    models_dir = Path(models_dir)
    say = progress or (lambda message: logger.info("%s", message))
    excluded = set(exclude)
    records = sorted((r for r in records if r.record_id not in excluded and r.images), key=lambda r: r.record_id)
    if len(records) < 2:
        raise ValueError(f"Training needs at least 2 specimens with images, got {len(records)}")
    rng = np.random.default_rng(seed)
    # The plain recipe (no learned projection) describes images for every part trained here.
    embedder = Embedder(models_dir, use_trained=False)

    feedback = list(feedback or ())
    version, staging = version_start(models_dir, fingerprint=_fingerprint(records, seed, feedback))
    try:
        # One pass over the images. Per image: descriptors of the clean cut-out, of a query-like
        # copy (upright but for what the rotation search leaves) and of that copy turned by a random
        # angle; the two copies' layout features, with their known angles, train the orientation
        # estimator (same pass). Images are not kept in memory.
        rows: list[tuple[int, str]] = []  # (record index, side)
        clean_parts, upright_parts = [], []
        # Block-13 maps of the same three images, the side network's input (float16: ~50 kB each).
        stem_parts: dict[str, list[torch.Tensor]] = {"clean": [], "query_upright": [], "query_turned": []}
        layout_parts: list[np.ndarray] = []
        layout_angles: list[float] = []
        layout_rows: list[int] = []
        phone: dict[str, list] = {"turned": [], "upright": [], "row": []}
        total = sum(len(r.images) for r in records)
        orientation_every = max(1, total // max(1, orientation_images)) if orientation_images else total + 1
        phone_every = max(1, total // max(1, phone_samples)) if phone_samples else 0
        pending: list[tuple[int, str, Image.Image]] = []

        def flush() -> None:
            if not pending:
                return
            clean = [image for _, _, image in pending]
            residuals = rng.uniform(-TURN_RESIDUAL, TURN_RESIDUAL, len(clean))
            turns = rng.uniform(0, 360, len(clean))
            upright = [
                augment_like_query(image, rng, angle=float(residual))
                for image, residual in zip(clean, residuals, strict=True)
            ]
            turned = [
                image.rotate(float(turn), resample=Image.Resampling.BILINEAR, fillcolor=NEUTRAL)
                for image, turn in zip(upright, turns, strict=True)
            ]
            reading = embedder.read(clean, stems=True)
            clean_parts.append(reading.descriptors)
            stem_parts["clean"].append(reading.stems)
            first = len(rows)
            wanted = [i for i in range(len(pending)) if (first + i) % orientation_every == 0]
            copies_made = (
                ("query_upright", upright, residuals, upright_parts),
                ("query_turned", turned, residuals + turns, None),  # its descriptors serve nothing
            )
            for kind, copies, angles, parts in copies_made:
                reading = embedder.read(copies, layout=True, stems=True)
                if parts is not None:
                    parts.append(reading.descriptors)
                stem_parts[kind].append(reading.stems)
                layout = reading.layout
                layout_parts.append(layout[wanted])
                layout_angles.extend(float(angles[i]) for i in wanted)
                layout_rows.extend(first + i for i in wanted)
            rows.extend((index, side) for index, side, _ in pending)
            pending.clear()

        seen = 0
        for index, record in enumerate(records):
            for side, path in sorted(record.images.items()):
                if side not in SIDES:
                    continue
                try:
                    with Image.open(path) as raw:
                        raw.load()
                        cutout = catalogue_cutout(raw)
                        if phone_every and seen % phone_every == 0 and len(phone["row"]) < phone_samples:
                            turned, upright = phone_cutouts(raw, rng)
                            phone["turned"].append(turned)
                            phone["upright"].append(upright)
                            phone["row"].append(len(rows) + len(pending))
                except (OSError, ValueError) as exc:
                    logger.warning("skipping %s (%s): %s", record.record_id, path, exc)
                    continue
                pending.append((index, side, cutout))
                seen += 1
                if len(pending) >= BATCH:
                    flush()
                    say(f"features: {seen}/{total} images")
        flush()
        if not rows:
            raise ValueError("No readable catalogue images to train on")

        parts: dict[str, str] = {}
        recipes = {"embedding": embedder.base_version}  # the side and projection parts fit this recipe only
        metrics: dict[str, Any] = {"records": len(records), "images": len(rows), "seed": seed}
        skipped: dict[str, str] = {}
        sides = np.array([side for _, side in rows])
        groups = np.array([records[index].record_id for index, _ in rows])
        clean_d, upright_d = np.concatenate(clean_parts), np.concatenate(upright_parts)
        obverse = (sides == "obverse").astype(int)

        # Side network fine-tuned on clean, query-like upright and turned copies; calibrated and measured
        # on specimens held out of the fine-tuning, also on phone-like photos of some coins (true masks).
        say("training the side classifier")
        extra = {}
        if phone["row"]:
            phone_rows = np.array(phone["row"])
            for name in ("turned", "upright"):
                extra[f"phone_{name}"] = (
                    embedder.read(phone[name], stems=True).stems,
                    obverse[phone_rows],
                    groups[phone_rows],
                )
        phone.clear()
        kinds = list(stem_parts)
        stems = torch.cat([torch.cat(stem_parts[kind]) for kind in kinds])
        stem_parts.clear()
        side_net, side_metrics = side_net_fit(
            stems,
            np.concatenate([obverse] * len(kinds)),
            np.concatenate([groups] * len(kinds)),
            features=embedder.backbone.module,
            seed=seed,
            kinds=np.repeat(kinds, len(rows)),
            extra=extra,
            progress=say,
        )
        del stems, extra
        side = SideClassifier(models_dir, embedder=embedder)
        side_net.save(staging / SIDE_FILENAME)
        parts["side-classifier"] = SIDE_FILENAME
        metrics["side"] = side_metrics
        recipes["side"] = side.recipe

        # Orientation estimator: the query-like copies' layout features and their known angles.
        if layout_rows:
            from mlcore.orientation import OrientationEstimator

            say(f"training the orientation estimator on {len(layout_rows)} turned copies")
            estimator, orientation_metrics = OrientationEstimator.fit_features(
                np.concatenate(layout_parts), layout_angles, layout_rows, embedder=embedder, rng=rng
            )
            parts["orientation"] = estimator.save(staging).name
            metrics["orientation"] = orientation_metrics
            recipes["orientation"] = estimator.recipe
        else:
            skipped["orientation"] = "no images for it (orientation_images=0)"
        layout_parts.clear()

        # Held-out folds of catalogue types, for the embedding projection and metadata calibration.
        type_of = [records[index].type_id or f"record:{records[index].record_id}" for index, _ in rows]
        unique_types = sorted(set(type_of))
        shuffled = rng.permutation(len(unique_types))
        fold_of_type = {unique_types[i]: rank % TYPE_FOLDS for rank, i in enumerate(shuffled)}
        folds = np.array([fold_of_type[t] for t in type_of])

        # Reviewed identifications (feedback): descriptor pairs against the catalogue's clean images.
        fb = None
        fb_folds = np.zeros(0, dtype=int)  # the fold of each reviewed photo's accepted type (-1: not trained on)
        if feedback:
            say(f"describing {len(feedback)} reviewed photos")
            fb = _feedback_from(feedback, records, rows, clean_d, embedder, weight=feedback_weight)
            fb_folds = np.array([fold_of_type.get(t, -1) for t in fb.types], dtype=int)
            metrics["feedback"] = {**fb.summary(), "weight": feedback_weight}
            say(
                f"review signal: {fb.used} of {fb.given} reviewed photos used, {len(fb.query)} matching pairs, "
                f"{len(fb.negative_query)} hard-negative pairs"
            )

        # Embedding projection (learned whitening): kept only when it raises same-type recall@1 on
        # types it was not fitted on (of query-like copies and of held-out reviewed photos).
        say("measuring the learned embedding projection")
        fit_rows, test_rows = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
        catalogue_plain = embedder.embed_descriptors(clean_d)
        plain_hits = _hits_at_1(
            catalogue_plain, embedder.embed_descriptors(upright_d), sides, type_of, list(groups), test_rows
        )
        fb_plain = fb_projected = (0, 0)
        if fb is not None and fb.used:
            fb_test = np.flatnonzero(fb_folds == 0)
            fb_plain = _feedback_hits_at_1(
                catalogue_plain, sides, type_of, list(groups), fb, embedder.embed_descriptors(fb.queries), fb_test
            )
        learned = None
        projected_hits = None
        fb_fit = np.flatnonzero(fb_folds[fb.example] != 0) if fb is not None else fb_folds
        dim = min(PROJECTION_DIM, (len(fit_rows) + len(fb_fit)) // 2)
        if projection != "off" and dim >= MIN_PROJECTION_DIM:
            trial = _projection_fit(clean_d[fit_rows], upright_d[fit_rows], fb, fb_folds, dim=dim, held_out_fold=0)
            projected_hits = _hits_at_1(
                trial.apply(clean_d), trial.apply(upright_d), sides, type_of, list(groups), test_rows
            )
            if fb is not None and fb.used:
                fb_projected = _feedback_hits_at_1(
                    trial.apply(clean_d), sides, type_of, list(groups), fb, trial.apply(fb.queries), fb_test
                )
            plain_all = _rate(plain_hits[0] + fb_plain[0], plain_hits[1] + fb_plain[1])
            projected_all = _rate(projected_hits[0] + fb_projected[0], projected_hits[1] + fb_projected[1])
            raises = plain_all is not None and projected_all is not None and projected_all > plain_all + 0.005
            if projection == "always" or raises:
                learned = _projection_fit(clean_d, upright_d, fb, None, dim=dim)
        metrics["embedding"] = {
            "recall_at_1_plain": _rate(*plain_hits),
            "recall_at_1_projected": _rate(*projected_hits) if projected_hits else None,
            "projection_used": learned is not None,
            "projection_dim": dim if learned is not None else None,
        }
        if fb is not None:
            metrics["embedding"]["feedback_recall_at_1_plain"] = _rate(*fb_plain)
            metrics["embedding"]["feedback_recall_at_1_projected"] = _rate(*fb_projected)
            metrics["embedding"]["feedback_held_out"] = fb_plain[1]
        if learned is not None:
            learned.save(staging / EMBED_FILENAME)
            parts["embedding-projection"] = EMBED_FILENAME
            embedder = Embedder(models_dir, projection=learned)
        else:
            skipped["embedding-projection"] = "did not raise held-out recall (or too few images to fit)"

        # Metadata: calibrate the neighbour vote on held-out types, with the embeddings the index will hold.
        say("calibrating metadata votes on held-out types")
        catalogue = embedder.embed_descriptors(clean_d)
        queries = embedder.embed_descriptors(upright_d)
        labels_of = [records[index].labels for index, _ in rows]
        samples = [
            (_neighbours(catalogue, sides, folds, labels_of, queries[i], sides[i], folds[i], k=20), labels_of[i])
            for i in rng.permutation(len(rows))
        ]
        if fb is not None and fb.used:
            # Reviewed photos are real queries with known answers: calibration samples too.
            fb_vectors = embedder.embed_descriptors(fb.queries)
            for i in range(fb.used):
                neighbours = _neighbours(
                    catalogue, sides, folds, labels_of, fb_vectors[i], fb.sides[i], fb_folds[i], k=20
                )
                samples.append((neighbours, fb.labels[i]))
        metadata_model, metadata_metrics = metadata_fit(samples, fields=metadata_fields(labels_of))
        metadata_model.save(staging / METADATA_FILENAME)
        parts["metadata"] = METADATA_FILENAME
        metrics["metadata"] = metadata_metrics

        seconds = round(time.monotonic() - started, 1)
        metrics["seconds"] = seconds
        metrics["skipped"] = skipped
        info = {
            "seed": seed,
            "records": len(records),
            "images": len(rows),
            "excluded": len(excluded),
            **{f"{kind}_recipe": recipe for kind, recipe in recipes.items()},
        }
        if fb is not None:
            info["feedback_pairs"] = len(fb.query)
        committed = version_commit(models_dir, version, parts=parts, metrics=metrics, info=info, activate=activate)
    except BaseException:
        version_abort(models_dir, version)
        raise
    say(f"trained version {version} in {seconds:.0f} s")
    return TrainingReport(
        version=version,
        path=committed.path,
        records=len(records),
        images=len(rows),
        seconds=seconds,
        activated=activate,
        parts=parts,
        metrics=metrics,
        skipped=skipped,
        feedback_pairs=len(fb.query) if fb is not None else 0,
    )


def _feedback_from(
    feedback: Sequence[FeedbackExample],
    records: Sequence[CatalogueRecord],
    rows: list[tuple[int, str]],
    clean_d: np.ndarray,
    embedder,
    *,
    weight: float,
) -> FeedbackPairs:
    """Feedback pairs, reusing the clean descriptors already computed for training records."""
    row_of = {(records[index].record_id, side): i for i, (index, side) in enumerate(rows)}
    cache: dict[str, np.ndarray | None] = {}

    def catalogue_descriptor(record: CatalogueRecord, side: str) -> np.ndarray | None:
        if (record.record_id, side) in row_of:
            return clean_d[row_of[(record.record_id, side)]]
        path = record.images.get(side)
        if path is None:
            return None
        key = str(path)
        if key not in cache:  # a specimen outside the training records (e.g. left out by a limit)
            try:
                with Image.open(path) as raw:
                    raw.load()
                    cache[key] = embedder.descriptors([catalogue_cutout(raw)])[0]
            except (OSError, ValueError) as exc:
                logger.warning("feedback: skipping %s (%s): %s", record.record_id, path, exc)
                cache[key] = None
        return cache[key]

    return feedback_pairs(
        feedback, describe=embedder.descriptors, catalogue_descriptor=catalogue_descriptor, weight=weight
    )


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


# --- Command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, help="Folder in the ans-roman layout (labels.csv + images/).")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="Use the first N records only.")
    parser.add_argument("--exclude-records", type=Path, help="File of record ids (one a line) to leave out.")
    parser.add_argument("--no-activate", action="store_true", help="Write the version but keep the active one.")
    parser.add_argument("--list", action="store_true", help="List trained versions.")
    parser.add_argument("--activate", metavar="VERSION", help="Make VERSION the active one.")
    parser.add_argument("--rollback", action="store_true", help="Activate the previously active version.")
    args = parser.parse_args(argv)
    directory = default_models_dir(args.models_dir)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.list:
        for info in list_versions(directory):
            side = info.metrics.get("side", {}).get("held_out_accuracy_query_upright")
            print(f"{'*' if info.active else ' '} {info.version}  created {info.created}  side {side}")
        return 0
    if args.activate:
        print(f"active: {version_activate(directory, args.activate).version}")
        return 0
    if args.rollback:
        print(f"active: {version_rollback(directory).version}")
        return 0
    if not args.dataset:
        parser.error("--dataset is required to train (or use --list / --activate / --rollback)")
    exclude: set[str] = set()
    if args.exclude_records:
        exclude = {line.strip() for line in args.exclude_records.read_text().splitlines() if line.strip()}
    records = load_ans_layout(args.dataset, limit=args.limit)
    report = train_all(
        records, models_dir=directory, seed=args.seed, exclude=exclude, progress=print, activate=not args.no_activate
    )
    print(json.dumps(report.as_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
