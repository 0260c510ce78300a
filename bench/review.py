"""Does learning from reviews help? Retrieval before and after training on simulated volunteer reviews.

``python -m bench.review --dataset DIR --limit 200 --test-coins 25 --reviews 40 [--seed S] [--out FILE]``

In memory, no database (the Django counterpart, through the real services, is
``manage.py benchmark_review_signal``). Protocol, seeded:

* Catalogue: the first ``--limit`` records of the folder (like ``--catalogue-limit``). Coins with both
  photos whose type has 2+ specimens form the query pool; in a seeded order the first
  ``--test-coins`` are the test coins and the next ``--reviews`` the review coins (other coins,
  same pool of types). Both sets are left out of training.
* Every coin photo of those two sets is made phone-like once (``degrade_with_truth``) and cut out
  with its true mask; the trained orientation estimator turns it upright, as in the pipeline.
* Model A: ``train_all`` on the training records. The review coins are answered by A (search by
  side, each item once; the coin's own images are hidden): the volunteers' decision is the true
  item, the items ranked above it in the top 8 (all 8 when it is not there) are the hard negatives.
* Model B: ``train_all`` on the same records with the same seed, plus those reviews as
  ``FeedbackExample``s (the upright photo, the true item's training specimens, the look-alikes').
* The same test photos are answered by A and by B: recall@1/@8 per photo, pair recall@1/@8 (both
  photos of a coin, an item scoring its best obverse plus its best reverse similarity).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mlcore.cutout import catalogue_cutout, cutout_with_mask
from mlcore.dataset import CatalogueRecord, load_ans_layout
from mlcore.modelfiles import link_pretrained
from mlcore.retrieval import recall_at
from mlcore.train import (
    FEEDBACK_WEIGHT,
    FeedbackExample,
    TrainingReport,
    train_all,
)

logger = logging.getLogger(__name__)

SIDES = ("obverse", "reverse")
TOP = 8
NEGATIVE_SPECIMENS = 3


def _type(record: CatalogueRecord) -> str:
    return record.type_id or f"record:{record.record_id}"


def split_coins(
    records: list[CatalogueRecord], *, test_coins: int, reviews: int, seed: int
) -> tuple[list[CatalogueRecord], list[CatalogueRecord]]:
    """(test coins, review coins): disjoint, seeded, from coins with both photos of types with 2+ specimens."""
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        counts[_type(record)] += 1
    pool = [r for r in records if r.type_id and counts[r.type_id] >= 2 and set(SIDES) <= set(r.images)]
    order = np.random.default_rng(seed).permutation(len(pool))
    chosen = [pool[i] for i in order]
    return chosen[:test_coins], chosen[test_coins : test_coins + reviews]


def _query_photos(coins: list[CatalogueRecord], seed: int) -> dict[tuple[str, str], Image.Image]:
    """One phone-like photo per coin side, cut out with its true mask (as photographed, turned)."""
    from mlcore.degrade import degrade_with_truth

    photos = {}
    for number, record in enumerate(coins):
        for side_number, side in enumerate(SIDES):
            rng = np.random.default_rng([seed, 7, number, side_number])
            with Image.open(record.images[side]) as raw:
                photo = degrade_with_truth(raw.convert("RGB"), rng)
            photos[(record.record_id, side)] = cutout_with_mask(photo.image, photo.mask)
    return photos


class _Arm:
    """One trained version, applied: upright queries, projected catalogue and query vectors, ranked items."""

    def __init__(self, models_dir: Path, report: TrainingReport, catalogue_descriptors: np.ndarray, embedder) -> None:
        from mlcore.embed import FILENAME, Projection, l2n
        from mlcore.orientation import OrientationEstimator

        self.report = report
        self.embedder = embedder
        self.estimator = OrientationEstimator(models_dir, weights_dir=report.path, embedder=embedder)
        path = report.path / FILENAME
        self.projection = Projection.load(path) if path.is_file() else None
        self.project = self.projection.apply if self.projection is not None else l2n
        self.catalogue = self.project(catalogue_descriptors)

    def upright(self, photos: list[Image.Image]) -> list[Image.Image]:
        from mlcore.cutout import rotate_upright

        return [
            rotate_upright(photo, angle)
            for photo, (angle, _) in zip(photos, self.estimator.estimate_many(photos), strict=True)
        ]

    def vectors(self, upright: list[Image.Image]) -> np.ndarray:
        return self.project(self.embedder.descriptors(upright))


def _ranked(
    catalogue: np.ndarray, index: list[tuple[str, str, str]], vector: np.ndarray, side: str, own: str
) -> tuple[list[str], dict[str, float]]:
    """Items (types) by their best image of ``side``, the coin's own images hidden; and each item's best score."""
    similarities = catalogue @ vector
    best: dict[str, float] = {}
    for (record_id, image_side, item), score in zip(index, similarities, strict=True):
        if image_side == side and record_id != own and score > best.get(item, -np.inf):
            best[item] = float(score)
    return sorted(best, key=lambda item: -best[item]), best


def _measure(arm: _Arm, coins, photos, index) -> dict[str, Any]:
    keys = [(record.record_id, side) for record in coins for side in SIDES]
    vectors = arm.vectors(arm.upright([photos[key] for key in keys]))
    by_key = dict(zip(keys, vectors, strict=True))
    singles, pairs = [], []
    for record in coins:
        scores = {}
        for side in SIDES:
            ranked, best = _ranked(arm.catalogue, index, by_key[(record.record_id, side)], side, record.record_id)
            singles.append((ranked, _type(record)))
            scores[side] = best
        items = set(scores["obverse"]) | set(scores["reverse"])
        floor = {side: min(scores[side].values(), default=0.0) for side in SIDES}
        combined = {item: sum(scores[side].get(item, floor[side]) for side in SIDES) for item in items}
        pairs.append((sorted(combined, key=lambda item: -combined[item]), _type(record)))

    return {
        "queries": len(singles),
        "pair_queries": len(pairs),
        "recall_at_1": recall_at(singles, 1),
        "recall_at_8": recall_at(singles, 8),
        "recall_at_1_pair": recall_at(pairs, 1),
        "recall_at_8_pair": recall_at(pairs, 8),
        "embedding": arm.report.metrics.get("embedding"),
    }


def run(
    dataset: Path,
    *,
    limit: int | None,
    test_coins: int,
    reviews: int,
    seed: int = 0,
    models_dir: Path | None = None,
    orientation_images: int = 200,
    phone_samples: int = 0,
    feedback_weight: float = FEEDBACK_WEIGHT,
    progress=print,
) -> dict[str, Any]:
    """The whole comparison (see the module docstring); returns the figures as a dict."""
    from mlcore.embed import Embedder
    from mlcore.modelfiles import models_dir as default_models_dir

    started = time.monotonic()
    records = load_ans_layout(dataset, limit=limit)
    test, review = split_coins(records, test_coins=test_coins, reviews=reviews, seed=seed)
    left_out = {r.record_id for r in test + review}
    training = [r for r in records if r.record_id not in left_out]
    by_type: dict[str, list[CatalogueRecord]] = defaultdict(list)
    for record in training:
        by_type[_type(record)].append(record)

    work = Path(tempfile.mkdtemp(prefix="obverse-review-bench-"))
    try:
        models = link_pretrained(default_models_dir(models_dir), work / "models")
        common = {"seed": seed, "orientation_images": orientation_images, "phone_samples": phone_samples}
        progress(f"training A (no reviews) on {len(training)} records")
        report_a = train_all(training, models_dir=models, progress=progress, **common)
        embedder = Embedder(models, use_trained=False)
        index, cutouts = [], []
        for record in records:
            for side, path in sorted(record.images.items()):
                with Image.open(path) as raw:
                    cutouts.append(catalogue_cutout(raw))
                index.append((record.record_id, side, _type(record)))
        progress(f"describing {len(cutouts)} catalogue images")
        catalogue_descriptors = embedder.descriptors(cutouts)
        cutouts.clear()
        photos = _query_photos(test + review, seed)
        arm_a = _Arm(models, report_a, catalogue_descriptors, embedder)

        # The review loop, answered by model A.
        progress(f"answering {len(review)} review coins with model A")
        keys = [(record.record_id, side) for record in review for side in SIDES]
        upright = arm_a.upright([photos[key] for key in keys])
        vectors = arm_a.vectors(upright)
        feedback, ranks = [], []
        for (record_id, side), image, vector in zip(keys, upright, vectors, strict=True):
            record = next(r for r in review if r.record_id == record_id)
            ranked, _ = _ranked(arm_a.catalogue, index, vector, side, record_id)
            top = ranked[:TOP]
            truth = _type(record)
            rank = top.index(truth) + 1 if truth in top else None
            ranks.append(rank)
            wrong = top[: rank - 1] if rank else top
            feedback.append(
                FeedbackExample(
                    query=image,
                    side=side,
                    positives=by_type.get(truth, []),
                    negatives=[r for item in wrong for r in by_type.get(item, [])[:NEGATIVE_SPECIMENS]],
                    label=f"{record_id}:{side}",
                )
            )
        progress("training B (with the reviews)")
        report_b = train_all(
            training, models_dir=models, progress=progress, feedback=feedback, feedback_weight=feedback_weight, **common
        )
        arm_b = _Arm(models, report_b, catalogue_descriptors, embedder)

        progress(f"answering {len(test)} test coins with A and B")
        without = _measure(arm_a, test, photos, index)
        with_reviews = _measure(arm_b, test, photos, index)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = [r for r in ranks if r is not None]
    return {
        "without_reviews": without,
        "with_reviews": with_reviews,
        "reviews": {
            "photos": len(ranks),
            "true_item_top1": sum(1 for r in found if r == 1),
            "true_item_top8": len(found),
            "feedback": report_b.metrics.get("feedback"),
            "feedback_pairs": report_b.feedback_pairs,
        },
        "catalogue_records": len(records),
        "catalogue_images": len(index),
        "training_records": len(training),
        "test_coins": len(test),
        "review_coins": len(review),
        "seed": seed,
        "orientation_images": orientation_images,
        "feedback_weight": feedback_weight,
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="Folder in the ans-roman layout.")
    parser.add_argument("--limit", type=int, default=200, help="Use the first N records as the catalogue.")
    parser.add_argument("--test-coins", type=int, default=25)
    parser.add_argument("--reviews", type=int, default=40, help="Review coins (both photos each).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orientation-images", type=int, default=200)
    parser.add_argument("--feedback-weight", type=float, default=FEEDBACK_WEIGHT)
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run(
        args.dataset,
        limit=args.limit,
        test_coins=args.test_coins,
        reviews=args.reviews,
        seed=args.seed,
        models_dir=args.models_dir,
        orientation_images=args.orientation_images,
        feedback_weight=args.feedback_weight,
    )
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
