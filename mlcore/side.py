"""Obverse or reverse? MobileNetV2's last blocks fine-tuned for the side, with a calibrated probability.

The classifier starts from the backbone's block-13 maps of the embedder's own input (the same
pass: ``Embedder.read(..., stems=True)``) and runs its own copy of blocks 14–17, fine-tuned on the
catalogue's labelled photos, then GeM over the coin's disc and one logit. Frozen ImageNet features
stopped at 0.83–0.87 on held-out types whatever the head (docs/ml-notes.md); these blocks learn
what a portrait is against a standing figure. Trained (``side_net_fit``) on clean upright cut-outs
and on copies made to look like query cut-outs (rotated, blurred, small, compressed), because
queries arrive that way. A share of the specimens is held out of the fine-tuning; the logits on
their copies fit the Platt calibration and give the held-out accuracy. Weights are a plain
state dict (``torch.load(weights_only=True)``) in the active trained version (``mlcore.versions``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from mlcore.base import LazyModel, register
from mlcore.versions import resolve

SIDES = ("obverse", "reverse")
FILENAME = "side.pt"
NEUTRAL = (128, 128, 128)
RECIPE = "net-1"  # change when the network or its input changes: trained versions are then refused
FIRST_BLOCK = 14  # fine-tuned: MobileNetV2 blocks 14..17 (block 13's maps are the input)
LAST_BLOCK = 17
# Fine-tuning budget on this 2-core CPU: ~100 copies a second. Measured (scratch, 2,900 training
# images × 3 copies, 1,216 held-out-type photos): frozen features 0.87; 1 epoch 0.913, 3 epochs 0.927.
EPOCHS = 2
MAX_COPIES = 7000  # copies per epoch at most (a fresh random subset each epoch): bounds the training time
MIN_STEPS = 120  # batches of 64 at least for a small catalogue (~1 min on this CPU) ...
MAX_EPOCHS = 10  # ... in at most this many epochs
CALIBRATION_SHARE = 0.15  # of the specimens, held out of the fine-tuning to calibrate and measure


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


def _disc(size: int) -> torch.Tensor:
    centre = (torch.arange(size, dtype=torch.float32) + 0.5) - size / 2
    return ((centre.view(-1, 1) ** 2 + centre.view(1, -1) ** 2).sqrt() <= size / 2 + 0.1).float()


def _side_blocks() -> torch.nn.Sequential:
    """The architecture of the fine-tuned blocks (batch norms folded, as in ``mlcore.backbone``)."""
    import torchvision

    from mlcore.backbone import fold_batch_norms

    features = torchvision.models.mobilenet_v2(weights=None).features.eval()
    return fold_batch_norms(features)[FIRST_BLOCK : LAST_BLOCK + 1]


class SideNet(torch.nn.Module):
    """Blocks 14–17 → GeM (p = 3) over the coin's inscribed disc → signed root → one obverse logit."""

    def __init__(self, blocks: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.blocks = blocks if blocks is not None else _side_blocks()
        self.head = torch.nn.Linear(320, 1)
        self.register_buffer("platt", torch.tensor([1.0, 0.0]))  # p = σ(a·logit + b), fitted after training

    @classmethod
    def from_backbone(cls, features: torch.nn.Module) -> SideNet:
        """A trainable copy of the pretrained backbone's blocks 14–17 (``Backbone.module``)."""
        import copy

        blocks = copy.deepcopy(features[FIRST_BLOCK : LAST_BLOCK + 1]).float()
        blocks = blocks.to(memory_format=torch.contiguous_format)
        for parameter in blocks.parameters():
            parameter.requires_grad_(True)
        return cls(blocks)

    def forward(self, stems: torch.Tensor) -> torch.Tensor:
        maps = self.blocks(stems.float())
        disc = _disc(maps.shape[-1]).to(maps)
        pooled = (maps.clamp(min=1e-6).pow(3) * disc).sum(dim=(2, 3)).div(disc.sum()).pow(1 / 3)
        return self.head(pooled.sqrt()).squeeze(1)

    @torch.inference_mode()
    def probability_obverse(self, stems: torch.Tensor, batch: int = 128) -> np.ndarray:
        self.eval()
        a, b = (float(v) for v in self.platt)
        logits = torch.cat([self(stems[i : i + batch]) for i in range(0, len(stems), batch)]) if len(stems) else None
        if logits is None:
            return np.zeros(0)
        return torch.sigmoid(a * logits + b).numpy().astype(np.float64)

    def save(self, path: Path) -> Path:
        torch.save({"recipe": RECIPE, "state": self.state_dict()}, path)
        return path

    @classmethod
    def load(cls, path: Path) -> SideNet:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net = cls()
        net.load_state_dict(saved["state"])
        return net.eval()


def _platt(decisions: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e4, max_iter=1000).fit(decisions.reshape(-1, 1), labels)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def _calibration_split(groups: np.ndarray, seed: int) -> np.ndarray:
    """True for the rows of the specimens held out of the fine-tuning (a seeded ``CALIBRATION_SHARE``)."""
    unique = sorted(set(groups.tolist()))
    rng = np.random.default_rng(seed)
    held = {unique[i] for i in rng.permutation(len(unique))[: max(1, round(len(unique) * CALIBRATION_SHARE))]}
    return np.array([g in held for g in groups.tolist()], dtype=bool)


def side_net_fit(
    stems: torch.Tensor,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    features: torch.nn.Module,
    seed: int = 0,
    epochs: int = EPOCHS,
    max_copies: int = MAX_COPIES,
    min_steps: int = MIN_STEPS,
    kinds: np.ndarray | None = None,
    extra: dict[str, tuple[torch.Tensor, np.ndarray, np.ndarray]] | None = None,
    progress=None,
) -> tuple[SideNet, dict[str, float]]:
    """Fine-tune blocks 14–17 and a logit (label 1 = obverse) on block-13 maps; calibrate; measure.

    ``stems``: (N, 96, h, w) maps (``Embedder.read(..., stems=True)``); ``groups``: specimen ids (the
    calibration share is held out by specimen, so copies of one coin never sit on both sides);
    ``features``: the pretrained backbone (``Backbone.module``) whose blocks are copied; ``epochs``
    passes over at most ``max_copies`` copies each, and at least ``min_steps`` batches (in at most
    ``MAX_EPOCHS``); ``kinds``:
    a name per row (e.g. clean / query_upright) for per-kind held-out accuracy; ``extra``: {name:
    (stems, labels, groups)} of evaluation-only rows, scored where their specimen was held out.
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups)
    if len(set(labels.tolist())) < 2:
        raise ValueError("The side classifier needs photos of both sides")
    torch.manual_seed(seed)
    held = _calibration_split(groups, seed) if len(set(groups.tolist())) > 1 else np.zeros(len(labels), bool)
    train_rows = np.flatnonzero(~held)
    rng = np.random.default_rng(seed)
    net = SideNet.from_backbone(features)
    per_epoch = min(len(train_rows), max_copies)
    epochs = _fine_tune(
        net, stems, labels, train_rows, rng, epochs=epochs, per_epoch=per_epoch, min_steps=min_steps, progress=progress
    )
    metrics: dict[str, float] = {"samples": int(len(train_rows)), "epochs": epochs, "copies_per_epoch": per_epoch}
    if held.any() and len(set(labels[held].tolist())) == 2:
        metrics.update(_calibrate(net, stems, labels, groups, held, kinds=kinds, extra=extra))
    return net, metrics


def _fine_tune(
    net: SideNet,
    stems: torch.Tensor,
    labels: np.ndarray,
    train_rows: np.ndarray,
    rng: np.random.Generator,
    *,
    epochs: int,
    per_epoch: int,
    min_steps: int,
    progress,
) -> int:
    """Train ``net`` on random subsets of ``per_epoch`` of ``train_rows`` (mirrored at random); the epochs run."""
    optimiser = torch.optim.AdamW(
        [{"params": net.blocks.parameters(), "lr": 1e-3}, {"params": net.head.parameters(), "lr": 1e-2}],
        weight_decay=1e-4,
    )
    batch = 64
    per_epoch_steps = max(1, (per_epoch + batch - 1) // batch)
    # A small catalogue gets more epochs: a few hundred copies seen twice teach the blocks nothing
    # (but no more than MAX_EPOCHS: a handful of coins is not worth minutes).
    epochs = max(epochs, min(MAX_EPOCHS, -(-min_steps // per_epoch_steps)))
    steps = epochs * per_epoch_steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=[1e-3, 1e-2], total_steps=steps, pct_start=0.15)
    target = torch.from_numpy(labels.astype(np.float32))
    step = 0
    for epoch in range(epochs):
        net.train()
        chosen = rng.permutation(train_rows)[:per_epoch]
        for start in range(0, len(chosen), batch):
            rows = torch.from_numpy(chosen[start : start + batch])
            x = stems[rows].float()
            flip = torch.from_numpy(rng.random(len(rows)) < 0.5)
            x[flip] = x[flip].flip(-1)  # a mirrored coin shows the same side
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), target[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if step < steps - 1:
                schedule.step()
            step += 1
        if progress:
            progress(f"side network: epoch {epoch + 1}/{epochs} done")
    net.eval()
    return epochs


def _calibrate(
    net: SideNet,
    stems: torch.Tensor,
    labels: np.ndarray,
    groups: np.ndarray,
    held: np.ndarray,
    *,
    kinds: np.ndarray | None,
    extra: dict[str, tuple[torch.Tensor, np.ndarray, np.ndarray]] | None,
) -> dict[str, float]:
    """Fit ``net``'s Platt calibration on the ``held`` rows' logits; the held-out metrics (per kind, per extra set)."""
    with torch.inference_mode():
        logits = torch.cat(
            [net(stems[torch.from_numpy(r)]) for r in np.array_split(np.flatnonzero(held), 1 + held.sum() // 128)]
        )
    logits = logits.numpy().astype(np.float64)
    a, b = _platt(logits, labels[held])
    net.platt.copy_(torch.tensor([a, b]))
    probability = 1.0 / (1.0 + np.exp(-(a * logits + b)))
    truth = labels[held] == 1
    metrics: dict[str, float] = {
        "held_out_accuracy": round(float(np.mean((logits > 0) == truth)), 4),
        "held_out_log_loss": round(float(-np.mean(np.log(np.where(truth, probability, 1 - probability) + 1e-12))), 4),
        "held_out_samples": int(held.sum()),
    }
    if kinds is not None:
        for kind in sorted(set(np.asarray(kinds).tolist())):
            rows = np.asarray(kinds)[held] == kind
            if rows.any():
                metrics[f"held_out_accuracy_{kind}"] = round(float(np.mean((logits[rows] > 0) == truth[rows])), 4)
    held_groups = set(groups[held].tolist())
    for name, (x, y, g) in (extra or {}).items():
        rows = np.array([value in held_groups for value in np.asarray(g).tolist()], dtype=bool)
        if rows.any():
            p = net.probability_obverse(x[torch.from_numpy(np.flatnonzero(rows))])
            metrics[f"held_out_accuracy_{name}"] = round(float(np.mean((p >= 0.5) == (np.asarray(y)[rows] == 1))), 4)
            metrics[f"held_out_samples_{name}"] = int(rows.sum())
    return metrics


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

    Reads the embedder's block-13 maps (``Embedder.read(..., stems=True)``), so the pipeline computes
    them in the pass that embeds the photo.
    """

    name = "side-classifier"
    version = RECIPE

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

    @property
    def recipe(self) -> str:
        """The network and the input it was trained on: a version trained for another is refused."""
        return f"{RECIPE}:{self.embedder.base_version}"

    def _load(self) -> SideNet:
        # The trained version the embedder reads (its pinned one, else the active one): one coherent set.
        pinned = getattr(self.embedder, "pinned_version", None)
        path, self.trained_version = resolve(self.models_dir, FILENAME, recipe=self.recipe, kind="side", version=pinned)
        return SideNet.load(path)

    def describe(self) -> dict[str, str]:
        self.ensure_loaded()
        return {"name": self.name, "version": f"{self.version}/{self.trained_version}"}

    def predict_stems(self, stems: torch.Tensor) -> tuple[str, float]:
        """(side, probability of that side) of ONE photo from its block-13 maps at one or more turns.

        The probabilities are averaged. ``Pipeline.process`` passes only the upright cut-out when it has
        an upright estimate (the classifier reads an upright coin best) and all the search's turns
        when it has none (one of them is near upright).
        """
        p = float(np.mean(self.ensure_loaded().probability_obverse(stems)))
        return ("obverse", p) if p >= 0.5 else ("reverse", 1 - p)

    def predict(self, images: Sequence[Image.Image]) -> list[tuple[str, float]]:
        """[(side, probability of that side)] for upright (or roughly upright) cut-outs on neutral."""
        if not images:
            return []
        net = self.ensure_loaded()
        probabilities = net.probability_obverse(self.embedder.read(list(images), stems=True).stems)
        return [("obverse", float(p)) if p >= 0.5 else ("reverse", float(1 - p)) for p in probabilities]

    @staticmethod
    def fit(
        images: Sequence[Image.Image],
        sides: Sequence[str],
        groups: Sequence[str],
        *,
        embedder,
        seed: int = 0,
        copies: int = 1,
        epochs: int = EPOCHS,
        min_steps: int = MIN_STEPS,
    ) -> tuple[SideNet, dict[str, float]]:
        """Train on clean cut-outs plus ``copies`` query-like copies of each; ``groups`` = specimen ids."""
        rng = np.random.default_rng(seed)
        batch_images, labels, batch_groups = [], [], []
        for image, side, group in zip(images, sides, groups, strict=True):
            if side not in SIDES:
                continue
            variants = [image] + [augment_like_query(image, rng) for _ in range(copies)]
            batch_images += variants
            labels += [int(side == "obverse")] * len(variants)
            batch_groups += [group] * len(variants)
        stems = embedder.read(batch_images, stems=True).stems
        return side_net_fit(
            stems,
            np.array(labels),
            np.array(batch_groups),
            features=embedder.backbone.module,
            seed=seed,
            epochs=epochs,
            min_steps=min_steps,
        )
