"""How well does the pipeline identify coins? Leave-one-out retrieval with phone-like queries, no database.

``python -m bench.evaluate --dataset DIR [--limit N] [--seed S] [--out FILE]`` prints JSON.

Protocol (seeded; see docs/ml-notes.md):

* Types are split into train/test by a seeded hash. Everything learned here (the orientation
  estimator, the embedding projection) is fitted on train types only; queries come from test types
  only, so the figures say how the pipeline does on coins of types it never learned from.
* Index: every catalogue image (clean studio photo → cut-out on neutral), with its item (= type;
  a specimen without a type is an item of its own and acts as a distractor).
* Queries: each specimen of a test type with 2+ specimens; each of its photos is degraded with
  ``degrade_like_phone`` (rotated anywhere, off-centre, blurred, small, JPEG, background), cut out
  (ground-truth mask by default, or ``--segmenter model`` for U^2-Net-p), turned upright by the
  estimator, embedded. Its own images are excluded from the index (leave-one-out); a hit is a
  candidate item with the same type. recall@k counts items after grouping image hits by item.
* ``recall_at_8_pair``: both photos of the coin, combined with ``combine_sides``.
* Items are ranked as the product ranks them: similarity plus metadata agreement
  (``rerank_by_agreement``); the figures without it are reported next to them.
* ``side_accuracy_held_out``: a side network fine-tuned on train types (``side_net_fit``) on the
  queries' upright cut-outs; ``pair_both_right_together``: both photos of a coin decided together
  (``pair_obverse_first``), as the worker does for a two-photo submission.
* Baseline: pretrained MobileNetV2 global-average features of the colour cut-out, no rotation
  handling — what the pipeline would do with no coin-specific work.
* Latency: the production path (decode → segment → cut out → upright → embed) on a sample of queries.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mlcore.cutout import catalogue_cutout, cutout_with_mask, mask_detection, rotate_upright
from mlcore.dataset import METADATA_FIELDS, CatalogueRecord, hash_unit, load_ans_layout, split_types, type_key
from mlcore.degrade import degrade_with_truth
from mlcore.metadata import AGREEMENT_WEIGHT
from mlcore.orientation import BINS, angle_from_probabilities, angular_error, query_like
from mlcore.pipeline import ROTATION_PRIOR, ROTATION_TURNS, TURN_RESIDUAL
from mlcore.retrieval import InMemoryIndex, combine_sides, group_by_item, rerank_by_agreement, search_turns, turn_bonus

SIDES = ("obverse", "reverse")
SEARCH_DEPTH = 200  # image hits fetched per query before grouping into items
TURN_PRIOR_WEIGHTS = (0.0, 0.003, 0.01, 0.03)  # β of the orientation prior compared in the rotation search
assert ROTATION_PRIOR in TURN_PRIOR_WEIGHTS, "the production prior must be among the compared ones"


def sweep_offsets(turns: int) -> np.ndarray:
    """``turns`` offsets (degrees) evenly round the circle, starting at 0 (the estimator's own angle)."""
    return np.arange(turns) * (360.0 / turns)


def estimate_from_probabilities(p: np.ndarray) -> tuple[float, float]:
    """The estimator's (correction angle, confidence) from its bin probabilities (as ``estimate_many``)."""
    turned, confidence = angle_from_probabilities(p)
    return (-turned) % 360.0, confidence


def select_records(records: Sequence[CatalogueRecord], *, limit: int | None, seed: int) -> list[CatalogueRecord]:
    """All records, or whole types in seeded order until ``limit`` records (so multi-specimen types stay whole)."""
    if not limit or limit >= len(records):
        return list(records)
    by_type: dict[str, list[CatalogueRecord]] = defaultdict(list)
    for record in records:
        by_type[type_key(record)].append(record)
    # Multi-specimen types first (they make queries), interleaved with singletons (distractors).
    multi = sorted((t for t, rs in by_type.items() if len(rs) > 1), key=lambda t: hash_unit(seed, "pick", t))
    single = sorted((t for t, rs in by_type.items() if len(rs) == 1), key=lambda t: hash_unit(seed, "pick", t))
    chosen: list[CatalogueRecord] = []
    while (multi or single) and len(chosen) < limit:
        for pool in (multi, single):
            if pool and len(chosen) < limit:
                chosen += by_type[pool.pop(0)][: limit - len(chosen)]
    return chosen


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"p50": round(float(np.percentile(values, 50)), 4), "p95": round(float(np.percentile(values, 95)), 4)}


@dataclass
class QueryImage:
    """One degraded query photo of a specimen and what the evaluation needs to score it."""

    record: CatalogueRecord
    side: str
    cutout: Image.Image  # as photographed (turned), cut out
    angle: float  # counter-clockwise turn applied by the degradation


def _recall(ranked: list[list[str]], truths: list[str], k: int) -> float:
    if not truths:
        return 0.0
    return round(float(np.mean([truth in items[:k] for items, truth in zip(ranked, truths, strict=True)])), 4)


def evaluate(
    dataset: str | Path,
    *,
    models_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    train_fraction: float = 0.5,
    segmenter: str = "truth",
    orientation_images: int = 800,
    orientation_rotations: int = 3,
    orientation_tta: int = 8,
    rotation_sweep: int = ROTATION_TURNS,
    projection: bool = True,
    projection_pairs: int = 1500,
    baseline: bool = True,
    oracle_rotation: bool = False,
    latency_samples: int = 30,
    embed_config: Any = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole evaluation and return the figures as a JSON-ready dict (see the module docstring)."""
    from mlcore.backbone import Backbone
    from mlcore.embed import Embedder, projection_fit
    from mlcore.modelfiles import models_dir as default_models_dir
    from mlcore.orientation import OrientationEstimator

    started = time.monotonic()
    say = progress or (lambda message: print(message, file=sys.stderr, flush=True))
    models_dir = default_models_dir(models_dir)
    records = [r for r in select_records(load_ans_layout(dataset), limit=limit, seed=seed) if r.images]
    train_types = split_types(records, seed=seed, train_fraction=train_fraction)
    counts = Counter(type_key(r) for r in records)
    backbone = Backbone(models_dir)
    embedder = Embedder(models_dir, use_trained=False, **({"config": embed_config} if embed_config else {}))

    # --- Catalogue ------------------------------------------------------------------------------
    ids, items, sides, owners = [], [], [], []
    descriptors, base_features = [], []
    stems: list[torch.Tensor] = []  # block-13 maps of train-type images, in order (the side network's input)
    orientation_pool: list[Image.Image] = []
    train_cutouts: dict[tuple[str, str], Image.Image] = {}
    batch: list[Image.Image] = []
    every = max(1, sum(len(r.images) for r in records if type_key(r) in train_types) // max(1, orientation_images))
    seen_train = 0

    def flush() -> None:
        if batch:
            reading = embedder.read(batch, stems=True)
            descriptors.append(reading.descriptors)
            first = len(ids) - len(batch)
            stems.extend(stem for i, stem in enumerate(reading.stems) if items[first + i] in train_types)
            if baseline:
                base_features.append(backbone.features(batch))
            batch.clear()

    for record in records:
        for side, path in sorted(record.images.items()):
            with Image.open(path) as raw:
                cut = catalogue_cutout(raw)
            ids.append(f"{record.record_id}:{side}")
            items.append(type_key(record))
            sides.append(side)
            owners.append(record.record_id)
            batch.append(cut)
            if type_key(record) in train_types:
                if seen_train % every == 0 and len(orientation_pool) < orientation_images:
                    orientation_pool.append(cut)
                if projection and hash_unit(seed, "pair", record.record_id, side) < 0.5:
                    train_cutouts[(record.record_id, side)] = cut
                seen_train += 1
            if len(batch) >= 32:
                flush()
                say(f"catalogue: {len(ids)} images")
    flush()
    catalogue_desc = np.concatenate(descriptors) if descriptors else np.zeros((0, 1280), np.float32)
    catalogue_base = np.concatenate(base_features) if base_features else None
    index_of = {image_id: i for i, image_id in enumerate(ids)}

    # --- Orientation estimator (train types only) ----------------------------------------------
    say(f"orientation: fitting on {len(orientation_pool)} train-type images")
    fit_started = time.monotonic()
    estimator, orientation_fit_metrics = OrientationEstimator.fit(
        orientation_pool,
        np.random.default_rng(seed),
        embedder=embedder,
        rotations=orientation_rotations,
    )
    estimator.tta = orientation_tta
    orientation_fit_seconds = time.monotonic() - fit_started
    orientation_pool.clear()

    # --- Queries (test types with 2+ specimens) -------------------------------------------------
    query_records = [r for r in records if type_key(r) not in train_types and counts[type_key(r)] > 1]
    seg_model = None
    if segmenter == "model":
        from bench.segmentation import iou
        from mlcore.segment import Segmenter

        seg_model = Segmenter(models_dir)
    queries: list[QueryImage] = []
    segmentation_misses = 0
    segmentation_ious: list[float] = []  # the model's mask against the known one (``--segmenter model``)
    for record in query_records:
        for side, path in sorted(record.images.items()):
            rng = np.random.default_rng(int(hash_unit(seed, "query", record.record_id, side) * 2**32))
            with Image.open(path) as raw:
                photo = degrade_with_truth(raw.convert("RGB"), rng)
            mask = photo.mask
            if seg_model is not None:
                found = seg_model.find_objects(photo.image)
                if found:
                    mask = found[0].mask
                    segmentation_ious.append(iou(np.asarray(mask) > 0.5, np.asarray(photo.mask) > 0.5))
                else:
                    segmentation_misses += 1  # fall back to the whole photo, as a user would see a bad result
                    mask = np.ones_like(photo.mask)
            queries.append(QueryImage(record, side, cutout_with_mask(photo.image, mask), photo.angle))
        if len(queries) % 64 < 2:
            say(f"queries: {len(queries)} photos")

    say(f"orientation: estimating {len(queries)} queries")
    probabilities = estimator.probabilities([q.cutout for q in queries]) if queries else np.zeros((0, BINS))
    estimates = [estimate_from_probabilities(p) for p in probabilities]
    errors = [angular_error(est, -q.angle) for (est, _), q in zip(estimates, queries, strict=True)]
    upright = [rotate_upright(q.cutout, est) for (est, _), q in zip(estimates, queries, strict=True)]
    say("embedding queries")
    query_reading = embedder.read(upright, stems=True)
    query_desc = query_reading.descriptors
    # Rotation search: each query also embedded turned by the sweep's offsets from the estimate.
    offsets = sweep_offsets(rotation_sweep) if rotation_sweep > 1 else np.zeros(1)
    turn_desc = np.repeat(query_desc[:, None, :], len(offsets), axis=1)
    turn_stems = [[stem] for stem in query_reading.stems]  # per query: its stems at each turn
    if rotation_sweep > 1 and queries:
        say(f"rotation sweep: {len(queries)} queries × {len(offsets)} turns")
        for i, ((est, _), q) in enumerate(zip(estimates, queries, strict=True)):
            turned = [rotate_upright(q.cutout, est + float(offset)) for offset in offsets[1:]]
            turned_reading = embedder.read(turned, stems=True)
            turn_desc[i, 1:] = turned_reading.descriptors
            turn_stems[i].extend(turned_reading.stems)

    # --- Learned projection (train types only) --------------------------------------------------
    projections: dict[str, Any] = {}
    if projection and train_cutouts:
        say(f"projection: {min(len(train_cutouts), projection_pairs)} query-like pairs + same-type pairs")
        rng = np.random.default_rng(seed + 1)
        keys = sorted(train_cutouts)
        keys = [keys[i] for i in rng.permutation(len(keys))[:projection_pairs]]
        copies = [
            rotate_upright(query_like(train_cutouts[k], rng), float(rng.uniform(-TURN_RESIDUAL, TURN_RESIDUAL)))
            for k in keys
        ]  # what the rotation search leaves: the best turn is within half a step of upright
        copy_reading = embedder.read(copies, stems=True)
        copy_desc = copy_reading.descriptors
        anchors = [catalogue_desc[index_of[f"{rid}:{side}"]] for rid, side in keys]
        positives = list(copy_desc)
        # Other specimens of the same (train) type, same side.
        by_type_side: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, (item, side) in enumerate(zip(items, sides, strict=True)):
            if item in train_types and counts[item] > 1:
                by_type_side[(item, side)].append(i)
        for members in by_type_side.values():
            for a in range(len(members)):
                for b in range(a + 1, min(len(members), a + 4)):
                    anchors.append(catalogue_desc[members[a]])
                    positives.append(catalogue_desc[members[b]])
        train_rows = [i for i, item in enumerate(items) if item in train_types]
        background = np.concatenate([catalogue_desc[train_rows], copy_desc])
        projections["learned"] = projection_fit(np.array(anchors), np.array(positives), background=background)
        train_cutouts.clear()
        side_training = (
            torch.cat([torch.stack(stems), copy_reading.stems]),
            np.array([sides[i] for i in train_rows] + [side for _, side in keys]),
            np.array([owners[i] for i in train_rows] + [rid for rid, _ in keys]),
        )
    else:
        side_training = None

    # --- Search ---------------------------------------------------------------------------------
    excludes = [{f"{q.record.record_id}:{s}" for s in SIDES} for q in queries]
    truths = [type_key(q.record) for q in queries]

    # Each item's labels, for the metadata agreement (``rerank_by_agreement``), as the database has them.
    labels_of = {type_key(r): r.labels for r in records}

    def pair_recalls(hits: list[list[Any]]) -> dict[str, float]:
        """Recall of both photos of one coin together (each photo's ranked ``hits``, ``combine_sides``)."""
        by_record: dict[str, dict[str, int]] = defaultdict(dict)
        for i, q in enumerate(queries):
            by_record[q.record.record_id][q.side] = i
        pair_ranked, pair_truths = [], []
        for positions in by_record.values():
            if set(positions) >= set(SIDES):
                o, r = positions["obverse"], positions["reverse"]
                pair_ranked.append([p.item_id for p in combine_sides(hits[o], hits[r], k=8)])
                pair_truths.append(truths[o])
        return {
            "recall_at_1_pair": _recall(pair_ranked, pair_truths, 1),
            "recall_at_8_pair": _recall(pair_ranked, pair_truths, 8),
            "pairs": len(pair_truths),
        }

    def run(
        catalogue_vectors: np.ndarray, query_vectors: np.ndarray, agree: float = AGREEMENT_WEIGHT
    ) -> dict[str, Any]:
        index = InMemoryIndex()
        index.add(ids, catalogue_vectors, items, sides)
        hits = [
            rerank_by_agreement(index.search(v, SEARCH_DEPTH, exclude=ex), labels_of, agree)
            for v, ex in zip(query_vectors, excludes, strict=True)
        ]
        ranked = [[h.item_id for h in group_by_item(found, k=8)] for found in hits]
        result = {"recall_at_1": _recall(ranked, truths, 1), "recall_at_8": _recall(ranked, truths, 8)}
        result.update(pair_recalls(hits))
        result["_index"] = index
        result["_query_vectors"] = query_vectors
        return result

    def run_turns(
        catalogue_vectors: np.ndarray,
        turn_vectors: np.ndarray,
        angles: list[np.ndarray],
        probs: np.ndarray,
        weight: float,
        agree: float = AGREEMENT_WEIGHT,
    ) -> dict[str, Any]:
        """``run`` for queries given as several turns each, scored by the best turn (+ prior bonus)."""
        index = InMemoryIndex()
        index.add(ids, catalogue_vectors, items, sides)
        bonuses = [turn_bonus(p, a, weight) for p, a in zip(probs, angles, strict=True)]
        hits = [
            rerank_by_agreement(search_turns(index, v, SEARCH_DEPTH, exclude=ex, bonus=b), labels_of, agree)
            for v, ex, b in zip(turn_vectors, excludes, bonuses, strict=True)
        ]
        ranked = [[h.item_id for h in group_by_item(found, k=8)] for found in hits]
        result: dict[str, Any] = {"recall_at_1": _recall(ranked, truths, 1), "recall_at_8": _recall(ranked, truths, 8)}
        # The alignment angle: the best turn of the true item's best image, against the true angle.
        align = []
        for found, truth, angle_set, q in zip(hits, truths, angles, queries, strict=True):
            mine = [h for h in found if h.item_id == truth]
            if mine:
                align.append(angular_error(float(angle_set[mine[0].turn]), -q.angle))
        result["alignment_median_error_deg"] = round(float(np.median(align)), 2) if align else None
        result["alignment_within_20deg"] = round(float(np.mean(np.array(align) <= 20)), 4) if align else None
        result["alignment_within_10deg"] = round(float(np.mean(np.array(align) <= 10)), 4) if align else None
        result.update(pair_recalls(hits))
        return result

    def public(result: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in result.items() if not k.startswith("_")}

    say("searching")
    plain = run(embedder.embed_descriptors(catalogue_desc), embedder.embed_descriptors(query_desc))
    variants: dict[str, Any] = {"gem": public(plain)}
    chosen, chosen_name = plain, "gem"
    for name, proj in projections.items():
        variant = run(proj.apply(catalogue_desc), proj.apply(query_desc))
        variants[f"gem+{name}"] = public(variant)
        if variant["recall_at_8"] >= chosen["recall_at_8"]:
            chosen, chosen_name = variant, f"gem+{name}"
    variants[f"{chosen_name} without metadata agreement"] = public(
        run(chosen["_index"].matrix, chosen["_query_vectors"], agree=0.0)
    )
    say("variants: " + json.dumps(variants))

    # --- Rotation search: every turn searched, each image scored by its best turn ---------------
    rotation_search: dict[str, Any] | None = None
    if rotation_sweep > 1 and queries:
        say("rotation search variants")
        proj = projections.get(chosen_name.split("+", 1)[1]) if "+" in chosen_name else None
        apply = proj.apply if proj is not None else embedder.embed_descriptors
        catalogue_vectors = apply(catalogue_desc)
        flat = apply(turn_desc.reshape(-1, turn_desc.shape[-1])).reshape(len(queries), len(offsets), -1)
        sweep: dict[str, Any] = {}

        def turns_run(step: int, weight: float, agree: float = AGREEMENT_WEIGHT) -> dict[str, Any]:
            """``run_turns`` over every ``step``-th turn of the sweep, with prior ``weight``."""
            chosen_turns = np.arange(0, len(offsets), step)
            angles = [offsets[chosen_turns] + est for est, _ in estimates]
            return public(run_turns(catalogue_vectors, flat[:, chosen_turns], angles, probabilities, weight, agree))

        for step in sorted({s for s in (1, 2, 3, 4) if len(offsets) % s == 0 and len(offsets) // s >= 4}):
            for weight in TURN_PRIOR_WEIGHTS:
                name = f"{len(offsets) // step} turns, prior {weight:g}"
                sweep[name] = turns_run(step, weight)
                say(f"sweep {name}: " + json.dumps(sweep[name]))
        variants[f"{chosen_name} rotation search"] = sweep
        production = f"{ROTATION_TURNS} turns, prior {ROTATION_PRIOR:g}"
        if production in sweep:  # what the production path (Pipeline.query_turns) does
            rotation_search = {"turns": ROTATION_TURNS, "prior": ROTATION_PRIOR, **sweep[production]}
            without = turns_run(len(offsets) // ROTATION_TURNS, ROTATION_PRIOR, agree=0.0)
            rotation_search["without_metadata_agreement"] = without
    if oracle_rotation and queries:
        truth_upright = [rotate_upright(q.cutout, -q.angle) for q in queries]
        oracle_desc = embedder.descriptors(truth_upright)
        proj = projections.get("learned")
        apply = proj.apply if proj is not None and chosen_name != "gem" else embedder.embed_descriptors
        oracle = run(apply(catalogue_desc), apply(oracle_desc))
        variants[f"{chosen_name} (true rotation)"] = public(oracle)

    figures: dict[str, Any] = {
        "dataset": str(dataset),
        "seed": seed,
        "records": len(records),
        "catalogue_images": len(ids),
        "train_types": len(train_types & set(items)),
        "test_types_queried": len({type_key(q.record) for q in queries}),
        "query_photos": len(queries),
        "segmenter": segmenter,
        "embedding": f"{embedder.version}" + ("" if chosen_name == "gem" else f"+{chosen_name.split('+', 1)[1]}"),
        "recall_at_1": chosen["recall_at_1"],
        "recall_at_8": chosen["recall_at_8"],
        "recall_at_1_pair": chosen["recall_at_1_pair"],
        "recall_at_8_pair": chosen["recall_at_8_pair"],
        "rotation_search": rotation_search,
        "variants": variants,
        "rotation": {
            "median_error_deg": round(float(np.median(errors)), 2) if errors else None,
            "within_20deg": round(float(np.mean(np.array(errors) <= 20)), 4) if errors else None,
            "fit": orientation_fit_metrics,
            "fit_seconds": round(orientation_fit_seconds, 1),
            "tta": orientation_tta,
        },
    }
    if seg_model is not None:
        figures["segmentation_misses"] = segmentation_misses
        # The phone-like queries' own masks (bench.segmentation measures the collector cut-outs).
        figures["segmentation_iou_mean"] = round(float(np.mean(segmentation_ious)), 4) if segmentation_ious else None

    # --- Baseline: zero-shot global-average features, no rotation handling ----------------------
    if baseline and catalogue_base is not None and queries:
        say("baseline")
        base = run(catalogue_base, backbone.features([q.cutout for q in queries]))
        figures["baseline_zero_shot"] = public(base)
        say("baseline: " + json.dumps(figures["baseline_zero_shot"]))

    # --- Side and metadata (optional parts) -----------------------------------------------------
    say("figures so far: " + json.dumps({k: v for k, v in figures.items() if k != "variants"}))
    figures["side_accuracy"] = _side_accuracy(models_dir, backbone, queries, upright)
    if side_training is not None and queries:
        figures["side_accuracy_held_out"] = _side_held_out(
            side_training,
            torch.stack([torch.stack(per_turn) for per_turn in turn_stems]),
            queries,
            offsets,
            features=backbone.module,
            probabilities=probabilities,
            estimates=estimates,
            seed=seed,
        )
    figures["metadata_accuracy"], figures["metadata_accuracy_at_coverage"] = _metadata_accuracy(
        chosen["_index"], chosen["_query_vectors"], queries, records
    )

    # --- Latency of the production path ---------------------------------------------------------
    if latency_samples and query_records:
        say(f"latency on {latency_samples} queries")
        chosen_projection = projections.get(chosen_name.split("+", 1)[1]) if "+" in chosen_name else None
        figures["latency_s"] = _latency(
            models_dir,
            query_records[:latency_samples],
            estimator,
            chosen_projection,
            seed=seed,
            embed_config=embed_config,
            turns=ROTATION_TURNS,
        )
    figures["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["seconds"] = round(time.monotonic() - started, 1)
    return figures


def _side_accuracy(models_dir, backbone, queries: list[QueryImage], upright: list[Image.Image]) -> dict[str, Any]:
    """Accuracy of the active version's side classifier on the upright query cut-outs (skipped when untrained)."""
    from mlcore.modelfiles import ModelFileError
    from mlcore.side import SideClassifier

    try:
        classifier = SideClassifier(models_dir)
        predictions = classifier.predict(upright) if upright else []
    except ModelFileError as exc:
        return {"skipped": str(exc)}
    correct = [p[0] == q.side for p, q in zip(predictions, queries, strict=True)]
    return {
        "accuracy": round(float(np.mean(correct)), 4) if correct else None,
        "note": "trained on the active version's catalogue, which may include the query types",
    }


def _side_held_out(
    training,
    turn_stems: torch.Tensor,
    queries: list[QueryImage],
    offsets: np.ndarray,
    *,
    features: torch.nn.Module,
    probabilities: np.ndarray | None = None,
    estimates: list[tuple[float, float]] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Side accuracy of a network fine-tuned on train types only (clean + query-like cut-outs), on the queries.

    ``single``: the estimator's upright cut-out, as ``Pipeline.process`` classifies; ``turns_N``: the
    obverse probability averaged over N of the rotation search's turns (a wrong upright then matters less);
    ``turns_N_weighted``: averaged with each turn weighed by how plausible the orientation estimator
    finds it (``probabilities``, ``estimates``). Pessimistic for production, where the classifier has
    also seen other specimens of the query's type (and, on a small subset, far fewer coins).
    """
    from mlcore.side import side_net_fit

    stems, side_names, groups = training
    net, metrics = side_net_fit(stems, (side_names == "obverse").astype(int), groups, features=features, seed=seed)
    truth = np.array([q.side == "obverse" for q in queries])
    p = net.probability_obverse(turn_stems.reshape(-1, *turn_stems.shape[2:]))
    p = p.reshape(len(queries), len(offsets))
    result: dict[str, Any] = {"single": round(float(np.mean((p[:, 0] >= 0.5) == truth)), 4)}
    for step in (2, 1):
        if len(offsets) % step == 0 and len(offsets) // step > 1:
            mean = p[:, ::step].mean(axis=1)
            result[f"turns_{len(offsets) // step}"] = round(float(np.mean((mean >= 0.5) == truth)), 4)
    if probabilities is not None and estimates is not None and len(offsets) > 1:
        from mlcore.retrieval import turn_probabilities

        weights_of_turns = np.array(
            [
                turn_probabilities(pq, (est + offsets) % 360.0)
                for pq, (est, _) in zip(probabilities, estimates, strict=True)
            ]
        )
        weighted = (p * weights_of_turns).sum(axis=1) / np.maximum(weights_of_turns.sum(axis=1), 1e-12)
        result[f"turns_{len(offsets)}_weighted"] = round(float(np.mean((weighted >= 0.5) == truth)), 4)
    # Both photos of a coin decided together (``pair_obverse_first``), as the worker does for a pair.
    from mlcore.side import pair_obverse_first

    photos_of: dict[str, dict[str, int]] = defaultdict(dict)
    for i, q in enumerate(queries):
        photos_of[q.record.record_id][q.side] = i
    pairs = [(s["obverse"], s["reverse"]) for s in photos_of.values() if len(s) == 2]
    if pairs:
        alone = [(p[o, 0] >= 0.5) and (p[r, 0] < 0.5) for o, r in pairs]
        together = [(pair_obverse_first(float(p[o, 0]), float(p[r, 0])) or 0.0) > 0.5 for o, r in pairs]
        result["pairs"] = len(pairs)
        result["pair_both_right_alone"] = round(float(np.mean(alone)), 4)
        result["pair_both_right_together"] = round(float(np.mean(together)), 4)
    result["fit_held_out_accuracy"] = metrics.get("held_out_accuracy")
    return result


def _metadata_accuracy(index: InMemoryIndex, query_vectors, queries, records) -> tuple[dict, dict]:
    """Similarity-weighted vote of the 20 nearest catalogue images (own images excluded), per field.

    Returns (accuracy, accuracy of the 50 / 80 / 100 % answers with the largest vote share) per field:
    the raw share ranks answers as the calibrated confidence does (calibration is monotone).
    """
    from mlcore.metadata import calibration_report, vote

    if query_vectors is None or not queries:
        return {"skipped": "no queries"}, {}
    labels_of = {r.record_id: r.labels for r in records}
    outcomes: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for vector, query in zip(query_vectors, queries, strict=True):
        exclude = {f"{query.record.record_id}:{s}" for s in SIDES}
        hits = index.search(vector, 20, exclude=exclude)
        neighbours = [(labels_of[h.image_id.rsplit(":", 1)[0]], h.score) for h in hits]
        predicted = vote(neighbours, fields=METADATA_FIELDS)
        for name in METADATA_FIELDS:
            truth = query.record.labels.get(name)
            if truth:
                guess = predicted.get(name)
                outcomes[name].append((guess.raw if guess else 0.0, guess is not None and guess.value == truth))
    accuracy = {name: round(float(np.mean([hit for _, hit in v])), 4) for name, v in outcomes.items() if v}
    at_coverage = {
        name: calibration_report(*zip(*v, strict=True))["accuracy_at_coverage"] for name, v in outcomes.items() if v
    }
    return accuracy, at_coverage


def _latency(
    models_dir, records, estimator, projection, *, seed: int, embed_config: Any = None, turns: int = 1
) -> dict[str, Any]:
    """Per-step seconds (p50/p95) of decode → segment → cut out → upright → embed (→ turns) on degraded photos.

    ``turns`` > 1 adds the rotation search's extra embeddings (``Pipeline.turn_embeddings``), as in production.
    """
    from mlcore.cutout import make_cutout
    from mlcore.embed import Embedder, embed_turns
    from mlcore.imageio import decode_image
    from mlcore.modelfiles import ModelFileError
    from mlcore.segment import Segmenter

    segmenter = Segmenter(models_dir)
    embedder = Embedder(
        models_dir, projection=projection, use_trained=False, **({"config": embed_config} if embed_config else {})
    )
    try:
        segmenter.ensure_loaded()
    except ModelFileError as exc:
        return {"skipped": str(exc)}
    embedder.ensure_loaded()
    steps: dict[str, list[float]] = defaultdict(list)
    for record in records:
        side, path = sorted(record.images.items())[0]
        rng = np.random.default_rng(int(hash_unit(seed, "latency", record.record_id) * 2**32))
        with Image.open(path) as raw:
            photo = degrade_with_truth(raw.convert("RGB"), rng).image
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
        t0 = time.perf_counter()
        image = decode_image(data)
        t1 = time.perf_counter()
        found = segmenter.find_objects(image)
        t2 = time.perf_counter()
        detection = found[0] if found else mask_detection(np.ones((image.height, image.width), dtype=bool))
        cut = make_cutout(image, detection).on_neutral
        t3 = time.perf_counter()
        angle, _ = estimator.estimate(cut)
        up = rotate_upright(cut, angle)
        t4 = time.perf_counter()
        embedder.embed([up])
        t5 = time.perf_counter()
        if turns > 1:  # the production rotation search: the other turns of the upright cut-out
            embed_turns(embedder, up, sweep_offsets(turns)[1:])
        t6 = time.perf_counter()
        for name, seconds in (
            ("decode", t1 - t0),
            ("segment", t2 - t1),
            ("cutout", t3 - t2),
            ("orientation", t4 - t3),
            ("embed", t5 - t4),
            ("decode_to_embedding", t5 - t0),
            (f"rotation_turns_{turns}", t6 - t5),
            ("decode_to_turns", t6 - t0),
        ):
            steps[name].append(seconds)
    return {name: _percentiles(values) for name, values in steps.items()} | {"samples": len(records)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="folder in the ans-roman layout")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--limit", type=int, default=None, help="records (whole types, seeded choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--segmenter", choices=("truth", "model"), default="truth")
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--orientation-images", type=int, default=800)
    parser.add_argument("--orientation-rotations", type=int, default=3)
    parser.add_argument("--orientation-tta", type=int, default=8, choices=(1, 2, 4, 8))
    parser.add_argument(
        "--rotation-sweep",
        type=int,
        default=ROTATION_TURNS,
        help="also search every query turned by N offsets and compare fewer turns and priors (0 = off; "
        "default: the production number of turns)",
    )
    parser.add_argument("--no-projection", action="store_true")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--oracle-rotation", action="store_true", help="also score queries turned by the true angle")
    parser.add_argument("--latency-samples", type=int, default=30)
    parser.add_argument("--input-size", type=int, default=None, help="embedding input size (default: the recipe's)")
    parser.add_argument("--lowpass", type=int, default=None, help="reduce every cut-out to this many px first")
    parser.add_argument("--soften", type=float, default=None, help="then blur it by this radius")
    parser.add_argument("--layer", type=int, default=None, help="backbone block whose maps are pooled (16-18)")
    parser.add_argument("--grid", type=int, default=None, help="pool each cell of a grid×grid split separately")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from dataclasses import replace

    from mlcore.embed import DEFAULT_CONFIG

    overrides = {
        name: value
        for name, value in (
            ("input_size", args.input_size),
            ("lowpass", args.lowpass),
            ("soften", args.soften),
            ("layer", args.layer),
            ("grid", args.grid),
        )
        if value is not None
    }
    figures = evaluate(
        args.dataset,
        embed_config=replace(DEFAULT_CONFIG, **overrides) if overrides else None,
        models_dir=args.models_dir,
        limit=args.limit,
        seed=args.seed,
        train_fraction=args.train_fraction,
        segmenter=args.segmenter,
        orientation_images=args.orientation_images,
        orientation_rotations=args.orientation_rotations,
        orientation_tta=args.orientation_tta,
        rotation_sweep=args.rotation_sweep,
        projection=not args.no_projection,
        baseline=not args.no_baseline,
        oracle_rotation=args.oracle_rotation,
        latency_samples=args.latency_samples,
        progress=(lambda message: None) if args.quiet else None,
    )
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
