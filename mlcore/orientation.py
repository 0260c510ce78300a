"""Turn a coin cut-out upright: estimate its rotation from its image, learnt from the catalogue.

Catalogue photos are upright, so they are labelled data for free: training cut-outs are turned by
known angles (and made to look like phone queries: blur, low resolution, lighting, JPEG), described
by the embedder's layout features (``Embedder.descriptors_and_layout``: the backbone's last maps
averaged on a 2×2 grid, where the head or the standing figure sits; the same pass as the embedding),
reduced by PCA, and a multinomial logistic regression learns the angle over ``BINS`` bins.

At query time the cut-out is also described turned by each of ``TTA`` evenly spaced turns and the
turns' probability vectors, shifted back, are averaged: a view the classifier reads badly is
outvoted by the others (median error on held-out types' phone-like cut-outs 26° with one view,
13° with eight; docs/ml-notes.md); the eight views are one batch. The estimate is refined by a
circular mean of the probabilities around the best bin; the confidence is the probability mass
within ±20° of it.

Angles follow Pillow: positive = counter-clockwise. ``estimate`` returns the angle by which to
rotate the image counter-clockwise to make it upright; ``rotate_upright(image, angle)`` does it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from mlcore.base import LazyModel, register
from mlcore.cutout import rotate_upright

FILENAME = "orientation.npz"
NEUTRAL = (128, 128, 128)
BINS = 48  # 7.5° each; a multiple of TTA, so each turn's probabilities shift back by whole bins
TTA = 8
PCA_ROWS = 4000  # the PCA basis is fitted on at most this many samples (time; the basis is stable)


def turn_offsets(tta: int = TTA) -> np.ndarray:
    """The ``tta`` evenly spaced turns (degrees counter-clockwise, first 0) a cut-out is read at."""
    return np.arange(tta) * (360.0 / tta)


def turn_views(image: Image.Image, tta: int = TTA) -> list[Image.Image]:
    """``image`` turned by each of ``turn_offsets(tta)`` (the first is the image itself)."""
    return [image if not offset else rotate_upright(image, float(offset)) for offset in turn_offsets(tta)]


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


@dataclass
class OrientationWeights:
    """PCA (mean, components) and a multinomial logistic regression over angle bins (coef, intercept).

    ``recipe`` names the features they were fitted on (``OrientationEstimator.recipe``): weights
    fitted on other features would give confident nonsense, so they are refused on load.
    """

    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    recipe: str = ""

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
                recipe=self.recipe,
            )
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> OrientationWeights:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in ("mean", "components", "scale", "coef", "intercept")}
            return cls(**arrays, recipe=str(data["recipe"]) if "recipe" in data.files else "")


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

    Reads the layout features of ``embedder`` (shared with the pipeline: one copy of the weights).
    Loads ``orientation.npz`` from ``weights_dir`` when given, else from the active trained version;
    weights fitted for another ``recipe`` are refused (``ModelFileError``, as if untrained).
    """

    name = "orientation"
    version = "rotbins-2"

    def __init__(
        self,
        models_dir,
        *,
        weights_dir: str | Path | None = None,
        weights: OrientationWeights | None = None,
        embedder=None,
        tta: int = TTA,
    ) -> None:
        from mlcore.embed import Embedder

        super().__init__(models_dir)
        if tta < 1 or BINS % tta:
            raise ValueError(f"tta must divide {BINS} (the angle bins), not {tta}")
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self.embedder = embedder or Embedder(models_dir, use_trained=False)
        self.tta = tta
        self.trained_version = ""
        if weights is not None:
            self._model = weights

    @property
    def recipe(self) -> str:
        """What trained weights must have been fitted on: this estimator's version and the embedder's features."""
        return f"{self.version}:{self.embedder.base_version}"

    def _load(self) -> OrientationWeights:
        from mlcore.modelfiles import ModelFileError

        if self.weights_dir is not None:
            path = self.weights_dir / FILENAME
            if not path.is_file():
                raise ModelFileError(f"No {FILENAME} in {self.weights_dir}; train the orientation estimator first.")
        else:
            from mlcore.versions import resolve

            # The trained version the embedder reads (its pinned one, else the active one): one coherent set.
            path, self.trained_version = resolve(
                self.models_dir,
                FILENAME,
                recipe=self.recipe,
                kind="orientation",
                version=getattr(self.embedder, "pinned_version", None),
            )
        weights = OrientationWeights.load(path)
        if weights.recipe != self.recipe:
            from mlcore.versions import TRAIN_COMMAND

            raise ModelFileError(
                f"{path} was fitted for {weights.recipe or 'older features'}, not {self.recipe}; run {TRAIN_COMMAND}."
            )
        return weights

    def describe(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version + (f"/{self.trained_version}" if self.trained_version else ""),
        }

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, BINS) probabilities that each image is turned by bin·7.5° counter-clockwise from upright."""
        self.ensure_loaded()
        views = [view for image in images for view in turn_views(image, self.tta)]
        return self.probabilities_of_views(self.embedder.descriptors_and_layout(views)[1])

    def probabilities_of_views(self, layout: np.ndarray) -> np.ndarray:
        """``probabilities`` from the layout features of the images' ``turn_views`` (N·tta rows, image by image)."""
        weights = self.ensure_loaded()
        p = weights.probabilities(layout).reshape(-1, self.tta, BINS)
        # A view turned by +offset looks turned by (θ + offset): shift each back to θ, then average.
        step = BINS // self.tta
        return np.mean([np.roll(p[:, k], -k * step, axis=1) for k in range(self.tta)], axis=0)

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
        embedder=None,
        seed: int = 0,
        rotations: int = 3,
        **options,
    ) -> tuple[OrientationEstimator, dict[str, float]]:
        """Train from upright cut-outs; ``rotations`` random query-like turns of each. Returns (model, metrics)."""
        from mlcore.embed import Embedder

        if embedder is None:
            if models_dir is None:
                raise ValueError("fit needs an embedder or a models_dir")
            embedder = Embedder(models_dir, use_trained=False)
        rng = rng if rng is not None else np.random.default_rng(seed)
        images = list(images)
        if len(images) < 2:
            raise ValueError("The orientation estimator needs at least 2 upright images")
        turned, owners, angles = [], [], []
        for index, image in enumerate(images):
            for _ in range(rotations):
                angle = float(rng.uniform(0, 360))
                base = query_like(image, rng) if rng.random() < 0.75 else image
                turned.append(rotate_upright(base, angle))
                owners.append(index)
                angles.append(angle)
        layout = embedder.descriptors_and_layout(turned)[1]
        return cls.fit_features(layout, angles, owners, embedder=embedder, rng=rng, **options)

    @classmethod
    def fit_features(
        cls,
        layout: np.ndarray,
        angles: Sequence[float],
        owners: Sequence[object],
        *,
        embedder,
        rng: np.random.Generator,
        components: int = 256,
        c: float = 0.5,
        holdout: float = 0.15,
    ) -> tuple[OrientationEstimator, dict[str, float]]:
        """Train from layout features of views turned counter-clockwise by known ``angles``.

        ``owners`` says which source image each view shows: a ``holdout`` fraction of the source images
        (with all their views) is kept apart to measure the median angular error of one view (the
        query path averages ``TTA`` views, which does better) before the final fit on everything.
        """
        from sklearn.linear_model import LogisticRegression

        layout = np.asarray(layout, dtype=np.float32)
        angles_arr = np.asarray(angles, dtype=np.float64) % 360.0
        labels = np.round(angles_arr / (360.0 / BINS)).astype(int) % BINS
        owner_ids = {owner: i for i, owner in enumerate(dict.fromkeys(owners))}
        owners_arr = np.array([owner_ids[o] for o in owners])
        estimator = cls(embedder.models_dir, embedder=embedder)

        def train(rows: np.ndarray) -> OrientationWeights:
            x = layout[rows]
            mean = x.mean(axis=0)
            basis_rows = rows if len(rows) <= PCA_ROWS else rng.choice(rows, PCA_ROWS, replace=False)
            k = int(min(components, len(basis_rows) - 1, x.shape[1]))
            _, _, vt = np.linalg.svd(layout[basis_rows] - mean, full_matrices=False)
            comps = vt[:k]
            z = (x - mean) @ comps.T
            scale = z.std(axis=0) + 1e-6
            model = LogisticRegression(C=c, max_iter=300).fit(z / scale, labels[rows])
            coef = np.zeros((BINS, k), dtype=np.float32)
            intercept = np.full(BINS, -1e4, dtype=np.float32)  # bins never seen stay improbable
            coef[model.classes_] = model.coef_
            intercept[model.classes_] = model.intercept_
            return OrientationWeights(
                mean.astype(np.float32),
                comps.astype(np.float32),
                scale.astype(np.float32),
                coef,
                intercept,
                recipe=estimator.recipe,
            )

        metrics: dict[str, float] = {"images": len(owner_ids), "samples": len(layout)}
        held = rng.random(len(owner_ids)) < holdout
        if held.any() and (~held).sum() >= 2:
            weights = train(np.flatnonzero(~held[owners_arr]))
            test_rows = np.flatnonzero(held[owners_arr])
            errors = [
                angular_error(angle_from_probabilities(p)[0], angles_arr[row])
                for row, p in zip(test_rows, weights.probabilities(layout[test_rows]), strict=True)
            ]
            metrics["holdout_median_error_deg_one_view"] = round(float(np.median(errors)), 2)
            metrics["holdout_within_20deg_one_view"] = round(float(np.mean(np.array(errors) <= 20)), 4)
        estimator._model = train(np.arange(len(layout)))
        return estimator, metrics

    def save(self, folder: str | Path) -> Path:
        """Write ``orientation.npz`` into ``folder`` (a trained version's staging folder)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return self.ensure_loaded().save(folder / FILENAME)
