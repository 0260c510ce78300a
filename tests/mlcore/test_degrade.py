"""Phone-like degradation: seeded, really changes the photo, and tells the truth about what it did."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mlcore.degrade import degrade_like_phone, degrade_with_truth
from mlcore.segment import object_mask


def _studio_coin(size: int = 300) -> Image.Image:
    """A synthetic studio photo: an asymmetric dark coin on white."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.ellipse([20, 20, size - 20, size - 20], fill=(150, 110, 60))
    draw.rectangle([size // 2, size // 3, size // 2 + 60, size // 3 + 20], fill=(60, 40, 20))
    return image


class TestObjectMask:
    def test_it_finds_the_coin_on_white(self):
        mask = object_mask(_studio_coin())
        assert mask[150, 150] and not mask[5, 5]
        assert 0.56 < mask.mean() < 0.62  # the disc covers π·130²/300² ≈ 0.59 of the frame

    def test_it_uses_a_meaningful_alpha_channel(self):
        rgba = Image.new("RGBA", (50, 50), (10, 10, 10, 0))
        ImageDraw.Draw(rgba).rectangle([10, 10, 30, 30], fill=(10, 10, 10, 255))
        mask = object_mask(rgba)
        assert mask[20, 20] and not mask[40, 40]


class TestDegradeLikePhone:
    def test_it_is_deterministic_per_seed(self):
        image = _studio_coin()
        first = degrade_like_phone(image, np.random.default_rng(7))
        second = degrade_like_phone(image, np.random.default_rng(7))
        assert np.array_equal(np.asarray(first), np.asarray(second))

    def test_different_seeds_give_different_photos(self):
        image = _studio_coin()
        first = degrade_like_phone(image, np.random.default_rng(1))
        second = degrade_like_phone(image, np.random.default_rng(2))
        assert first.size != second.size or not np.array_equal(np.asarray(first), np.asarray(second))

    def test_it_changes_the_image_and_makes_the_coin_small(self):
        photo = degrade_with_truth(_studio_coin(), np.random.default_rng(3))
        x0, y0, x1, y1 = photo.box
        assert 100 <= max(x1 - x0, y1 - y0) <= 200  # the coin is about 150 px across
        assert photo.image.mode == "RGB"
        assert photo.mask.shape == (photo.image.height, photo.image.width)
        # The background is no longer the studio white.
        corners = np.asarray(photo.image)[~photo.mask]
        assert corners.mean() < 245

    def test_the_reported_angle_undoes_the_turn(self):
        image = _studio_coin()
        photo = degrade_with_truth(image, np.random.default_rng(5))
        crop = photo.image.crop(photo.box).rotate(-photo.angle, resample=Image.Resampling.BICUBIC)
        crop = crop.resize(image.size)
        # The dark bar sits right of centre, above the middle, once turned back (angle sign checked).
        dark = np.asarray(crop.convert("L"), dtype=float)
        right_upper = dark[90:130, 150:220].mean()
        left_lower = dark[170:210, 80:150].mean()
        assert right_upper < left_lower - 10


@pytest.mark.data
def test_it_degrades_real_catalogue_photos(ans_dir):
    path = sorted((ans_dir / "images").glob("*.obv.jpg"))[0]
    with Image.open(path) as raw:
        photo = degrade_with_truth(raw.convert("RGB"), np.random.default_rng(0))
    assert photo.mask.mean() > 0.1
    assert 0 <= photo.angle < 360
