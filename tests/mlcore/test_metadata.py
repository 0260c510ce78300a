"""Metadata vote maths, calibration and the trained-model wrapper (synthetic inputs, no images)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlcore.metadata import (
    CalibrationMap,
    MetadataModel,
    MetadataPredictor,
    agreement_bonuses,
    calibration_fit,
    calibration_report,
    metadata_fields,
    metadata_fit,
    value_shares,
    vote,
)


class TestVote:
    def test_it_weights_neighbours_by_similarity(self):
        neighbours = [({"mint": "Rome"}, 0.90), ({"mint": "Antioch"}, 0.80)]
        result = vote(neighbours, temperature=0.05)
        expected = 1.0 / (1.0 + math.exp(-0.10 / 0.05))
        assert result["mint"].value == "Rome"
        assert result["mint"].raw == pytest.approx(expected)
        assert result["mint"].confidence == pytest.approx(expected)  # no calibration given
        assert result["mint"].support == 2

    def test_many_weaker_neighbours_can_outvote_one_close_one(self):
        neighbours = [({"material": "Silver"}, 0.90)] + [({"material": "Bronze"}, 0.88)] * 3
        assert vote(neighbours, temperature=0.05)["material"].value == "Bronze"
        # A colder temperature trusts the closest neighbour more.
        assert vote(neighbours, temperature=0.005)["material"].value == "Silver"

    def test_it_ignores_missing_and_empty_values_per_field(self):
        neighbours = [({"mint": "Rome", "denomination": ""}, 0.9), ({"authority": "Hadrian"}, 0.5)]
        result = vote(neighbours)
        assert set(result) == {"mint", "authority"}
        assert result["mint"].raw == pytest.approx(1.0)
        assert result["authority"].support == 1

    def test_it_keeps_only_the_k_most_similar(self):
        neighbours = [({"mint": "Rome"}, 0.5)] * 5 + [({"mint": "Lyon"}, 0.9)]
        assert vote(neighbours, k=1)["mint"].value == "Lyon"
        assert vote(neighbours, k=6, temperature=1.0)["mint"].value == "Rome"

    def test_ties_do_not_depend_on_neighbour_order(self):
        a = [({"mint": "Rome"}, 0.7), ({"mint": "Lyon"}, 0.7)]
        assert vote(a)["mint"].value == vote(list(reversed(a)))["mint"].value

    def test_it_restricts_to_requested_fields(self):
        result = vote([({"mint": "Rome", "material": "Gold"}, 0.9)], fields=["material"])
        assert set(result) == {"material"}

    def test_no_neighbours_predict_nothing(self):
        assert vote([]) == {}

    def test_it_applies_the_calibration_map(self):
        calibration = {"mint": CalibrationMap([0.0, 1.0], [0.0, 0.5])}
        result = vote([({"mint": "Rome", "material": "Gold"}, 0.9)], calibration=calibration)
        assert result["mint"].confidence == pytest.approx(0.5)
        assert result["material"].confidence == pytest.approx(1.0)

    def test_huge_similarities_do_not_overflow(self):
        result = vote([({"mint": "Rome"}, 1000.0), ({"mint": "Lyon"}, 999.0)], temperature=0.001)
        assert result["mint"].raw == pytest.approx(1.0)


class TestAgreement:
    NEIGHBOURS = [
        ({"authority": "Nero", "mint": "Rome"}, 0.90),
        ({"authority": "Nero", "mint": "Lyon"}, 0.88),
        ({"authority": "Galba", "mint": "Rome"}, 0.80),
        ({"authority": "Nero", "category": "Imperial"}, 0.70),
    ]

    def test_shares_are_the_votes_of_every_value_and_sum_to_one(self):
        shares = value_shares(self.NEIGHBOURS)
        assert set(shares) == {"authority", "mint"}  # only the fields the agreement uses
        for values in shares.values():
            assert sum(values.values()) == pytest.approx(1.0)
        winner = vote(self.NEIGHBOURS)["authority"]
        assert shares["authority"][winner.value] == pytest.approx(winner.raw)
        assert shares["authority"]["Galba"] == pytest.approx(1 - winner.raw)

    @staticmethod
    def pool(near_ruler: str, far_ruler: str, far: int = 30):
        """Two near images of ``near_ruler``'s items, then ``far`` images of ``far_ruler``'s."""
        hits = [("A", {"authority": near_ruler}, 0.90), ("B", {"authority": near_ruler}, 0.89)]
        hits += [(f"F{i}", {"authority": far_ruler}, 0.85 - i * 0.002) for i in range(far)]
        hits += [("X", {"authority": "Otho"}, 0.80)]
        return hits

    def test_a_ruler_the_nearest_images_point_to_more_than_the_pool_gains(self):
        bonus = agreement_bonuses(self.pool("Nero", "Galba"))
        assert bonus["A"] == bonus["B"] > 0  # same ruler, same bonus
        assert bonus["F0"] < 0  # the pool's common ruler is under-represented near the query
        assert bonus["A"] > bonus["X"] and bonus["F0"] < bonus["X"] <= 0

    def test_a_ruler_that_fills_the_whole_catalogue_is_no_evidence(self):
        everywhere = agreement_bonuses(self.pool("Nero", "Nero"))["A"]
        assert 0 <= everywhere < 0.2 * agreement_bonuses(self.pool("Nero", "Galba"))["A"]

    def test_the_bonus_scales_with_the_query_s_own_spread_of_similarities(self):
        hits = self.pool("Nero", "Galba")
        squeezed = [(item, labels, 0.9 + (score - 0.9) / 10) for item, labels, score in hits]
        wide, narrow = agreement_bonuses(hits), agreement_bonuses(squeezed)
        assert 0 < narrow["A"] < wide["A"] / 3

    def test_no_hits_no_labels_or_no_weight_no_bonus(self):
        assert agreement_bonuses([]) == {}
        assert agreement_bonuses([("A", {}, 0.9), ("B", {}, 0.8)]) == {}
        assert agreement_bonuses(self.pool("Nero", "Galba"), weight=0) == {}


class TestCalibration:
    def test_it_maps_overconfident_shares_to_observed_accuracy(self):
        rng = np.random.default_rng(0)
        raw = rng.uniform(0.3, 1.0, 4000)
        correct = rng.random(4000) < raw**3  # raw shares overstate accuracy
        before = calibration_report(raw, correct)
        mapping = calibration_fit(raw[:2000], correct[:2000])
        after = calibration_report([mapping(r) for r in raw[2000:]], correct[2000:])
        assert before["ece"] > 0.1
        assert after["ece"] < 0.05
        assert mapping(0.9) == pytest.approx(0.9**3, abs=0.08)

    def test_it_is_monotone(self):
        rng = np.random.default_rng(1)
        raw = rng.uniform(0, 1, 500)
        mapping = calibration_fit(raw, rng.random(500) < raw)
        values = [mapping(x) for x in np.linspace(0, 1, 50)]
        assert all(b >= a - 1e-12 for a, b in zip(values, values[1:], strict=False))

    def test_with_few_samples_it_predicts_the_overall_accuracy(self):
        mapping = calibration_fit([0.9, 0.8, 0.95, 0.7], [True, False, True, False])
        assert mapping(0.99) == pytest.approx(0.5)
        assert mapping(0.1) == pytest.approx(0.5)

    def test_report_gives_accuracy_at_coverage(self):
        confidence = [0.9, 0.8, 0.7, 0.6]
        correct = [True, True, False, False]
        report = calibration_report(confidence, correct)
        assert report["accuracy"] == 0.5
        assert report["accuracy_at_coverage"]["50%"] == 1.0
        assert report["coverage_at_0.8"] == 0.5
        assert report["accuracy_at_0.8"] == 1.0


class TestMetadataFit:
    def _queries(self, rng, n=400):
        mints = ["Rome", "Antioch", "Lyon", "Trier"]
        rows = []
        for _ in range(n):
            truth = mints[rng.integers(4)]
            neighbours = []
            for _ in range(10):
                right = rng.random() < 0.6
                value = truth if right else mints[rng.integers(4)]
                neighbours.append(({"mint": value}, float(rng.uniform(0.6, 0.9) + (0.05 if right else 0.0))))
            rows.append((neighbours, {"mint": truth}))
        return rows

    def test_it_fits_calibration_and_reports_metrics(self, tmp_path):
        rng = np.random.default_rng(2)
        model, metrics = metadata_fit(self._queries(rng), fields=["mint", "material"], temperatures=(0.02, 0.1))
        assert model.temperature in (0.02, 0.1)
        assert set(model.calibration) == {"mint"}  # nothing to learn for material
        field = metrics["fields"]["mint"]
        assert 0.5 < field["raw"]["accuracy"] <= 1.0
        assert field["calibrated"]["ece"] < 0.1
        model.save(tmp_path / "metadata.json")
        loaded = MetadataModel.load(tmp_path / "metadata.json")
        assert loaded.temperature == model.temperature
        assert loaded.calibration["mint"](0.7) == pytest.approx(model.calibration["mint"](0.7))


class TestMetadataFields:
    def test_other_kinds_are_predicted_once_enough_records_carry_two_values(self):
        labels = [{"mint": "Rome", "region": ["Italy", "Syria"][i % 2], "dynasty": "Severan"} for i in range(30)]
        labels += [{"stone": "Onyx"}] * 3
        # region: 30 records, two values; dynasty: one value (nothing to tell apart); stone: 3 records.
        assert metadata_fields(labels) == ["authority", "denomination", "material", "mint", "region"]
        assert "region" not in metadata_fields(labels[1:])  # 29 records are too few

    def test_the_fixed_fields_are_always_there(self):
        assert metadata_fields([]) == ["authority", "denomination", "material", "mint"]


class TestMetadataPredictor:
    def test_without_a_trained_version_it_returns_raw_shares(self, tmp_path):
        predictor = MetadataPredictor(tmp_path)
        result = predictor.predict([({"mint": "Rome", "region": "Italy"}, 0.9), ({"mint": "Rome"}, 0.8)])
        assert result["mint"].value == "Rome"
        assert result["mint"].confidence == pytest.approx(1.0)
        assert "region" not in result  # only the fixed fields until a training has calibrated others
        assert predictor.describe()["version"].endswith("uncalibrated")

    def test_a_trained_version_predicts_the_fields_it_calibrated(self, tmp_path):
        predictor = MetadataPredictor(tmp_path)
        calibration = {"region": CalibrationMap([0.0, 1.0], [0.2, 0.8]), "mint": CalibrationMap.identity()}
        predictor._model = MetadataModel(calibration=calibration)
        result = predictor.predict([({"mint": "Rome", "region": "Italy", "dynasty": "Severan"}, 0.9)])
        assert set(result) == {"mint", "region"}
        assert result["region"].confidence == pytest.approx(0.8)  # calibrated, not the raw share 1.0
