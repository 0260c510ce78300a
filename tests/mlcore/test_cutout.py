"""Cutting a detected object out: size, modes, centring, margin and padding at the border."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mlcore.cutout import NEUTRAL, crop_box, make_cutout
from mlcore.segment import detections_from_probability


def _photo_with_disc(size, centre, radius, colour=(200, 150, 40), background=(20, 60, 200)):
    """A photo with one disc and the matching detection (found from the exact disc mask)."""
    image = Image.new("RGB", size, background)
    ImageDraw.Draw(image).ellipse(
        (centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius), fill=colour
    )
    truth = np.all(np.asarray(image) == colour, axis=-1).astype(np.float32)
    (detection,) = detections_from_probability(truth, image_size=size)
    return image, detection


def _alpha_bbox(cutout) -> tuple[int, int, int, int]:
    alpha = np.asarray(cutout.rgba.getchannel("A"))
    rows, cols = np.flatnonzero((alpha > 127).any(axis=1)), np.flatnonzero((alpha > 127).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


class TestMakeCutout:
    def test_it_returns_square_rgba_and_rgb_images_of_the_requested_size(self):
        image, detection = _photo_with_disc((640, 480), (300, 220), 120)
        cutout = make_cutout(image, detection, size=256)
        assert cutout.rgba.size == (256, 256) and cutout.rgba.mode == "RGBA"
        assert cutout.on_neutral.size == (256, 256) and cutout.on_neutral.mode == "RGB"
        assert cutout.scale == pytest.approx(256 / (cutout.box[2] - cutout.box[0]))
        assert cutout.box[2] - cutout.box[0] == cutout.box[3] - cutout.box[1]

    def test_it_centres_the_object(self):
        image, detection = _photo_with_disc((800, 600), (150, 420), 90)
        cutout = make_cutout(image, detection)
        alpha = np.asarray(cutout.rgba.getchannel("A")) > 127
        ys, xs = np.nonzero(alpha)
        assert xs.mean() == pytest.approx(192, abs=3)
        assert ys.mean() == pytest.approx(192, abs=3)

    def test_it_is_transparent_and_neutral_outside_the_object(self):
        image, detection = _photo_with_disc((640, 480), (320, 240), 150)
        cutout = make_cutout(image, detection)
        assert cutout.rgba.getpixel((2, 2))[3] == 0
        assert cutout.on_neutral.getpixel((2, 2)) == NEUTRAL
        centre = cutout.on_neutral.getpixel((192, 192))
        assert centre == pytest.approx((200, 150, 40), abs=3)
        assert cutout.rgba.getpixel((192, 192))[3] == 255

    @pytest.mark.parametrize("margin", [0.0, 0.06, 0.2])
    def test_it_keeps_the_margin_around_the_object(self, margin):
        image, detection = _photo_with_disc((640, 480), (320, 240), 150)
        cutout = make_cutout(image, detection, size=400, margin=margin)
        expected = 400 * margin / (1 + 2 * margin)
        x0, y0, x1, y1 = _alpha_bbox(cutout)
        for gap in (x0, y0, 400 - x1, 400 - y1):
            assert gap == pytest.approx(expected, abs=3)

    def test_it_pads_when_the_object_touches_the_border(self):
        image, detection = _photo_with_disc((500, 400), (60, 60), 70)  # runs off the top-left corner
        cutout = make_cutout(image, detection, size=300, margin=0.1)
        assert cutout.box[0] < 0 and cutout.box[1] < 0
        # The padded corner is transparent and neutral, and the object is still centred.
        assert cutout.rgba.getpixel((1, 1))[3] == 0
        assert cutout.on_neutral.getpixel((1, 1)) == NEUTRAL
        alpha = np.asarray(cutout.rgba.getchannel("A")) > 127
        ys, xs = np.nonzero(alpha)
        assert ((xs.min() + xs.max()) / 2) == pytest.approx(150, abs=4)

    def test_it_feathers_the_edge(self):
        image, detection = _photo_with_disc((640, 480), (320, 240), 150)
        alpha = np.asarray(make_cutout(image, detection).rgba.getchannel("A"))
        assert ((alpha > 0) & (alpha < 255)).sum() > 0

    def test_it_rejects_a_mask_of_another_size(self):
        image, detection = _photo_with_disc((640, 480), (320, 240), 150)
        with pytest.raises(ValueError, match="does not match"):
            make_cutout(image.resize((320, 240)), detection)


class TestCropBox:
    def test_it_is_square_around_the_centre_of_a_wide_box(self):
        assert crop_box((100, 100, 300, 200), margin=0.0) == (100, 50, 300, 250)

    def test_it_grows_by_the_margin_on_each_side(self):
        x0, y0, x1, y1 = crop_box((0, 0, 100, 100), margin=0.1)
        assert (x1 - x0, y1 - y0) == (120, 120)
        assert (x0, y0) == (-10, -10)
