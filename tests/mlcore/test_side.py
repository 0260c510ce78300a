"""Side classifier: the fine-tuned network and its calibration (synthetic maps), then real coins (held out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcore.side import (
    CALIBRATION_SHARE,
    SideClassifier,
    SideNet,
    augment_like_query,
    pair_obverse_first,
    side_net_fit,
)


def _stems(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Block-13-like maps whose obverses carry a bright blob in the centre (a "portrait"), reverses a ring."""
    labels = rng.integers(0, 2, n)
    maps = rng.random((n, 96, 8, 8)).astype(np.float32) * 0.5  # 8×8, not 16×16: a faster test, same network
    yy, xx = np.mgrid[:8, :8] - 3.5
    radius = np.sqrt(yy**2 + xx**2)
    channels = np.arange(0, 96, 4)
    for i, label in enumerate(labels):
        pattern = radius < 2 if label == 1 else (radius > 2.5) & (radius < 3.6)
        maps[i][np.ix_(channels, *np.nonzero(pattern))] += 1.5
    groups = np.arange(n) // 2  # pairs of rows belong to one "specimen"
    return torch.from_numpy(maps).half(), labels, groups


@pytest.fixture(scope="module")
def features():
    """An untrained MobileNetV2 ``features`` (batch norms folded), so these tests need no models folder."""
    import torchvision

    from mlcore.backbone import fold_batch_norms

    torch.manual_seed(0)
    return fold_batch_norms(torchvision.models.mobilenet_v2(weights=None).features.eval())


class TestSideNet:
    def test_it_learns_a_separable_problem_and_calibrates_on_held_out_specimens(self, features):
        stems, labels, groups = _stems(np.random.default_rng(0), 400)
        net, metrics = side_net_fit(stems, labels, groups, features=features, seed=0, epochs=4, min_steps=0)
        assert metrics["held_out_samples"] == pytest.approx(400 * CALIBRATION_SHARE, abs=4)
        assert metrics["held_out_accuracy"] > 0.9
        test, test_labels, _ = _stems(np.random.default_rng(1), 200)
        p = net.probability_obverse(test)
        assert np.mean((p >= 0.5) == (test_labels == 1)) > 0.9
        assert float(net.platt[0]) > 0  # calibrated: larger logits still mean obverse

    def test_it_scores_evaluation_rows_only_where_their_specimen_was_held_out(self, features):
        stems, labels, groups = _stems(np.random.default_rng(2), 120)
        extra = {"phone": (stems[:40], labels[:40], groups[:40])}
        kinds = np.array(["clean", "copy"] * 60)
        _, metrics = side_net_fit(
            stems, labels, groups, features=features, epochs=1, min_steps=0, kinds=kinds, extra=extra
        )
        held = metrics["held_out_samples"]
        assert 0 < metrics["held_out_samples_phone"] < 40
        assert metrics["held_out_samples_phone"] <= held
        assert {"held_out_accuracy_clean", "held_out_accuracy_copy"} <= set(metrics)

    def test_it_needs_both_sides(self, features):
        stems, _, groups = _stems(np.random.default_rng(3), 8)
        with pytest.raises(ValueError, match="both sides"):
            side_net_fit(stems, np.ones(8, dtype=int), groups, features=features)

    def test_it_round_trips_through_a_weights_only_file(self, features, tmp_path):
        stems, labels, groups = _stems(np.random.default_rng(4), 64)
        net, _ = side_net_fit(stems, labels, groups, features=features, epochs=1, min_steps=0)
        loaded = SideNet.load(net.save(tmp_path / "side.pt"))
        np.testing.assert_allclose(loaded.probability_obverse(stems), net.probability_obverse(stems), rtol=1e-5)


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
        from mlcore.modelfiles import ModelFileError

        with pytest.raises(ModelFileError, match="mlcore.train"):
            SideClassifier(tmp_path).predict_stems(torch.zeros((1, 96, 16, 16)))


@pytest.mark.data
@pytest.mark.slow
class TestOnRealCoins:
    def test_it_predicts_the_side_of_held_out_real_coins(self, ans_dir, tmp_path):
        """Fine-tuned on 100 real coins, it reads the side of 80 others, clean and degraded.

        Deterministic: seeded, and one torch/ONNX thread in every test process (tests/conftest.py).
        Its bounds come from the spread over seeds 0–5 of this very setup (clean 0.88–0.94, degraded
        0.89–0.94; with 40 training coins it ranged from 0.59 to 0.91 and could not be bounded), less
        a margin for other platforms' arithmetic. The issue's target (0.98 on degraded photos) is
        measured on the whole catalogue by the benchmarks, not here.
        """
        from mlcore.cutout import catalogue_cutout
        from mlcore.dataset import load_ans_layout
        from mlcore.embed import Embedder

        models = Path(__file__).resolve().parents[2] / "var" / "models"
        if not (models / "manifest.json").exists():
            pytest.skip("pretrained models not prepared (run make models)")
        records = [r for r in load_ans_layout(ans_dir) if len(r.images) == 2]
        chosen = [records[i] for i in np.random.default_rng(0).permutation(len(records))[:180]]
        train, test = chosen[:100], chosen[100:]

        def images(subset):
            rows = [
                (catalogue_cutout(Image.open(path)), side, r.record_id)
                for r in subset
                for side, path in r.images.items()
            ]
            return [row[0] for row in rows], [row[1] for row in rows], [row[2] for row in rows]

        embedder = Embedder(models, use_trained=False)
        train_images, train_sides, train_groups = images(train)
        net, metrics = SideClassifier.fit(
            train_images, train_sides, train_groups, embedder=embedder, seed=0, copies=2, epochs=8, min_steps=0
        )

        test_images, test_sides, _ = images(test)
        rng = np.random.default_rng(1)
        queries = [augment_like_query(image, rng, turn_probability=0.0) for image in test_images]
        classifier = SideClassifier(models, embedder=embedder)
        classifier._model = SideNet.load(net.save(tmp_path / "side.pt"))  # this test's weights, not the active one
        clean = classifier.predict(test_images)
        degraded = classifier.predict(queries)
        clean_accuracy = np.mean([p[0] == s for p, s in zip(clean, test_sides, strict=True)])
        degraded_accuracy = np.mean([p[0] == s for p, s in zip(degraded, test_sides, strict=True)])
        assert metrics["samples"] + metrics["held_out_samples"] == 600
        assert clean_accuracy >= 0.82, clean_accuracy
        assert degraded_accuracy >= 0.82, degraded_accuracy
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
