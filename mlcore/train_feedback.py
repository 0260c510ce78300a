"""Reviewed identifications as training signal: each reviewed photo paired with catalogue specimens.

A reviewer's decision says which catalogue item a real query photo shows (and which look-alikes it
does not): the real gap between a phone photo and a catalogue photo (the pipeline's own cut-out and
rotation, a real camera) that synthetic copies only imitate. ``feedback_pairs`` turns reviewed
examples into descriptor pairs; ``mlcore.train.train_all`` adds them to the embedding projection's
pairs and to the metadata vote's calibration samples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mlcore.cutout import catalogue_cutout
from mlcore.dataset import CatalogueRecord
from mlcore.side import NEUTRAL, SIDES
from mlcore.train_reading import BATCH

logger = logging.getLogger(__name__)

# A reviewed photo's pairs together weigh as much as this many synthetic pairs in the whitening:
# they show the real gap (the pipeline's own cut-out and rotation, a real photo) that copies only imitate.
FEEDBACK_WEIGHT = 4.0
FEEDBACK_MAX_SPECIMENS = 4  # catalogue specimens of the accepted item paired with one reviewed photo
FEEDBACK_MAX_NEGATIVES = 12  # hard-negative catalogue specimens per reviewed photo


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


def _described(
    examples: Sequence[FeedbackExample], describe: Callable[[list[Image.Image]], np.ndarray]
) -> tuple[list[tuple[FeedbackExample, np.ndarray]], int]:
    """([(example, query descriptor)] of the readable examples in order, number unreadable)."""
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
    return usable, skipped


def _closer_side(
    query: np.ndarray,
    positives: Sequence[CatalogueRecord],
    catalogue_descriptor: Callable[[CatalogueRecord, str], np.ndarray | None],
) -> str:
    """The side of the accepted item a photo of unknown side is closer to ("" when the item has no image)."""
    best = (-np.inf, None)
    for candidate in SIDES:
        for record in positives:
            descriptor = catalogue_descriptor(record, candidate)
            if descriptor is not None and float(descriptor @ query) > best[0]:
                best = (float(descriptor @ query), candidate)
    return best[1] or ""


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
    usable, skipped = _described(examples, describe)
    pairs: dict[str, list] = {name: [] for name in ("q", "p", "w", "e", "nq", "n", "ne")}
    queries, types, sides, labels, own = [], [], [], [], []
    for example, query in usable:
        dim = len(query)
        positives = sorted(
            (r for r in example.positives if r.record_id != example.own_record_id), key=lambda r: r.record_id
        )
        side = example.side
        if side not in SIDES:
            side = _closer_side(query, positives, catalogue_descriptor)
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


def catalogue_feedback_pairs(
    feedback: Sequence[FeedbackExample],
    records: Sequence[CatalogueRecord],
    rows: list[tuple[int, str]],
    clean: np.ndarray,
    embedder,
    *,
    weight: float,
) -> FeedbackPairs:
    """Feedback pairs, reusing the clean descriptors already computed for training records.

    ``rows`` ((record index, side)) and ``clean`` are the training pass's (``mlcore.train_reading``).
    """
    row_of = {(records[index].record_id, side): i for i, (index, side) in enumerate(rows)}
    cache: dict[str, np.ndarray | None] = {}

    def catalogue_descriptor(record: CatalogueRecord, side: str) -> np.ndarray | None:
        if (record.record_id, side) in row_of:
            return clean[row_of[(record.record_id, side)]]
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
