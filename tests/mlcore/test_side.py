"""Side classifier: the linear model and its calibration (synthetic), then real coins (held out)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mlcore.side import SideClassifier, SideWeights, augment_like_query, pair_obverse_first, side_weights_fit


def _blobs(rng: np.random.Generator, n: int, separation: float = 1.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    features = rng.normal(0, 1, (n, 16))
    features[:, 0] += np.where(labels == 1, separation, -separation)
    groups = np.arange(n) // 2  # pairs of rows belong to one "specimen"
    return features, labels, groups


class TestSideWeights:
    def test_it_learns_a_separable_problem_with_calibrated_probabilities(self):
        rng = np.random.default_rng(0)
        features, labels, groups = _blobs(rng, 600)
        weights, metrics, oof = side_weights_fit(features, labels, groups, seed=0, c=1.0)
        assert metrics["oof_accuracy"] > 0.9
        test_x, test_y, _ = _blobs(np.random.default_rng(1), 2000)
        p = weights.probability_obverse(test_x)
        assert np.mean((p >= 0.5) == (test_y == 1)) > 0.9
        # Calibrated: among predictions near 0.8 confident, about 80% are right.
        confidence = np.maximum(p, 1 - p)
        right = (p >= 0.5) == (test_y == 1)
        band = (confidence > 0.7) & (confidence < 0.9)
        assert abs(right[band].mean() - confidence[band].mean()) < 0.1
        assert oof.shape == (600,)

    def test_it_scores_evaluation_rows_with_the_fold_that_did_not_see_them(self):
        rng = np.random.default_rng(2)
        features, labels, groups = _blobs(rng, 200, separation=3.0)
        extra = {"phone": (features[:20] * 1.1, labels[:20], groups[:20])}
        _, metrics, _ = side_weights_fit(features, labels, groups, extra=extra)
        assert metrics["samples_phone"] == 20
        assert metrics["oof_accuracy_phone"] > 0.8

    def test_it_needs_both_sides(self):
        with pytest.raises(ValueError, match="both sides"):
            side_weights_fit(np.zeros((4, 3)), np.ones(4, dtype=int), np.arange(4))

    def test_it_round_trips_through_a_file_without_pickle(self, tmp_path):
        rng = np.random.default_rng(3)
        features, labels, groups = _blobs(rng, 100)
        weights, _, _ = side_weights_fit(features, labels, groups)
        path = SideClassifier.save(weights, tmp_path)
        loaded = SideWeights.load(path)
        np.testing.assert_allclose(loaded.probability_obverse(features), weights.probability_obverse(features))


class TestAugment:
    def test_it_is_seeded_and_keeps_the_frame(self):
        image = Image.linear_gradient("L").convert("RGB").resize((128, 128))
        a = augment_like_query(image, np.random.default_rng(5))
        b = augment_like_query(image, np.random.default_rng(5))
        assert a.size == image.size
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(image))

    def test_a_residual_turns_copies_anywhere_within_it(self):
        from PIL import ImageDraw

        image = Image.new("RGB", (128, 128), (128, 128, 128))
        ImageDraw.Draw(image).rectangle([14, 56, 114, 72], fill=(10, 10, 10))  # a dark horizontal bar

        def bar_angle(copy: Image.Image) -> float:
            rows, cols = np.nonzero(np.asarray(copy.convert("L"), dtype=np.float32) < 70)
            x, y = cols - cols.mean(), rows - rows.mean()
            return float(np.degrees(0.5 * np.arctan2(2 * (x * y).mean(), (x * x).mean() - (y * y).mean())))

        rng = np.random.default_rng(0)
        turned = [
            abs(bar_angle(augment_like_query(image, rng, turn_probability=0.0, residual=22.5))) for _ in range(30)
        ]
        assert max(turned) <= 25.0
        assert max(turned) >= 15.0  # uniform within ±22.5°: 30 copies all below 15° has odds (2/3)^30
        rng = np.random.default_rng(0)
        default = [abs(bar_angle(augment_like_query(image, rng, turn_probability=0.0))) for _ in range(30)]
        assert np.median(default) < np.median(turned)


class TestSideClassifierModel:
    def test_without_training_it_names_the_command(self, tmp_path):
        from mlcore.setup_models import ModelFileError

        with pytest.raises(ModelFileError, match="mlcore.train"):
            SideClassifier(tmp_path).predict_features(np.zeros((1, 4)))


@pytest.mark.data
@pytest.mark.slow
class TestOnRealCoins:
    def test_it_predicts_the_side_of_held_out_real_coins(self, ans_dir, tmp_path):
        from mlcore.dataset import load_ans_layout
        from mlcore.embed import Embedder
        from mlcore.train import catalogue_cutout
        from tests.mlcore.test_pipeline import REPO_MODELS

        if not (REPO_MODELS / "manifest.json").exists():
            pytest.skip("pretrained models not prepared (run make models)")
        records = [r for r in load_ans_layout(ans_dir) if len(r.images) == 2]
        chosen = [records[i] for i in np.random.default_rng(0).permutation(len(records))[:60]]
        train, test = chosen[:40], chosen[40:]

        def images(subset):
            rows = [
                (catalogue_cutout(Image.open(path)), side, r.record_id)
                for r in subset
                for side, path in r.images.items()
            ]
            return [row[0] for row in rows], [row[1] for row in rows], [row[2] for row in rows]

        embedder = Embedder(REPO_MODELS, use_trained=False)
        train_images, train_sides, train_groups = images(train)
        weights, metrics = SideClassifier.fit(train_images, train_sides, train_groups, embedder=embedder, seed=0)
        SideClassifier.save(weights, tmp_path)

        test_images, test_sides, _ = images(test)
        rng = np.random.default_rng(1)
        queries = [augment_like_query(image, rng, turn_probability=0.0) for image in test_images]
        classifier = SideClassifier(REPO_MODELS, embedder=embedder)
        classifier._model = SideWeights.load(tmp_path / "side.npz")  # this test's weights, not the active version
        clean = classifier.predict(test_images)
        degraded = classifier.predict(queries)
        clean_accuracy = np.mean([p[0] == s for p, s in zip(clean, test_sides, strict=True)])
        degraded_accuracy = np.mean([p[0] == s for p, s in zip(degraded, test_sides, strict=True)])
        assert metrics["samples"] == 160
        # Measured 0.80 (clean) on these 40 coins with the low-pass descriptors; the target (0.98 on
        # degraded photos) is not reached yet, so these bounds only guard against a regression.
        assert clean_accuracy >= 0.75, clean_accuracy
        assert degraded_accuracy >= 0.7, degraded_accuracy
        assert all(0.5 <= p[1] <= 1.0 for p in clean + degraded)


class TestPairObverseFirst:
    def test_a_sure_photo_settles_an_unsure_one(self):
        assert pair_obverse_first(0.5, 0.95) == pytest.approx(0.05)
        assert pair_obverse_first(0.99, 0.5) == pytest.approx(0.99)

    def test_two_photos_read_as_obverse_go_to_the_likelier_assignment(self):
        q = pair_obverse_first(0.9, 0.6)
        assert q == pytest.approx(0.36 / (0.36 + 0.06))
        assert pair_obverse_first(0.6, 0.9) == pytest.approx(1 - q)

    def test_a_declared_side_is_certain_and_two_equal_readings_undecided(self):
        assert pair_obverse_first(1.0, 0.8) == 1.0
        assert pair_obverse_first(0.7, 0.7) == 0.5
        assert pair_obverse_first(1.0, 1.0) is None
