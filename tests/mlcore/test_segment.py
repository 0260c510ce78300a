"""Finding the objects in a photo: pure post-processing, alpha input, and the u2netp model itself."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mlcore.bench_segment import BACKGROUNDS, composite_sample, iou, sensible_coins
from mlcore.segment import Segmenter, detections_from_probability
from mlcore.setup_models import DEFAULT_MODELS_DIR, ModelFileError, check_file


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
