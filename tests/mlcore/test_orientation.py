"""Turning cut-outs upright: angle arithmetic, the estimator's round trip, and a tiny fit on real coins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mlcore.orientation import (
    BINS,
    OrientationEstimator,
    angle_from_probabilities,
    angular_error,
    rotate_upright,
)
from mlcore.setup_models import ModelFileError

MODELS = Path(__file__).resolve().parents[2] / "var" / "models"


def _arrow() -> Image.Image:
    image = Image.new("RGB", (96, 96), (128, 128, 128))
    ImageDraw.Draw(image).polygon([(48, 8), (70, 50), (26, 50)], fill=(250, 250, 250))
    return image


class TestAngles:
    def test_angular_error_wraps_around(self):
        assert angular_error(350, 10) == pytest.approx(20)
        assert angular_error(10, 190) == pytest.approx(180)
        assert angular_error(-90, 270) == pytest.approx(0)

    def test_a_peaked_distribution_gives_its_angle_with_high_confidence(self):
        p = np.full(BINS, 0.001)
        p[9] = 0.9  # 9 bins of 10° = 90°
        p[10] = 0.1
        p /= p.sum()
        angle, confidence = angle_from_probabilities(p)
        assert 90 < angle < 95
        assert confidence > 0.9

    def test_a_flat_distribution_has_low_confidence(self):
        _, confidence = angle_from_probabilities(np.full(BINS, 1 / BINS))
        assert confidence < 0.2

    def test_rotate_upright_turns_counter_clockwise_and_keeps_size(self):
        turned = rotate_upright(_arrow(), 90)  # tip (top) moves to the left
        assert turned.size == (96, 96)
        grey = np.asarray(turned.convert("L"), dtype=float)
        assert grey[40:56, 5:30].mean() > grey[40:56, 66:91].mean() + 30
        assert tuple(np.asarray(turned)[0, 0]) == (128, 128, 128)


@pytest.fixture(scope="module")
def backbone():
    from mlcore.backbone import Backbone

    model = Backbone(MODELS)
    try:
        model.ensure_loaded()
    except ModelFileError as exc:
        pytest.skip(f"models folder not prepared: {exc}")
    return model


@pytest.mark.data
def test_a_tiny_fit_turns_rotated_catalogue_coins_upright(ans_dir, backbone, tmp_path):
    from mlcore.evaluate import catalogue_cutout

    paths = sorted((ans_dir / "images").glob("*.obv.jpg"))[:10]
    images = []
    for path in paths:
        with Image.open(path) as raw:
            images.append(catalogue_cutout(raw).resize((224, 224)))
    estimator, metrics = OrientationEstimator.fit(
        images, np.random.default_rng(0), backbone=backbone, rotations=12, holdout=0.0
    )
    assert metrics["samples"] == 120
    rng = np.random.default_rng(1)
    errors = []
    for image in images[:6]:
        angle = float(rng.uniform(0, 360))
        estimate, confidence = estimator.estimate(rotate_upright(image, angle))
        assert 0.0 <= confidence <= 1.0
        errors.append(angular_error(estimate, -angle))
    assert np.median(errors) <= 30, errors

    # Saved and loaded from a folder, it gives the same answer.
    estimator.save(tmp_path)
    loaded = OrientationEstimator(MODELS, weights_dir=tmp_path, backbone=backbone)
    probe = rotate_upright(images[0], 123)
    assert loaded.estimate(probe) == pytest.approx(estimator.estimate(probe))


def test_it_names_the_fix_when_no_weights_exist(tmp_path, backbone):
    with pytest.raises(ModelFileError):
        OrientationEstimator(MODELS, weights_dir=tmp_path, backbone=backbone).estimate(_arrow())
