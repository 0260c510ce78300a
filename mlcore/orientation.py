"""Turn a coin cut-out upright: estimate its rotation from its image, learnt from the catalogue.

Catalogue photos are upright, so they are labelled data for free: each training cut-out is turned by
known angles (and made to look like a phone query: blur, low resolution, lighting, JPEG), described
by the pretrained backbone's feature maps pooled on a 2×2 grid (layout matters here: where the head
or the standing figure sits), reduced by PCA, and a multinomial logistic regression learns the angle
over ``BINS`` bins. The estimate is refined by a circular mean of the probabilities around the best
bin; the confidence is the probability mass within ±20° of it. At query time, the cut-out can also be
described turned by 0/90/180/270° (``tta=4``) and the four shifted probability vectors averaged.

Angles follow Pillow: positive = counter-clockwise. ``estimate`` returns the angle by which to
rotate the image counter-clockwise to make it upright; ``rotate_upright(image, angle)`` does it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from mlcore.backbone import Backbone, to_tensor
from mlcore.base import LazyModel, register

FILENAME = "orientation.npz"
NEUTRAL = (128, 128, 128)
BINS = 36
INPUT_SIZE = 224


def rotate_upright(image: Image.Image, angle: float) -> Image.Image:
    """``image`` turned ``angle`` degrees counter-clockwise about its centre, same size, corners neutral."""
    if not angle % 360:
        return image.copy()
    fill: Any = NEUTRAL if image.mode == "RGB" else (*NEUTRAL, 0) if image.mode == "RGBA" else 128
    return image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=fill)


def _disc(image: Image.Image, size: int) -> Image.Image:
    rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR).convert("L").convert("RGB")
    mask = Image.new("L", rgb.size, 0)
    ImageDraw.Draw(mask).ellipse([0, 0, size - 1, size - 1], fill=255)
    return Image.composite(rgb, Image.new("RGB", rgb.size, NEUTRAL), mask)


def query_like(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A cut-out degraded like a phone query's cut-out (resolution, blur, light, noise, JPEG), not turned."""
    rgb = image.convert("RGB")
    size = rgb.size
    small = int(rng.integers(90, 200))
    rgb = rgb.resize((small, small), Image.Resampling.BILINEAR)
    rgb = rgb.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 1.2))))
    rgb = ImageEnhance.Brightness(rgb).enhance(float(rng.uniform(0.7, 1.3)))
    rgb = ImageEnhance.Contrast(rgb).enhance(float(rng.uniform(0.7, 1.3)))
    array = np.asarray(rgb, dtype=np.float32) + rng.normal(0, float(rng.uniform(1, 6)), (small, small, 3))
    rgb = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=int(rng.integers(30, 70)))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB").resize(size, Image.Resampling.BILINEAR)


@torch.inference_mode()
def layout_features(backbone: Backbone, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
    """(N, 4·1280) backbone maps of greyscale disc-masked cut-outs, averaged on a 2×2 grid, signed-sqrt."""
    model = backbone.module
    out = []
    for start in range(0, len(images), batch_size):
        batch = [_disc(image, INPUT_SIZE) for image in images[start : start + batch_size]]
        maps = model(to_tensor(batch, INPUT_SIZE))
        pooled = torch.nn.functional.adaptive_avg_pool2d(maps, 2).flatten(1)
        out.append(pooled.sqrt().numpy())
    return np.concatenate(out) if out else np.zeros((0, 4 * 1280), dtype=np.float32)


@dataclass
class OrientationWeights:
    """PCA (mean, components) and a multinomial logistic regression over angle bins (coef, intercept)."""

    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        z = ((np.asarray(features, np.float32) - self.mean) @ self.components.T) / self.scale
        logits = z @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> Path:
        with Path(path).open("wb") as fh:
            np.savez(
                fh,
                mean=self.mean,
                components=self.components,
                scale=self.scale,
                coef=self.coef,
                intercept=self.intercept,
            )
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> OrientationWeights:
        with np.load(path, allow_pickle=False) as data:
            return cls(**{key: data[key] for key in ("mean", "components", "scale", "coef", "intercept")})


def angle_from_probabilities(p: np.ndarray) -> tuple[float, float]:
    """(angle in degrees [0, 360), confidence) from bin probabilities: circular mean around the best bin."""
    bins = len(p)
    width = 360.0 / bins
    best = int(np.argmax(p))
    offsets = np.arange(-2, 3)
    idx = (best + offsets) % bins
    weights = p[idx]
    angles = np.radians((best + offsets) * width)
    angle = math.degrees(math.atan2(float((weights * np.sin(angles)).sum()), float((weights * np.cos(angles)).sum())))
    angle %= 360.0
    centres = np.arange(bins) * width
    distance = np.abs((centres - angle + 180.0) % 360.0 - 180.0)
    confidence = float(p[distance <= 20.0].sum())
    return angle, confidence


def angular_error(a: float, b: float) -> float:
    """Smallest absolute difference between two angles in degrees (0..180)."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


@register
class OrientationEstimator(LazyModel):
    """How far to turn a cut-out counter-clockwise to make it upright, with a confidence (0..1).

    Loads ``orientation.npz`` from ``weights_dir`` when given, else from the active trained version.
    """

    name = "orientation"
    version = "rotbins-1"

    def __init__(
        self,
        models_dir,
        *,
        weights_dir: str | Path | None = None,
        weights: OrientationWeights | None = None,
        backbone: Backbone | None = None,
        tta: int = 1,
    ) -> None:
        super().__init__(models_dir)
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self.backbone = backbone or Backbone(models_dir)
        self.tta = tta
        self.trained_version = ""
        if weights is not None:
            self._model = weights

    def _load(self) -> OrientationWeights:
        if self.weights_dir is not None:
            path = self.weights_dir / FILENAME
            if not path.is_file():
                from mlcore.setup_models import ModelFileError

                raise ModelFileError(f"No {FILENAME} in {self.weights_dir}; train the orientation estimator first.")
        else:
            from mlcore.versions import resolve

            path, self.trained_version = resolve(self.models_dir, FILENAME)
        return OrientationWeights.load(path)

    def describe(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version + (f"/{self.trained_version}" if self.trained_version else ""),
        }

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, BINS) probabilities that each image is turned by bin·10° counter-clockwise from upright."""
        weights = self.ensure_loaded()
        images = list(images)
        turns = [0, 90, 180, 270][: max(1, min(4, self.tta))]
        total = np.zeros((len(images), BINS))
        for turn in turns:
            turned = [rotate_upright(image, turn) for image in images] if turn else images
            p = weights.probabilities(layout_features(self.backbone, turned))
            # Turning the image by +turn made it look turned by (θ + turn): shift back to θ.
            total += np.roll(p, -int(round(turn / (360 / BINS))), axis=1)
        return total / len(turns)

    def estimate_many(self, images: Sequence[Image.Image]) -> list[tuple[float, float]]:
        """[(angle to rotate counter-clockwise to make upright, confidence)] for each image."""
        out = []
        for p in self.probabilities(images):
            turned, confidence = angle_from_probabilities(p)
            out.append(((-turned) % 360.0, confidence))
        return out

    def estimate(self, image: Image.Image) -> tuple[float, float]:
        """(angle in degrees to rotate the image counter-clockwise to make it upright, confidence 0..1)."""
        return self.estimate_many([image])[0]

    @classmethod
    def fit(
        cls,
        images: Sequence[Image.Image],
        rng: np.random.Generator | None = None,
        *,
        models_dir: str | Path | None = None,
        backbone: Backbone | None = None,
        seed: int = 0,
        rotations: int = 4,
        components: int = 256,
        c: float = 0.5,
        holdout: float = 0.15,
    ) -> tuple[OrientationEstimator, dict[str, float]]:
        """Train from upright cut-outs; ``rotations`` random turns of each (query-like). Returns (model, metrics).

        A ``holdout`` fraction of the images (not their copies) is kept apart to measure the median
        angular error before the final fit on everything.
        """
        from sklearn.linear_model import LogisticRegression

        if backbone is None:
            if models_dir is None:
                raise ValueError("fit needs a backbone or a models_dir")
            backbone = Backbone(models_dir)
        rng = rng if rng is not None else np.random.default_rng(seed)
        images = list(images)
        if len(images) < 2:
            raise ValueError("The orientation estimator needs at least 2 upright images")
        turned, labels, owners, true_angles = [], [], [], []
        width = 360.0 / BINS
        for index, image in enumerate(images):
            for _ in range(rotations):
                label = int(rng.integers(0, BINS))
                angle = label * width + float(rng.uniform(-width / 2, width / 2))
                base = query_like(image, rng) if rng.random() < 0.75 else image
                turned.append(rotate_upright(base, angle))
                labels.append(label)
                owners.append(index)
                true_angles.append(angle)
        features = layout_features(backbone, turned)
        labels_arr, owners_arr = np.array(labels), np.array(owners)

        def train(rows: np.ndarray) -> OrientationWeights:
            x = features[rows]
            mean = x.mean(axis=0)
            k = int(min(components, len(rows) - 1, x.shape[1]))
            _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
            comps = vt[:k]
            z = (x - mean) @ comps.T
            scale = z.std(axis=0) + 1e-6
            model = LogisticRegression(C=c, max_iter=300).fit(z / scale, labels_arr[rows])
            coef = np.zeros((BINS, k), dtype=np.float32)
            intercept = np.full(BINS, -1e4, dtype=np.float32)  # bins never seen stay improbable
            coef[model.classes_] = model.coef_
            intercept[model.classes_] = model.intercept_
            return OrientationWeights(
                mean.astype(np.float32), comps.astype(np.float32), scale.astype(np.float32), coef, intercept
            )

        metrics: dict[str, float] = {"images": len(images), "samples": len(turned)}
        held = rng.random(len(images)) < holdout
        if held.any() and (~held).sum() >= 2:
            weights = train(np.flatnonzero(~held[owners_arr]))
            test_rows = np.flatnonzero(held[owners_arr])
            errors = []
            for row, p in zip(test_rows, weights.probabilities(features[test_rows]), strict=True):
                predicted, _ = angle_from_probabilities(p)
                errors.append(angular_error(predicted, true_angles[row]))
            metrics["holdout_median_error_deg"] = round(float(np.median(errors)), 2)
            metrics["holdout_within_20deg"] = round(float(np.mean(np.array(errors) <= 20)), 4)
        weights = train(np.arange(len(turned)))
        estimator = cls(models_dir or backbone.models_dir, weights=weights, backbone=backbone)
        return estimator, metrics

    def save(self, folder: str | Path) -> Path:
        """Write ``orientation.npz`` into ``folder`` (a trained version's staging folder)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return self.ensure_loaded().save(folder / FILENAME)
