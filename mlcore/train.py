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
import importlib
import inspect
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mlcore.dataset import METADATA_FIELDS, CatalogueRecord, load_ans_layout
from mlcore.setup_models import models_dir as default_models_dir
from mlcore.side import NEUTRAL, SIDES, SideClassifier, augment_like_query, side_weights_fit
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
ORIENTATION_MAX_IMAGES = 800  # enough for the rotation head; bounds time and memory on big catalogues
PHONE_SAMPLES = 150  # phone-like photos made to score the side classifier on the real query path
PROJECTION_DIM = 512
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

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


# --- Preparing catalogue images ----------------------------------------------------------------


def catalogue_mask(image: Image.Image, *, tolerance: int = 23) -> np.ndarray:
    """Boolean mask of the object in a studio photo on a plain background (largest blob, holes filled)."""
    from scipy import ndimage

    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    # Distance from the background colour, estimated from the border, handles off-white studio paper.
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    distance = np.abs(rgb - background).max(axis=2)
    mask = ndimage.binary_opening(distance > tolerance, iterations=2)
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
    return ndimage.binary_fill_holes(labels == (int(np.argmax(sizes)) + 1))


def mask_detection(mask: np.ndarray):
    """A ``mlcore.segment.Detection`` for a known mask (catalogue photos, degraded copies with their truth)."""
    from mlcore.segment import Detection

    if mask.sum() < 0.01 * mask.size:
        mask = np.ones(mask.shape, dtype=bool)  # nothing found: keep the whole frame
    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    return Detection(box=box, mask=mask, area=float(mask.mean()), circularity=1.0, centrality=1.0, score=1.0)


def catalogue_cutout(image: Image.Image, *, size: int = CUTOUT_SIZE) -> Image.Image:
    """The object on neutral grey, framed exactly like the pipeline's cut-outs (``mlcore.cutout``)."""
    from mlcore.cutout import make_cutout

    rgb = image.convert("RGB")
    return make_cutout(rgb, mask_detection(catalogue_mask(rgb)), size=size).on_neutral


def phone_cutouts(image: Image.Image, rng: np.random.Generator, *, size: int = CUTOUT_SIZE):
    """(turned, upright) cut-outs of a phone-like degraded copy (``mlcore.degrade``), cut with its true mask."""
    from mlcore.cutout import make_cutout
    from mlcore.degrade import degrade_with_truth

    photo = degrade_with_truth(image, rng)
    turned = make_cutout(photo.image, mask_detection(photo.mask), size=size).on_neutral
    upright = turned.rotate(-photo.angle, resample=Image.Resampling.BILINEAR, fillcolor=NEUTRAL)
    return turned, upright


# --- Optional parts written by other modules -----------------------------------------------------


def _optional(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name and module.endswith(exc.name.rsplit(".", 1)[-1]):
            return None
        raise


def _call_with_supported(function: Callable, *args, **kwargs) -> Any:
    """Call ``function`` with only the keyword arguments it accepts (the parts' fit signatures differ)."""
    parameters = inspect.signature(function).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in parameters}
    return function(*args, **kwargs)


# --- Training ---------------------------------------------------------------------------------


def _fingerprint(records: Sequence[CatalogueRecord], seed: int) -> str:
    digest = hashlib.sha256(f"seed={seed}".encode())
    for record in records:
        digest.update(f"{record.record_id}|{record.type_id}|{sorted(record.images)}".encode())
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


def _recall_at_1(
    catalogue: np.ndarray,
    queries: np.ndarray,
    sides: np.ndarray,
    types: list[str],
    records: list[str],
    rows: np.ndarray,
) -> float | None:
    """Share of query ``rows`` whose nearest catalogue image (same side, another specimen) has their type.

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
) -> TrainingReport:
    """Train every learned part from ``records`` (minus ``exclude`` record ids) into a new version.

    Seeded: the same records and seed give the same weights. Raises ValueError when the records
    cannot train a side classifier (fewer than two specimens or one side only). ``phone_samples``
    catalogue images are also turned into phone-like photos (``mlcore.degrade``) to measure the
    side classifier on the real query path; ``orientation_images`` bounds the orientation training set.
    """
    from mlcore.embed import FILENAME as EMBED_FILENAME
    from mlcore.embed import Embedder, projection_fit
    from mlcore.metadata import FILENAME as METADATA_FILENAME
    from mlcore.metadata import metadata_fit

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
    orientation_module = _optional("mlcore.orientation")

    version, staging = version_start(models_dir, fingerprint=_fingerprint(records, seed))
    try:
        # One pass over the images. Per image: descriptors of the clean cut-out, of a query-like
        # copy (upright) and of that copy turned by a random angle. Images are not kept in memory.
        rows: list[tuple[int, str]] = []  # (record index, side)
        clean_parts, upright_parts, turned_parts = [], [], []
        orientation_set: list[Image.Image] = []
        phone: dict[str, list] = {"turned": [], "upright": [], "row": []}
        total = sum(len(r.images) for r in records)
        orientation_every = max(1, total // max(1, orientation_images))
        phone_every = max(1, total // max(1, phone_samples)) if phone_samples else 0
        pending: list[tuple[int, str, Image.Image]] = []

        def flush() -> None:
            if not pending:
                return
            clean = [image for _, _, image in pending]
            upright = [augment_like_query(image, rng, turn_probability=0.0) for image in clean]
            turned = [
                image.rotate(float(rng.uniform(0, 360)), resample=Image.Resampling.BILINEAR, fillcolor=NEUTRAL)
                for image in upright
            ]
            clean_parts.append(embedder.descriptors(clean))
            upright_parts.append(embedder.descriptors(upright))
            turned_parts.append(embedder.descriptors(turned))
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
                if seen % orientation_every == 0 and len(orientation_set) < orientation_images:
                    orientation_set.append(cutout)
                seen += 1
                if len(pending) >= BATCH:
                    flush()
                    say(f"features: {seen}/{total} images")
        flush()
        if not rows:
            raise ValueError("No readable catalogue images to train on")

        parts: dict[str, str] = {}
        metrics: dict[str, Any] = {"records": len(records), "images": len(rows), "seed": seed}
        skipped: dict[str, str] = {}
        sides = np.array([side for _, side in rows])
        groups = np.array([records[index].record_id for index, _ in rows])
        clean_d, upright_d, turned_d = (np.concatenate(p) for p in (clean_parts, upright_parts, turned_parts))
        obverse = (sides == "obverse").astype(int)

        # Side classifier on clean, query-like upright and turned copies; calibrated out of fold
        # (grouped by specimen), and scored on phone-like photos of some coins (true masks).
        say("training the side classifier")
        extra = {}
        if phone["row"]:
            phone_rows = np.array(phone["row"])
            for name in ("turned", "upright"):
                extra[f"phone_{name}"] = (embedder.descriptors(phone[name]), obverse[phone_rows], groups[phone_rows])
        weights, side_metrics, oof = side_weights_fit(
            np.concatenate([clean_d, upright_d, turned_d]),
            np.concatenate([obverse, obverse, obverse]),
            np.concatenate([groups, groups, groups]),
            seed=seed,
            extra=extra,
        )
        n = len(rows)
        for position, name in enumerate(("clean", "query_upright", "query_turned")):
            part = slice(position * n, (position + 1) * n)
            side_metrics[f"oof_accuracy_{name}"] = round(float(np.mean((oof[part] >= 0.5) == obverse)), 4)
        SideClassifier.save(weights, staging)
        parts["side-classifier"] = "side.npz"
        metrics["side"] = side_metrics
        phone.clear()

        # Orientation estimator (mlcore.orientation), trained on upright catalogue cut-outs.
        if orientation_module is not None and hasattr(orientation_module, "OrientationEstimator"):
            say(f"training the orientation estimator on {len(orientation_set)} images")
            result = _call_with_supported(
                orientation_module.OrientationEstimator.fit,
                orientation_set,
                models_dir=models_dir,
                backbone=embedder.backbone,  # one set of weights in memory
                seed=seed,
            )
            estimator, orientation_metrics = result if isinstance(result, tuple) else (result, {})
            saved = estimator.save(staging)
            parts["orientation"] = Path(saved).name
            metrics["orientation"] = orientation_metrics or {}
        else:
            skipped["orientation"] = "mlcore.orientation is not available"
        orientation_set.clear()

        # Held-out folds of catalogue types, for the embedding projection and metadata calibration.
        type_of = [records[index].type_id or f"record:{records[index].record_id}" for index, _ in rows]
        unique_types = sorted(set(type_of))
        shuffled = rng.permutation(len(unique_types))
        fold_of_type = {unique_types[i]: rank % TYPE_FOLDS for rank, i in enumerate(shuffled)}
        folds = np.array([fold_of_type[t] for t in type_of])

        # Embedding projection (learned whitening): kept only when it raises same-type recall@1
        # of query-like copies on types it was not fitted on.
        say("measuring the learned embedding projection")
        fit_rows, test_rows = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
        plain_recall = _recall_at_1(
            embedder.embed_descriptors(clean_d),
            embedder.embed_descriptors(upright_d),
            sides,
            type_of,
            list(groups),
            test_rows,
        )
        projection = None
        projected_recall = None
        if len(fit_rows) >= 2 * PROJECTION_DIM:
            trial = projection_fit(clean_d[fit_rows], upright_d[fit_rows], dim=PROJECTION_DIM)
            projected_recall = _recall_at_1(
                trial.apply(clean_d), trial.apply(upright_d), sides, type_of, list(groups), test_rows
            )
            if plain_recall is not None and projected_recall is not None and projected_recall > plain_recall + 0.005:
                projection = projection_fit(clean_d, upright_d, dim=PROJECTION_DIM)
        metrics["embedding"] = {
            "recall_at_1_plain": plain_recall,
            "recall_at_1_projected": projected_recall,
            "projection_used": projection is not None,
        }
        if projection is not None:
            projection.save(staging / EMBED_FILENAME)
            parts["embedding-projection"] = EMBED_FILENAME
            embedder = Embedder(models_dir, projection=projection)
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
        fields = sorted({name for labels in labels_of for name in labels} | set(METADATA_FIELDS))
        metadata_model, metadata_metrics = metadata_fit(samples, fields=fields)
        metadata_model.save(staging / METADATA_FILENAME)
        parts["metadata"] = METADATA_FILENAME
        metrics["metadata"] = metadata_metrics

        seconds = round(time.monotonic() - started, 1)
        metrics["seconds"] = seconds
        metrics["skipped"] = skipped
        info = {"seed": seed, "records": len(records), "images": len(rows), "excluded": len(excluded)}
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
            side = info.metrics.get("side", {}).get("oof_accuracy_query_like")
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
