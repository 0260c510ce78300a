"""Enhancement: only small coins, classical filters only (nothing that invents detail)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from mlcore.enhance import enhance


def _disc(size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), (128, 128, 128))
    ImageDraw.Draw(image).ellipse((size // 8, size // 8, size * 7 // 8, size * 7 // 8), fill=(180, 150, 90))
    return image


def _sharpness(image: Image.Image) -> float:
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    return float(np.abs(np.diff(grey, axis=1)).max())


class TestEnhance:
    def test_it_leaves_large_coins_alone(self):
        image = _disc(384)
        out, applied = enhance(image, source_size=900)
        assert applied is False
        assert out is image

    def test_it_upscales_small_photos(self):
        out, applied = enhance(_disc(96))
        assert applied is True
        assert out.size == (384, 384)

    def test_source_size_decides_even_for_an_upscaled_cutout(self):
        _, applied = enhance(_disc(384), source_size=120)
        assert applied is True

    def test_it_sharpens_edges_more_than_plain_resizing(self):
        small = _disc(80)
        out, _ = enhance(small)
        plain = small.resize(out.size, Image.Resampling.BILINEAR)
        assert _sharpness(out) > _sharpness(plain)

    def test_it_invents_nothing_on_a_flat_image(self):
        flat = Image.new("RGB", (100, 100), (120, 110, 90))
        out, applied = enhance(flat)
        array = np.asarray(out, dtype=np.int16)
        assert applied is True
        assert int(np.abs(array - np.array([120, 110, 90])).max()) <= 1

    def test_it_keeps_the_alpha_channel(self):
        rgba = _disc(64).convert("RGBA")
        rgba.putalpha(Image.new("L", (64, 64), 0))
        out, _ = enhance(rgba)
        assert out.mode == "RGBA"
        assert out.getchannel("A").getextrema() == (0, 0)
