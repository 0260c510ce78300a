"""The evaluation: record selection and type split (pure), and a small real run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.evaluate import estimate_from_probabilities, main, select_records, split_types, sweep_offsets, type_key
from mlcore.dataset import CatalogueRecord
from mlcore.modelfiles import ModelFileError, check_file

MODELS = Path(__file__).resolve().parents[2] / "var" / "models"


def _records() -> list[CatalogueRecord]:
    records = []
    for t in range(10):
        for s in range(1 + t % 3):
            records.append(CatalogueRecord(f"r{t}-{s}", f"type{t}"))
    records.append(CatalogueRecord("untyped", ""))
    return records


class TestSelection:
    def test_a_limit_keeps_types_whole_where_it_can_and_mixes_in_singletons(self):
        chosen = select_records(_records(), limit=8, seed=0)
        assert len(chosen) == 8
        types = {type_key(r) for r in chosen}
        assert any(sum(type_key(r) == t for r in _records()) == 1 for t in types)  # a distractor
        assert any(sum(type_key(r) == t for r in chosen) > 1 for t in types)  # a queryable type

    def test_the_type_split_is_seeded_and_roughly_the_fraction(self):
        records = _records()
        first = split_types(records, seed=3, train_fraction=0.5)
        assert first == split_types(records, seed=3, train_fraction=0.5)
        assert first != split_types(records, seed=4, train_fraction=0.5)
        assert split_types(records, seed=3, train_fraction=0.0) == set()
        assert len(split_types(records, seed=3, train_fraction=1.0)) == 11

    def test_an_untyped_specimen_is_an_item_of_its_own(self):
        assert type_key(CatalogueRecord("x1", "")) == "record:x1"


class TestRotationSweep:
    def test_the_sweep_starts_at_the_estimate_and_covers_the_circle_evenly(self):
        assert sweep_offsets(4).tolist() == [0.0, 90.0, 180.0, 270.0]
        assert len(sweep_offsets(24)) == 24 and sweep_offsets(24)[1] == 15.0

    def test_the_estimate_from_probabilities_is_the_estimators_own(self):
        import numpy as np

        from mlcore.orientation import BINS, OrientationEstimator

        p = np.full(BINS, 0.1 / (BINS - 1))
        p[BINS // 4] = 0.9  # looks turned by 90° counter-clockwise
        angle, confidence = estimate_from_probabilities(p)
        assert angle == pytest.approx(270.0, abs=1.0) and confidence > 0.85

        class Fixed(OrientationEstimator):
            def probabilities(self, images):
                return np.stack([p for _ in images])

        assert Fixed(MODELS, weights=object()).estimate(None) == pytest.approx((angle, confidence))


@pytest.mark.slow
@pytest.mark.data
def test_it_runs_on_a_small_real_subset_and_reports_sane_figures(ans_dir, tmp_path, capsys):
    try:
        check_file(MODELS, "mobilenetv2-imagenet")
    except ModelFileError as exc:
        pytest.skip(f"models folder not prepared: {exc}")
    out = tmp_path / "figures.json"
    argv = ["--dataset", str(ans_dir), "--limit", "30", "--out", str(out), "--quiet"]
    argv += ["--orientation-images", "12", "--orientation-rotations", "2", "--latency-samples", "1"]
    argv += ["--rotation-sweep", "4", "--segmenter", "model"]
    assert main(argv) == 0
    figures = json.loads(out.read_text())
    assert figures == json.loads(capsys.readouterr().out)
    assert figures["records"] == 30
    assert figures["query_photos"] > 0
    for key in ("recall_at_1", "recall_at_8", "recall_at_8_pair"):
        assert 0.0 <= figures[key] <= 1.0
    assert figures["recall_at_1"] <= figures["recall_at_8"]
    assert 0.0 <= figures["rotation"]["median_error_deg"] <= 180.0
    assert set(figures["baseline_zero_shot"]) >= {"recall_at_1", "recall_at_8", "recall_at_8_pair"}
    assert figures["latency_s"]["decode_to_embedding"]["p50"] > 0
    assert figures["latency_s"]["decode_to_turns"]["p50"] >= figures["latency_s"]["decode_to_embedding"]["p50"]
    # The metadata agreement's effect is reported: the same search without it.
    plain = next(v for name, v in figures["variants"].items() if name.endswith("without metadata agreement"))
    assert 0.0 <= plain["recall_at_1"] <= plain["recall_at_8"] <= 1.0
    sweep = next(v for name, v in figures["variants"].items() if name.endswith("rotation search"))
    assert {"4 turns, prior 0"} <= set(sweep)
    for variant in sweep.values():
        assert 0.0 <= variant["recall_at_1"] <= variant["recall_at_8"] <= 1.0
        assert 0.0 <= variant["recall_at_8_pair"] <= 1.0
    side = figures["side_accuracy_held_out"]
    assert side["pairs"] > 0
    assert 0.0 <= side["pair_both_right_alone"] <= 1.0 and 0.0 <= side["pair_both_right_together"] <= 1.0
    assert figures["peak_memory_mb"] > 0
    assert set(figures["metadata_accuracy"]) == set(figures["metadata_accuracy_at_coverage"]) >= {"material"}
    for field, accuracy in figures["metadata_accuracy"].items():
        at_coverage = figures["metadata_accuracy_at_coverage"][field]
        assert 0.0 <= accuracy == at_coverage["100%"] <= 1.0
    # U^2-Net-p cut the queries out (not their known masks): its masks against those.
    assert figures["segmenter"] == "model" and figures["segmentation_misses"] >= 0
    assert 0.8 <= figures["segmentation_iou_mean"] <= 1.0
