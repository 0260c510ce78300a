"""Train every learned part of the pipeline from the catalogue's own labelled photos, as a new version.

``python -m mlcore.train --dataset DIR [--models-dir DIR] [--seed S] [--limit N] [--exclude-records FILE]``
trains from a folder in the ans-roman layout; ``train_all`` does the same for records built from
the database (``manage.py train_models``). Parts: the side classifier, the orientation estimator
(``mlcore.orientation``, when present), the embedder's learned part (when it has one) and the
metadata vote's calibration. Everything lands in ``trained/<version>/`` with ``metrics.json``, and
the version becomes active; ``--list``, ``--activate VERSION`` and ``--rollback`` manage versions.

A training reads the catalogue's images once (``mlcore.train_reading``), turns reviewed
identifications into descriptor pairs (``mlcore.train_feedback``) and fits the parts in order
(``mlcore.train_parts``); this module runs those steps and writes the version.
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

from mlcore.dataset import CatalogueRecord, load_ans_layout
from mlcore.modelfiles import models_dir as default_models_dir
from mlcore.side import FILENAME as SIDE_FILENAME
from mlcore.side import SideClassifier
from mlcore.train_feedback import (
    FEEDBACK_WEIGHT,
    FeedbackExample,
    FeedbackPairs,
    catalogue_feedback_pairs,
    feedback_pairs,
)
from mlcore.train_parts import (
    TrainingRows,
    calibrate_metadata,
    fit_orientation,
    fit_projection,
    fit_side,
    type_folds,
)
from mlcore.train_reading import CatalogueReading, read_catalogue
from mlcore.versions import (
    list_versions,
    version_abort,
    version_activate,
    version_commit,
    version_rollback,
    version_start,
)

# The names the rest of the project imports from here, wherever they are defined.
__all__ = [
    "FEEDBACK_WEIGHT",
    "FeedbackExample",
    "TrainingReport",
    "current_recipes",
    "feedback_pairs",
    "main",
    "train_all",
]

logger = logging.getLogger(__name__)

# Images whose two query-like copies train the orientation estimator (their features come free with
# the descriptors' pass); bounds its memory (5,120 numbers a copy) and fitting time on big catalogues.
ORIENTATION_MAX_IMAGES = 6000
PHONE_SAMPLES = 150  # phone-like photos made to score the side classifier on the real query path
PROJECTION_DIM = 512
# Small catalogues fit a smaller projection (half the fitting pairs) rather than none, down to this;
# the held-out recall check still decides whether it is kept.
MIN_PROJECTION_DIM = 64


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


@dataclass
class _Version:
    """A version being trained: its staging folder and what its files, metrics and ``version.json`` will hold."""

    models_dir: Path
    version: str
    staging: Path
    seed: int
    say: Callable[[str], None]
    parts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    recipes: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


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
    from mlcore.embed import Embedder

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
    out = _Version(models_dir, version, staging, seed=seed, say=say)
    try:
        fb = _fit_parts(
            out,
            records,
            embedder,
            rng,
            phone_samples=phone_samples,
            orientation_images=orientation_images,
            feedback=feedback,
            feedback_weight=feedback_weight,
            projection=projection,
        )
        report = _commit(out, records=len(records), excluded=len(excluded), started=started, fb=fb, activate=activate)
    except BaseException:
        version_abort(models_dir, version)
        raise
    say(f"trained version {version} in {report.seconds:.0f} s")
    return report


def _fit_parts(
    out: _Version,
    records: Sequence[CatalogueRecord],
    embedder,
    rng: np.random.Generator,
    *,
    phone_samples: int,
    orientation_images: int,
    feedback: list[FeedbackExample],
    feedback_weight: float,
    projection: str,
) -> FeedbackPairs | None:
    """Read the catalogue once, then fit every part into ``out`` in training order; the review signal used, if any.

    Every random draw comes from ``rng``, in this order (``mlcore.train_parts``).
    """
    from mlcore.embed import FILENAME as EMBED_FILENAME
    from mlcore.embed import Embedder
    from mlcore.metadata import FILENAME as METADATA_FILENAME

    say = out.say
    reading = read_catalogue(
        records, embedder, rng, orientation_images=orientation_images, phone_samples=phone_samples, say=say
    )
    out.metrics.update(records=len(records), images=len(reading.rows), seed=out.seed)
    out.recipes["embedding"] = embedder.base_version  # the side and projection parts fit this recipe only
    rows = TrainingRows.of(records, reading)
    side_net, out.metrics["side"] = fit_side(reading, rows, embedder, seed=out.seed, say=say)
    side_net.save(out.staging / SIDE_FILENAME)
    out.parts["side-classifier"] = SIDE_FILENAME
    out.recipes["side"] = SideClassifier(out.models_dir, embedder=embedder).recipe

    orientation = fit_orientation(reading, embedder, rng, say=say)
    if orientation is not None:
        estimator, out.metrics["orientation"] = orientation
        out.parts["orientation"] = estimator.save(out.staging).name
        out.recipes["orientation"] = estimator.recipe
    else:
        out.skipped["orientation"] = "no images for it (orientation_images=0)"

    # Held-out folds of catalogue types, for the embedding projection and metadata calibration.
    fold_of_type = type_folds(rows.types, rng)
    folds = np.array([fold_of_type[t] for t in rows.types])
    fb, fb_folds = _review_signal(out, feedback, records, reading, rows, embedder, fold_of_type, weight=feedback_weight)

    learned, out.metrics["embedding"] = fit_projection(
        rows,
        folds,
        fb,
        fb_folds,
        embedder,
        mode=projection,
        max_dim=PROJECTION_DIM,
        min_dim=MIN_PROJECTION_DIM,
        say=say,
    )
    if learned is not None:
        learned.save(out.staging / EMBED_FILENAME)
        out.parts["embedding-projection"] = EMBED_FILENAME
        embedder = Embedder(out.models_dir, projection=learned)  # the metadata vote reads what the index will hold
    else:
        out.skipped["embedding-projection"] = "did not raise held-out recall (or too few images to fit)"

    metadata_model, out.metrics["metadata"] = calibrate_metadata(rows, folds, fb, fb_folds, embedder, rng, say=say)
    metadata_model.save(out.staging / METADATA_FILENAME)
    out.parts["metadata"] = METADATA_FILENAME
    return fb


def _review_signal(
    out: _Version,
    feedback: list[FeedbackExample],
    records: Sequence[CatalogueRecord],
    reading: CatalogueReading,
    rows: TrainingRows,
    embedder,
    fold_of_type: dict[str, int],
    *,
    weight: float,
) -> tuple[FeedbackPairs | None, np.ndarray]:
    """(pairs, the fold of each reviewed photo's accepted type (-1: not trained on)) of the reviewed identifications.

    Descriptor pairs against the catalogue's clean images; (None, no folds) without reviews.
    """
    if not feedback:
        return None, np.zeros(0, dtype=int)
    out.say(f"describing {len(feedback)} reviewed photos")
    fb = catalogue_feedback_pairs(feedback, records, reading.rows, rows.clean, embedder, weight=weight)
    fb_folds = np.array([fold_of_type.get(t, -1) for t in fb.types], dtype=int)
    out.metrics["feedback"] = {**fb.summary(), "weight": weight}
    out.say(
        f"review signal: {fb.used} of {fb.given} reviewed photos used, {len(fb.query)} matching pairs, "
        f"{len(fb.negative_query)} hard-negative pairs"
    )
    return fb, fb_folds


def _commit(
    out: _Version, *, records: int, excluded: int, started: float, fb: FeedbackPairs | None, activate: bool
) -> TrainingReport:
    """Finish the version's metrics and ``version.json`` and commit it (the active one when ``activate``)."""
    seconds = round(time.monotonic() - started, 1)
    out.metrics["seconds"] = seconds
    out.metrics["skipped"] = out.skipped
    info = {
        "seed": out.seed,
        "records": records,
        "images": out.metrics["images"],
        "excluded": excluded,
        **{f"{kind}_recipe": recipe for kind, recipe in out.recipes.items()},
    }
    if fb is not None:
        info["feedback_pairs"] = len(fb.query)
    committed = version_commit(
        out.models_dir, out.version, parts=out.parts, metrics=out.metrics, info=info, activate=activate
    )
    return TrainingReport(
        version=out.version,
        path=committed.path,
        records=records,
        images=out.metrics["images"],
        seconds=seconds,
        activated=activate,
        parts=out.parts,
        metrics=out.metrics,
        skipped=out.skipped,
        feedback_pairs=len(fb.query) if fb is not None else 0,
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
