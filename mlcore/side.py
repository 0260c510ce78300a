"""Obverse or reverse? A calibrated linear classifier on the embedder's pretrained-backbone descriptors.

Trained from the catalogue's own labelled photos (``fit``), on clean upright cut-outs and on copies
made to look like query cut-outs (rotated, blurred, small, compressed), because queries arrive
that way. Probabilities are Platt-calibrated on out-of-fold decisions (folds grouped by specimen, so
copies of one coin never sit on both sides of a split). The weights are plain arrays in an ``.npz``
(no pickle), stored in the active trained version (see ``mlcore.versions``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from mlcore.base import LazyModel, register
from mlcore.versions import resolve

SIDES = ("obverse", "reverse")
FILENAME = "side.npz"
NEUTRAL = (128, 128, 128)


def augment_like_query(
    image: Image.Image,
    rng: np.random.Generator,
    *,
    neutral=NEUTRAL,
    turn_probability: float = 0.5,
    residual: float | None = None,
    angle: float | None = None,
) -> Image.Image:
    """A copy of a clean upright cut-out that looks like a phone query's cut-out.

    Rotation (any angle with ``turn_probability``, since the upright step can fail; else a few
    degrees, or anywhere within ±``residual`` degrees: what is left after the rotation search's best
    turn; or exactly ``angle`` counter-clockwise when given), low resolution, blur, lighting, noise
    and JPEG compression; the frame and neutral background are kept.
    """
    rgb = image.convert("RGB")
    size = rgb.size
    if angle is not None:
        angle = float(angle)
    elif rng.random() < turn_probability:
        angle = float(rng.uniform(0, 360))
    else:
        angle = float(rng.uniform(-residual, residual)) if residual else float(rng.normal(0, 8))
    rgb = rgb.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=neutral)
    small = int(rng.integers(64, max(65, min(size) + 1)))
    rgb = rgb.resize((small, small), Image.Resampling.BILINEAR).resize(size, Image.Resampling.BILINEAR)
    if rng.random() < 0.6:
        rgb = rgb.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 2.0))))
    rgb = ImageEnhance.Brightness(rgb).enhance(float(rng.uniform(0.7, 1.3)))
    rgb = ImageEnhance.Contrast(rgb).enhance(float(rng.uniform(0.7, 1.3)))
    rgb = ImageEnhance.Color(rgb).enhance(float(rng.uniform(0.6, 1.4)))
    array = np.asarray(rgb, dtype=np.float32)
    array += rng.normal(0, float(rng.uniform(0, 8)), array.shape)
    rgb = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=int(rng.integers(35, 90)))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def side_features(descriptors: np.ndarray, config) -> np.ndarray:
    """The classifier's input: the embedder's descriptors pooled over the whole coin (``global_descriptors``).

    The embedding keeps where things are (a 2×2 grid); the side should not depend on it, since the
    cut-out is often turned. Measured on the real query path (160 photos, U^2-Net-p cut-outs, the
    estimator's upright): 0.79 with the whole-coin pool and the turns averaged, 0.74 with the grid.
    """
    from mlcore.embed import global_descriptors

    return global_descriptors(descriptors, config)


@dataclass
class SideWeights:
    """Standardisation, linear weights and Platt calibration: p(obverse) = σ(a·(w·z + b) + c)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    platt_a: float
    platt_b: float

    def probability_obverse(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) / self.scale
        decision = z @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-(self.platt_a * decision + self.platt_b)))

    def save(self, path: Path) -> None:
        with path.open("wb") as fh:
            np.savez(
                fh,
                mean=self.mean,
                scale=self.scale,
                coef=self.coef,
                intercept=np.float64(self.intercept),
                platt=np.array([self.platt_a, self.platt_b]),
            )

    @classmethod
    def load(cls, path: Path) -> SideWeights:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                mean=data["mean"],
                scale=data["scale"],
                coef=data["coef"],
                intercept=float(data["intercept"]),
                platt_a=float(data["platt"][0]),
                platt_b=float(data["platt"][1]),
            )


def _platt(decisions: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e4, max_iter=1000).fit(decisions.reshape(-1, 1), labels)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def side_weights_fit(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int = 0,
    c: float = 0.05,
    folds: int = 4,
    extra: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> tuple[SideWeights, dict[str, float], np.ndarray]:
    """Fit the classifier (label 1 = obverse) and its calibration; also out-of-fold metrics and probabilities.

    ``extra``: {name: (features, labels, groups)} of evaluation-only rows (e.g. phone-like photos of
    some catalogue coins); each is scored by the fold model that did not see its group, and its
    accuracy is reported as ``oof_accuracy_<name>``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups)
    if len(set(labels.tolist())) < 2:
        raise ValueError("The side classifier needs photos of both sides")
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6

    def fit(rows: np.ndarray) -> LogisticRegression:
        z = (features[rows] - mean) / scale
        return LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(z, labels[rows])

    n_groups = len(set(groups.tolist()))
    folds = max(2, min(folds, n_groups))
    oof = np.zeros(len(labels))
    extra = extra or {}
    extra_oof = {name: np.zeros(len(rows[1])) for name, rows in extra.items()}
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_rows, test_rows in splitter.split(features, labels, groups):
        model = fit(train_rows)
        oof[test_rows] = model.decision_function((features[test_rows] - mean) / scale)
        held_out = set(groups[test_rows].tolist())
        for name, (x, _, g) in extra.items():
            rows = np.array([value in held_out for value in np.asarray(g).tolist()], dtype=bool)
            if rows.any():
                extra_oof[name][rows] = model.decision_function((np.asarray(x, np.float64)[rows] - mean) / scale)
    platt_a, platt_b = _platt(oof, labels)
    final = fit(np.arange(len(labels)))
    weights = SideWeights(mean, scale, final.coef_[0].copy(), float(final.intercept_[0]), platt_a, platt_b)
    probability = 1.0 / (1.0 + np.exp(-(platt_a * oof + platt_b)))
    metrics: dict[str, float] = {
        "oof_accuracy": round(float(np.mean((oof > 0) == (labels == 1))), 4),
        "oof_log_loss": round(float(-np.mean(np.log(np.where(labels == 1, probability, 1 - probability) + 1e-12))), 4),
        "samples": len(labels),
        "folds": folds,
    }
    for name, (_, y, _) in extra.items():
        if len(y):
            metrics[f"oof_accuracy_{name}"] = round(float(np.mean((extra_oof[name] > 0) == (np.asarray(y) == 1))), 4)
            metrics[f"samples_{name}"] = len(y)
    return weights, metrics, probability


def pair_obverse_first(p_first: float, p_second: float) -> float | None:
    """Probability that the first of two photos of ONE coin is the obverse (and the second the reverse).

    The two photos of a submission show the coin's two sides, so their sides are decided together:
    a photo the classifier is sure of settles an unsure one, and two photos both read as "obverse"
    are resolved by which of them looks more like it. ``p_first``/``p_second`` are each photo's own
    probability of being the obverse (0.5 = no idea; 1 or 0 for a side the user declared). None when
    both are certain of the same side (two declared obverses): nothing to decide together.
    """
    this_way = p_first * (1.0 - p_second)
    other_way = (1.0 - p_first) * p_second
    total = this_way + other_way
    return None if total <= 0.0 else this_way / total


@register
class SideClassifier(LazyModel):
    """Predicts 'obverse' or 'reverse' with a calibrated probability, from the active trained version.

    Its features are the embedder's pooled descriptors (``Embedder.descriptors``), so the pipeline
    computes them once for both the side and the embedding.
    """

    name = "side-classifier"
    version = "logreg-1"

    def __init__(self, models_dir, *, embedder=None) -> None:
        super().__init__(models_dir)
        self._embedder = embedder
        self.trained_version = ""

    @property
    def embedder(self):
        if self._embedder is None:
            from mlcore.embed import Embedder

            self._embedder = Embedder(self.models_dir)
        return self._embedder

    def _load(self) -> SideWeights:
        path, self.trained_version = resolve(self.models_dir, FILENAME, recipe=self.embedder.base_version)
        return SideWeights.load(path)

    def describe(self) -> dict[str, str]:
        self.ensure_loaded()
        return {"name": self.name, "version": f"{self.version}/{self.trained_version}"}

    def predict_features(self, features: np.ndarray) -> list[tuple[str, float]]:
        """[(side, probability of that side)] from ``Embedder.descriptors`` rows."""
        probabilities = self.ensure_loaded().probability_obverse(side_features(features, self.embedder.config))
        return [("obverse", float(p)) if p >= 0.5 else ("reverse", float(1 - p)) for p in probabilities]

    def predict_turns(self, features: np.ndarray) -> tuple[str, float]:
        """(side, probability of that side) of ONE photo from its descriptors at several turns.

        The probabilities are averaged. ``Pipeline.process`` passes only the upright cut-out when it has
        an upright estimate (the classifier reads an upright coin best) and all the search's turns
        when it has none (one of them is near upright).
        """
        p = float(np.mean(self.ensure_loaded().probability_obverse(side_features(features, self.embedder.config))))
        return ("obverse", p) if p >= 0.5 else ("reverse", 1 - p)

    def predict(self, images: Sequence[Image.Image]) -> list[tuple[str, float]]:
        """[(side, probability of that side)] for upright (or roughly upright) cut-outs on neutral."""
        if not images:
            return []
        self.ensure_loaded()
        return self.predict_features(self.embedder.descriptors(list(images)))

    @staticmethod
    def fit(
        images: Sequence[Image.Image],
        sides: Sequence[str],
        groups: Sequence[str],
        *,
        embedder,
        seed: int = 0,
        augment: Callable[[Image.Image, np.random.Generator], Image.Image] | None = augment_like_query,
        copies: int = 1,
    ) -> tuple[SideWeights, dict[str, float]]:
        """Train on clean cut-outs plus ``copies`` query-like copies of each; ``groups`` = specimen ids."""
        rng = np.random.default_rng(seed)
        batch_images, labels, batch_groups = [], [], []
        for image, side, group in zip(images, sides, groups, strict=True):
            if side not in SIDES:
                continue
            variants = [image] + ([augment(image, rng) for _ in range(copies)] if augment else [])
            batch_images += variants
            labels += [int(side == "obverse")] * len(variants)
            batch_groups += [group] * len(variants)
        features = side_features(embedder.descriptors(batch_images), embedder.config)
        weights, metrics, _ = side_weights_fit(features, np.array(labels), np.array(batch_groups), seed=seed)
        return weights, metrics

    @staticmethod
    def save(weights: SideWeights, folder: Path) -> Path:
        path = Path(folder) / FILENAME
        weights.save(path)
        return path
