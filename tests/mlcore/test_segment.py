"""Finding the objects in a photo: pure post-processing, alpha input, and the u2netp model itself."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench.segmentation import BACKGROUNDS, composite_sample, iou, sensible_coins
from mlcore.modelfiles import DEFAULT_MODELS_DIR, ModelFileError, check_file
from mlcore.segment import Segmenter, detections_from_probability


def _models_dir() -> Path:
    return Path(os.environ.get("OBVERSE_MODELS_DIR") or DEFAULT_MODELS_DIR)


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    try:
        check_file(_models_dir(), "u2netp")
    except ModelFileError as exc:
        pytest.skip(f"u2netp is not prepared: {exc}")
    model = Segmenter(_models_dir())
    model.ensure_loaded()
    return model


def _discs(size, discs) -> np.ndarray:
    """A float map with filled discs ((cx, cy, r), ...) of value 1 on 0."""
    image = Image.new("F", size, 0.0)
    draw = ImageDraw.Draw(image)
    for cx, cy, r in discs:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1.0)
    return np.array(image)


class TestDetectionsFromProbability:
    def test_it_reports_every_object_best_first_and_drops_specks(self):
        probability = _discs((400, 300), [(100, 150, 40), (280, 150, 70), (380, 20, 2)])
        detections = detections_from_probability(probability, image_size=(400, 300))
        assert len(detections) == 2
        assert detections[0].box == pytest.approx((210, 80, 351, 221), abs=2)
        assert detections[0].score > detections[1].score
        assert detections[0].circularity > 0.9
        assert detections[0].mask.shape == (300, 400) and detections[0].mask.dtype == bool
        assert detections[0].area == pytest.approx(np.pi * 70**2 / (400 * 300), rel=0.05)

    def test_it_prefers_round_central_objects_of_similar_size(self):
        probability = np.zeros((300, 400), dtype=np.float32)
        probability[10:40, 10:390] = 1.0  # a long bar along the top edge
        probability += _discs((400, 300), [(200, 170, 55)])
        detections = detections_from_probability(probability, image_size=(400, 300))
        assert len(detections) == 2
        assert detections[0].circularity > 0.9 and detections[0].centrality > 0.8
        assert detections[1].circularity < 0.3

    def test_it_fills_holes(self):
        probability = _discs((200, 200), [(100, 100, 60)])
        probability[90:110, 90:110] = 0.0
        (detection,) = detections_from_probability(probability, image_size=(200, 200))
        assert detection.mask[100, 100]

    def test_it_splits_touching_coins(self):
        probability = _discs((400, 200), [(130, 100, 60), (248, 100, 60)])  # overlapping by a few pixels
        detections = detections_from_probability(probability, image_size=(400, 200))
        assert len(detections) == 2
        assert all(d.circularity > 0.75 for d in detections)

    def test_it_upsamples_a_low_resolution_map_to_the_image(self):
        probability = _discs((320, 320), [(160, 160, 100)])
        (detection,) = detections_from_probability(probability, image_size=(2400, 1600))
        assert detection.mask.shape == (1600, 2400)
        x0, y0, x1, y1 = detection.box
        assert (x1 - x0) == pytest.approx(1500, rel=0.03)
        assert (y1 - y0) == pytest.approx(1000, rel=0.03)

    def test_it_returns_nothing_for_an_empty_map(self):
        assert detections_from_probability(np.full((320, 320), 0.1, np.float32), image_size=(640, 480)) == []


class TestSegmenterWithoutModel:
    def test_it_raises_model_file_error_naming_the_fix_when_the_model_is_missing(self, tmp_path):
        with pytest.raises(ModelFileError, match="setup_models"):
            Segmenter(tmp_path).find_objects(Image.new("RGB", (100, 100)))

    def test_it_uses_meaningful_alpha_without_running_the_model(self, tmp_path):
        image = Image.new("RGBA", (300, 200), (90, 60, 30, 0))
        ImageDraw.Draw(image).ellipse((120, 50, 220, 150), fill=(150, 120, 60, 255))
        detections = Segmenter(tmp_path).find_objects(image)  # empty models dir: a model call would raise
        assert len(detections) == 1
        truth = np.asarray(image.getchannel("A")) >= 128
        assert iou(detections[0].mask, truth) > 0.98


class TestSegmenterModel:
    def test_it_finds_nothing_in_a_blank_image(self, segmenter):
        assert segmenter.find_objects(Image.new("RGB", (480, 360), (235, 235, 235))) == []

    @pytest.mark.slow
    def test_it_finds_all_24_coins_in_the_skimage_photo(self, segmenter):
        from skimage import data

        detections = segmenter.find_objects(Image.fromarray(data.coins()).convert("RGB"))
        coins = sensible_coins(detections)
        assert len(coins) == 24
        # Each one a whole coin (not a half of one, nor two together), in the photo's 4 rows of 6.
        for coin in coins:
            x0, y0, x1, y1 = coin.box
            assert min(x1 - x0, y1 - y0) >= 30 and 0.75 <= (x1 - x0) / (y1 - y0) <= 1.33, coin.box
        rows = Counter(round((coin.box[1] + coin.box[3]) / 2 / 70) for coin in coins)
        assert sorted(rows.values()) == [6, 6, 6, 6], rows
        for i, a in enumerate(coins):
            for b in coins[i + 1 :]:
                overlap_x = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])
                overlap_y = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
                assert overlap_x <= 4 or overlap_y <= 4, (a.box, b.box)  # no coin found twice

    @pytest.mark.data
    @pytest.mark.parametrize("kind", ["white", "wood", "clutter"])
    def test_it_cuts_a_real_coin_out_of_varied_backgrounds(self, segmenter, cutouts_dir, kind):
        rng = np.random.default_rng(sorted(BACKGROUNDS).index(kind))
        path = sorted((cutouts_dir / "images").glob("*.webp"))[3]
        coin = Image.open(path).convert("RGBA").resize((500, 500), Image.Resampling.LANCZOS)
        photo, truth = composite_sample(coin, kind, rng)
        detections = segmenter.find_objects(photo)
        assert detections, f"no coin found on {kind}"
        assert iou(detections[0].mask, truth) >= 0.9

    @pytest.mark.slow
    @pytest.mark.data
    def test_it_traces_a_small_coin_more_finely_on_a_closer_look(self, segmenter, cutouts_dir, monkeypatch):
        path = sorted((cutouts_dir / "images").glob("*.webp"))[10]
        photo, truth = composite_sample(Image.open(path).convert("RGBA"), "clutter+small", np.random.default_rng(4))
        assert truth.mean() < 0.05  # small enough for the closer look
        closer = iou(segmenter.find_objects(photo)[0].mask, truth)
        monkeypatch.setattr("mlcore.segment.SMALL_AREA", 0.0)
        coarse = iou(segmenter.find_objects(photo)[0].mask, truth)
        assert closer >= 0.98
        assert closer > coarse


class TestStudioDetection:
    """Catalogue photos on a plain background are cut out by colour only when that is safe."""

    @staticmethod
    def _coin_on(background, *, shadow: bool = False, size=(300, 300)) -> tuple[Image.Image, np.ndarray]:
        from PIL import ImageDraw, ImageFilter

        photo = Image.new("RGB", size, background)
        if shadow:  # a soft drop shadow down and to the right: colour distance would take it for coin
            layer = Image.new("L", size, 0)
            ImageDraw.Draw(layer).ellipse([70, 70, 260, 260], fill=150)
            layer = layer.filter(ImageFilter.GaussianBlur(12))
            photo = Image.composite(Image.new("RGB", size, (90, 90, 90)), photo, layer)
        truth = Image.new("L", size, 0)
        ImageDraw.Draw(truth).ellipse([40, 40, 240, 240], fill=255)
        rng = np.random.default_rng(0)
        metal = Image.fromarray(rng.integers(90, 200, (size[1], size[0], 3), dtype=np.uint8))
        return Image.composite(metal, photo, truth), np.asarray(truth) > 0

    def test_a_coin_on_white_is_cut_out_without_the_model(self):
        from mlcore.segment import studio_detection

        photo, truth = self._coin_on((250, 250, 248))
        found = studio_detection(photo)
        assert found is not None and found.mask.shape == truth.shape
        iou = (found.mask & truth).sum() / (found.mask | truth).sum()
        assert iou > 0.97 and found.circularity > 0.9
        assert found.box == (40, 40, 241, 241)

    def test_a_large_photo_is_measured_small_and_its_mask_scaled_back(self):
        from mlcore.segment import studio_detection

        photo, truth = self._coin_on((20, 20, 20))
        big = photo.resize((1200, 1200), Image.Resampling.NEAREST)
        found = studio_detection(big)
        big_truth = np.asarray(Image.fromarray(truth).resize((1200, 1200), Image.Resampling.NEAREST))
        assert found is not None and found.mask.shape == (1200, 1200)
        assert (found.mask & big_truth).sum() / (found.mask | big_truth).sum() > 0.97

    @pytest.mark.parametrize("case", ["shadow", "textured", "empty"])
    def test_it_declines_when_colour_distance_cannot_be_trusted(self, case):
        from mlcore.segment import studio_detection

        if case == "shadow":
            photo, _ = self._coin_on((250, 250, 248), shadow=True)
        elif case == "textured":
            rng = np.random.default_rng(1)
            cloth = Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8))
            photo = Image.composite(self._coin_on((0, 0, 0))[0], cloth, Image.new("L", (300, 300), 0))
        else:
            photo = Image.new("RGB", (300, 300), (250, 250, 250))
        assert studio_detection(photo) is None


@pytest.mark.data
def test_studio_photos_of_the_dev_set_are_cut_out_by_colour(ans_dir):
    """Most ANS studio photos take the shortcut; where it declines, the model runs (figures: ml-notes)."""
    from mlcore.dataset import load_ans_layout
    from mlcore.segment import studio_detection

    records = load_ans_layout(ans_dir, limit=30)
    found = [studio_detection(Image.open(path)) for record in records for path in record.images.values()]
    assert sum(f is not None for f in found) >= 0.8 * len(found)
    assert all(f.area > 0.2 for f in found if f is not None)  # a coin, not a speck
