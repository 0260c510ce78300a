"""Train the base backbone for coin retrieval: MobileNetV2 fine-tuned end to end on catalogue types.

``python -m mlcore.train_backbone --data ../shared/data/ans-roman --out var/backbone [--hours H]``

Run once, long (hours of CPU), resumable: it checkpoints every few minutes and at each epoch's end,
and the same command continues where it stopped (a session's background jobs end with the session).
The result, ``features.pt``, is a state dict of torchvision's ``mobilenet_v2().features`` in the
layout the ImageNet file has, so ``mlcore.backbone`` loads either one the same way.

Why each choice (figures: docs/ml-notes.md, "A backbone trained for coins"):

* The descriptor trained is the one the product computes (``mlcore.embed``): block 17's maps, GeM in
  each cell of a 2×2 grid, signed square root, L2. No head is added, so nothing learned is left
  behind when the network is exported.
* Classes are *designs* per side (``mlcore.dataset.side_design``: authority, legend letters,
  description), not types: two types that share an obverse show the same obverse, and forcing their
  photos apart teaches noise. Deep metric learning then ranks unseen types' designs.
* Loss: a cosine softmax over one proxy per class (temperature 0.05, label smoothing 0.1; proxies
  start at the ImageNet descriptors' class means, so the first steps do not tear the features up)
  plus a supervised contrastive term over the batch, where each image comes with a second view: a
  photo of another specimen of its design when there is one, else another augmentation of itself
  (so the many single-specimen designs teach too).
* Augmentation covers both photo regimes, from a coin of ~56 px (poor phone photo) to the full
  studio resolution (good one): turn within ±25° (what is left after the rotation search), scale
  and centring jitter, resolution, defocus or motion blur, gamma, contrast, a light gradient, a
  glint, noise, JPEG at the reduced size. It is written independently of ``mlcore.degrade`` (the
  benchmark's query generator) so the network does not learn the benchmark.
* Types are split by a seeded hash (``SPLIT_SEED``): ``TRAIN_SHARE`` of them are trained on, the next
  ``VAL_SHARE`` choose epochs and settings, and the rest are never seen: every reported figure is
  measured on them, with the whole dev set as the gallery.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from mlcore.backbone import IMAGENET_MEAN, IMAGENET_STD
from mlcore.dataset import CatalogueRecord, load_ans_layout, side_design, split_types, type_key
from mlcore.embed import grid_gem

SPLIT_SEED = 20  # the backbone's type split (issue 20); never change it for a model that is shipped
TRAIN_SHARE = 0.6
VAL_SHARE = 0.1  # types after TRAIN_SHARE up to TRAIN_SHARE + VAL_SHARE: choosing epochs and settings
CACHE_SIZE = 288  # cut-outs are kept at this size, greyscale (the embedding reads grey)
NEUTRAL = 128
LAYER = 17
GRID = 2
GEM_P = 3.0


@dataclass
class Settings:
    """Everything that defines a training run (saved in the checkpoint; a resume must match)."""

    input_size: int = 224
    epochs: int = 18
    batch_pairs: int = 24  # 48 views a step
    lr: float = 2e-4
    proxy_lr: float = 3e-2
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    temperature: float = 0.05
    contrast_temperature: float = 0.1
    label_smoothing: float = 0.1
    seed: int = 0
    all_types: bool = False  # train on every type (the shipped model once the recipe is chosen)


@dataclass
class Split:
    """Which types a run trains on, chooses on (val) and is measured on (test)."""

    train: set[str] = field(default_factory=set)
    val: set[str] = field(default_factory=set)
    test: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, records: Sequence[CatalogueRecord], *, all_types: bool = False) -> Split:
        if all_types:
            return cls(train={type_key(r) for r in records})
        train = split_types(records, seed=SPLIT_SEED, train_fraction=TRAIN_SHARE)
        seen = split_types(records, seed=SPLIT_SEED, train_fraction=TRAIN_SHARE + VAL_SHARE)
        return cls(train=train, val=seen - train, test={type_key(r) for r in records} - seen)


# --------------------------------------------------------------------------------------------- data


@dataclass
class Images:
    """Every side photo of the records as a greyscale cut-out (N, CACHE_SIZE, CACHE_SIZE) uint8."""

    pixels: np.ndarray
    record: list[str]
    type: list[str]
    side: list[str]
    design: list[str]


def load_images(records: Sequence[CatalogueRecord], cache: Path | None = None, *, progress=print) -> Images:
    """Cut every photo out once (``catalogue_cutout``: the platform's own cut-out) and keep it in ``cache``."""
    from mlcore.evaluate import catalogue_cutout

    rows = [(r, side, path) for r in records for side, path in sorted(r.images.items())]
    keys = [f"{r.record_id}:{side}" for r, side, _ in rows]
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            if list(data["keys"]) == keys:
                pixels = data["pixels"]
                return Images(pixels, *_columns(rows))
    pixels = np.zeros((len(rows), CACHE_SIZE, CACHE_SIZE), dtype=np.uint8)
    started = time.monotonic()
    for i, (_, _, path) in enumerate(rows):
        with Image.open(path) as image:
            cut = catalogue_cutout(image).convert("L")
        pixels[i] = np.asarray(cut.resize((CACHE_SIZE, CACHE_SIZE), Image.Resampling.LANCZOS))
        if progress and (i + 1) % 500 == 0:
            progress(f"cut-outs: {i + 1}/{len(rows)} ({time.monotonic() - started:.0f} s)")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, pixels=pixels, keys=np.array(keys))
        tmp.replace(cache)
    return Images(pixels, *_columns(rows))


def _columns(rows) -> tuple[list[str], list[str], list[str], list[str]]:
    return (
        [r.record_id for r, _, _ in rows],
        [type_key(r) for r, _, _ in rows],
        [side for _, side, _ in rows],
        [side_design(r, side) for r, side, _ in rows],
    )


def _disc(size: int) -> np.ndarray:
    centre = np.arange(size) + 0.5 - size / 2
    return (centre[:, None] ** 2 + centre[None, :] ** 2) <= (size / 2) ** 2


def augment(pixels: np.ndarray, rng: np.random.Generator, size: int, *, clean: float = 0.1) -> np.ndarray:
    """A cut-out as a phone might show it, from a poor snapshot to a sharp close-up: (size, size) float32 0–255.

    ``clean``: the share returned only turned and jittered (catalogue photo against catalogue photo).
    """
    full = pixels.shape[0]
    pad = full // 10  # room to zoom out: the segmenter's box may be loose
    image = Image.fromarray(np.pad(pixels, pad, constant_values=NEUTRAL))
    angle = float(rng.uniform(-25, 25))
    scale = float(rng.uniform(0.9, 1.1))
    shift = rng.uniform(-0.04, 0.04, 2) * full
    image = image.rotate(angle, resample=Image.Resampling.BILINEAR, translate=tuple(shift), fillcolor=NEUTRAL)
    crop = full / scale
    offset = pad + (full - crop) / 2
    if rng.random() < clean:
        image = image.resize(
            (size, size), Image.Resampling.BILINEAR, box=(offset, offset, offset + crop, offset + crop)
        )
        return _finish(np.asarray(image, dtype=np.float32), size)
    coin = int(math.exp(rng.uniform(math.log(56), math.log(340))))  # px across the coin in the photo
    low = min(coin, full)
    image = image.resize((low, low), Image.Resampling.BILINEAR, box=(offset, offset, offset + crop, offset + crop))
    roll = rng.random()
    if roll < 0.45:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.8)) * low / 150))
    elif roll < 0.6:
        image = image.filter(_motion_kernel(rng))
    a = np.asarray(image, dtype=np.float32) / 255.0
    a = a ** float(math.exp(rng.uniform(-0.5, 0.5)))  # gamma
    a = (a - a.mean()) * float(rng.uniform(0.6, 1.4)) + a.mean() * float(rng.uniform(0.75, 1.25))
    yy, xx = np.mgrid[0:low, 0:low] / max(1, low - 1) - 0.5
    direction = rng.uniform(0, 2 * math.pi)
    a = a * (1 + float(rng.uniform(0, 0.6)) * (np.cos(direction) * xx + np.sin(direction) * yy))
    if rng.random() < 0.3:  # a specular glint
        cx, cy = rng.uniform(-0.35, 0.35, 2)
        radius = float(rng.uniform(0.03, 0.15))
        a = a + float(rng.uniform(0.2, 0.6)) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
    a = a + rng.normal(0, float(rng.uniform(0, 0.03)), a.shape)
    image = Image.fromarray(np.clip(a * 255, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(20, 96)))
    buffer.seek(0)
    image = Image.open(buffer).convert("L").resize((size, size), Image.Resampling.BILINEAR)
    return _finish(np.asarray(image, dtype=np.float32), size)


def _motion_kernel(rng: np.random.Generator) -> ImageFilter.Kernel:
    kernel = np.zeros((5, 5), dtype=np.float32)
    direction = int(rng.integers(4))
    for i in range(5):
        row, col = [(2, i), (i, 2), (i, i), (i, 4 - i)][direction]
        kernel[row, col] = 1.0
    return ImageFilter.Kernel((5, 5), kernel.flatten().tolist(), scale=5)


_DISCS: dict[int, np.ndarray] = {}


def _finish(grey: np.ndarray, size: int) -> np.ndarray:
    """Outside the inscribed disc neutral, as ``mlcore.embed.prepare`` leaves it."""
    disc = _DISCS.setdefault(size, _disc(size))
    return np.where(disc, grey, float(NEUTRAL)).astype(np.float32)


def clean_view(pixels: np.ndarray, size: int) -> np.ndarray:
    """A catalogue cut-out as the embedding reads it (no augmentation)."""
    image = Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR)
    return _finish(np.asarray(image, dtype=np.float32), size)


def to_batch(greys: Sequence[np.ndarray]) -> torch.Tensor:
    """Grey (0–255) views → the network's normalised RGB input, channels-last."""
    x = torch.from_numpy(np.stack(greys)).div_(255.0).unsqueeze(1).expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


# -------------------------------------------------------------------------------------------- model


def imagenet_features(weights: Path) -> torch.nn.Module:
    """MobileNetV2 ``features`` with the ImageNet weights (batch norms kept: they are trained too)."""
    import torchvision

    state = torch.load(weights, map_location="cpu", weights_only=True)
    model = torchvision.models.mobilenet_v2(weights=None)
    keys = list(model.features.state_dict().keys())
    model.features.load_state_dict(dict(zip(keys, state.values(), strict=True)), strict=True)
    return model.features


def describe(features: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The product's descriptor (``mlcore.embed``): block 17, GeM on a 2×2 grid, signed root, L2.

    In training mode block 18 also runs (without gradient) so that its batch-norm statistics follow
    block 17's new output: the orientation estimator reads block 18.
    """
    for index in range(LAYER + 1):
        x = features[index](x)
    if features.training:
        with torch.no_grad():
            features[LAYER + 1](x)
    pooled = grid_gem(x, GRID, GEM_P)
    return F.normalize(pooled.sign() * pooled.abs().clamp(min=1e-12).sqrt(), dim=1)


@torch.no_grad()
def embed_all(features: torch.nn.Module, greys: Sequence[np.ndarray], batch: int = 64) -> np.ndarray:
    was = features.training
    features.eval()
    out = [describe(features, to_batch(greys[i : i + batch])).numpy() for i in range(0, len(greys), batch)]
    features.train(was)
    return np.concatenate(out) if out else np.zeros((0, 4 * 320), np.float32)


def losses(
    embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, settings: Settings
) -> tuple[torch.Tensor, torch.Tensor]:
    """(proxy cosine-softmax loss, supervised contrastive loss) of one batch."""
    logits = embeddings @ F.normalize(proxies, dim=1).T / settings.temperature
    proxy = F.cross_entropy(logits, labels, label_smoothing=settings.label_smoothing)
    sim = embeddings @ embeddings.T / settings.contrast_temperature
    eye = torch.eye(len(labels), dtype=torch.bool)
    sim = sim.masked_fill(eye, -1e9)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    log_p = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    has = positive.any(dim=1)
    contrast = -(log_p * positive).sum(1)[has] / positive.sum(1)[has]
    return proxy, contrast.mean()


# ----------------------------------------------------------------------------------------- training


class Trainer:
    """One resumable run: the network, the proxies, the optimiser and where in the epochs it is."""

    def __init__(self, images: Images, rows: np.ndarray, features: torch.nn.Module, settings: Settings) -> None:
        self.images, self.rows, self.settings = images, rows, settings
        designs = sorted({images.design[i] for i in rows})
        self.class_of = {d: c for c, d in enumerate(designs)}
        self.labels = np.array([self.class_of.get(images.design[i], -1) for i in range(len(images.design))])
        by_class: dict[int, list[int]] = defaultdict(list)
        for i in rows:
            by_class[int(self.labels[i])].append(int(i))
        self.by_class = dict(by_class)
        self.features = features.to(memory_format=torch.channels_last).train()
        self.proxies = torch.nn.Parameter(torch.zeros(len(designs), 4 * 320))
        self.optimiser = torch.optim.AdamW(
            [
                {"params": list(self.features.parameters()), "lr": settings.lr, "weight_decay": settings.weight_decay},
                {"params": [self.proxies], "lr": settings.proxy_lr, "weight_decay": 0.0},
            ]
        )
        self.epoch, self.step_in_epoch, self.step = 0, 0, 0
        self.history: list[dict] = []

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.rows) // self.settings.batch_pairs)

    @property
    def total_steps(self) -> int:
        return self.settings.epochs * self.steps_per_epoch

    def init_proxies(self) -> None:
        """Each proxy at its class's mean ImageNet descriptor of the clean cut-outs."""
        size = self.settings.input_size
        vectors = embed_all(self.features, [clean_view(self.images.pixels[i], size) for i in self.rows])
        sums = np.zeros(tuple(self.proxies.shape), dtype=np.float64)
        np.add.at(sums, self.labels[self.rows], vectors)
        with torch.no_grad():
            self.proxies.copy_(F.normalize(torch.from_numpy(sums).float(), dim=1))

    def lr_factor(self) -> float:
        s = self.settings
        if self.step < s.warmup_steps:
            return (self.step + 1) / s.warmup_steps
        progress = (self.step - s.warmup_steps) / max(1, self.total_steps - s.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``index``-th batch of ``epoch``: a seeded function of both, so a resumed run sees the same."""
        s = self.settings
        order = np.random.default_rng([s.seed, epoch]).permutation(self.rows)
        anchors = order[index * s.batch_pairs : (index + 1) * s.batch_pairs]
        views, labels = [], []
        for position, anchor in enumerate(anchors):
            rng = np.random.default_rng([s.seed, epoch, index, position])
            siblings = [
                i
                for i in self.by_class[int(self.labels[anchor])]
                if self.images.record[i] != self.images.record[anchor]
            ]
            partner = int(rng.choice(siblings)) if siblings else int(anchor)
            for row in (int(anchor), partner):
                views.append(augment(self.images.pixels[row], rng, s.input_size))
                labels.append(int(self.labels[row]))
        return to_batch(views), torch.tensor(labels)

    def train_step(self) -> dict[str, float]:
        x, y = self.batch(self.epoch, self.step_in_epoch)
        factor = self.lr_factor()
        for group, base in zip(self.optimiser.param_groups, (self.settings.lr, self.settings.proxy_lr), strict=True):
            group["lr"] = base * factor
        embeddings = describe(self.features, x)
        proxy, contrast = losses(embeddings, y, self.proxies, self.settings)
        loss = proxy + contrast
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.features.parameters(), 5.0)
        self.optimiser.step()
        self.step += 1
        self.step_in_epoch += 1
        if self.step_in_epoch >= self.steps_per_epoch:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        return {"loss": float(loss.detach()), "proxy": float(proxy.detach()), "contrast": float(contrast.detach())}

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    def state(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "features": self.features.state_dict(),
            "proxies": self.proxies.detach().clone(),
            "optimiser": self.optimiser.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "step": self.step,
            "history": self.history,
        }

    def load_state(self, state: dict) -> None:
        if state["settings"] != asdict(self.settings):
            raise ValueError(
                f"The checkpoint was made with other settings ({state['settings']}); "
                "pass the same ones or use another --out folder."
            )
        self.features.load_state_dict(state["features"])
        with torch.no_grad():
            self.proxies.copy_(state["proxies"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.epoch, self.step_in_epoch, self.step = state["epoch"], state["step_in_epoch"], state["step"]
        self.history = list(state["history"])


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Regime:
    """How a validation query is made from a cut-out: the coin's size in px, blur and JPEG quality."""

    name: str
    coin: tuple[int, int]
    blur: tuple[float, float]
    quality: tuple[int, int]


REGIMES = (
    Regime("good", (500, 1000), (0.0, 0.9), (75, 92)),
    Regime("poor", (120, 170), (0.5, 1.5), (30, 50)),
)


def validation_query(pixels: np.ndarray, rng: np.random.Generator, regime: Regime, size: int) -> np.ndarray:
    """A fixed, simple query (turned ≤ 10°, reduced, blurred, JPEG) for choosing epochs, not for reporting."""
    image = Image.fromarray(pixels).rotate(float(rng.uniform(-10, 10)), Image.Resampling.BILINEAR, fillcolor=NEUTRAL)
    coin = min(int(rng.integers(*regime.coin)), image.width)
    image = image.resize((coin, coin), Image.Resampling.BILINEAR)
    blur = float(rng.uniform(*regime.blur))
    if blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(*regime.quality)))
    buffer.seek(0)
    image = Image.open(buffer).convert("L").resize((size, size), Image.Resampling.BILINEAR)
    return _finish(np.asarray(image, dtype=np.float32), size)


def retrieval_figures(
    gallery: np.ndarray, queries: np.ndarray, images: Images, gallery_rows: np.ndarray, query_rows: np.ndarray
) -> dict[str, float]:
    """Type recall@1/@8 and design recall@1, leaving each query's own specimen out of the gallery."""
    scores = queries @ gallery.T
    hits1 = hits8 = design1 = 0
    for q, row in enumerate(query_rows):
        order = np.argsort(-scores[q])
        types: list[str] = []
        first_design = None
        for g in order:
            image = gallery_rows[g]
            if images.record[image] == images.record[row]:
                continue
            if first_design is None:
                first_design = images.design[image]
            if images.type[image] not in types:
                types.append(images.type[image])
            if len(types) == 8:
                break
        hits1 += bool(types) and types[0] == images.type[row]
        hits8 += images.type[row] in types
        design1 += first_design == images.design[row]
    n = max(1, len(query_rows))
    return {"recall_at_1": hits1 / n, "recall_at_8": hits8 / n, "design_recall_at_1": design1 / n}


def query_rows_of(images: Images, types: set[str]) -> np.ndarray:
    """Photos of the given types whose type has another specimen (so there is something to find)."""
    records_of: dict[str, set[str]] = defaultdict(set)
    for record, type_ in zip(images.record, images.type, strict=True):
        records_of[type_].add(record)
    return np.array([i for i, t in enumerate(images.type) if t in types and len(records_of[t]) > 1], dtype=int)


def validate(
    features: torch.nn.Module,
    images: Images,
    gallery_rows: np.ndarray,
    query_rows: np.ndarray,
    size: int,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    gallery = embed_all(features, [clean_view(images.pixels[i], size) for i in gallery_rows])
    out = {}
    for regime in REGIMES:
        rng = np.random.default_rng([seed, len(regime.name)])
        queries = embed_all(features, [validation_query(images.pixels[i], rng, regime, size) for i in query_rows])
        out[regime.name] = {
            k: round(v, 4) for k, v in retrieval_figures(gallery, queries, images, gallery_rows, query_rows).items()
        }
    return out


# ----------------------------------------------------------------------------------------------- run


def export(features: torch.nn.Module, path: Path) -> Path:
    """The network as the ImageNet weights file is laid out (``mlcore.backbone.load_torch_features``)."""
    state = {k: v.detach().clone().contiguous() for k, v in features.state_dict().items()}
    save_atomic(state, path)
    return path


def run(
    records: Sequence[CatalogueRecord],
    *,
    weights: Path,
    out: Path,
    settings: Settings,
    hours: float | None = None,
    max_steps: int | None = None,
    checkpoint_minutes: float = 5.0,
    validate_every: int = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Train (or resume) until the planned epochs, ``hours`` or ``max_steps`` are spent; return the history.

    ``out`` holds ``checkpoint.pt``, ``history.json``, ``cutouts.npz`` and, at the end, ``features.pt``.
    """
    torch.manual_seed(settings.seed)
    out.mkdir(parents=True, exist_ok=True)
    split = Split.of(records, all_types=settings.all_types)
    images = load_images(records, out / "cutouts.npz", progress=log)
    rows = np.array([i for i, t in enumerate(images.type) if t in split.train], dtype=int)
    trainer = Trainer(images, rows, imagenet_features(weights), settings)
    checkpoint = out / "checkpoint.pt"
    val_types = split.val or split.train
    gallery_rows = np.array([i for i, t in enumerate(images.type) if t in split.train | split.val], dtype=int)
    query_rows = query_rows_of(images, val_types)
    if checkpoint.exists():
        trainer.load_state(torch.load(checkpoint, map_location="cpu", weights_only=True))
        log(f"resumed at epoch {trainer.epoch}, step {trainer.step}/{trainer.total_steps}")
    else:
        log(
            f"{len(rows)} training photos, {len(trainer.class_of)} designs, {trainer.steps_per_epoch} steps an epoch; "
            f"{len(query_rows)} validation queries against {len(gallery_rows)} photos"
        )
        if validate_every:
            trainer.history.append(
                {
                    "epoch": 0,
                    "validation": validate(trainer.features, images, gallery_rows, query_rows, settings.input_size),
                }
            )
            log(json.dumps(trainer.history[-1]))
        trainer.init_proxies()
    started = time.monotonic()
    last_save = started
    steps_here = 0
    running: list[dict[str, float]] = []
    while not trainer.done:
        if hours is not None and time.monotonic() - started > hours * 3600:
            break
        if max_steps is not None and steps_here >= max_steps:
            break
        epoch = trainer.epoch
        running.append(trainer.train_step())
        steps_here += 1
        if trainer.epoch != epoch:  # an epoch ended
            entry = {"epoch": trainer.epoch, "step": trainer.step, **_mean(running)}
            running = []
            if validate_every and trainer.epoch % validate_every == 0:
                entry["validation"] = validate(trainer.features, images, gallery_rows, query_rows, settings.input_size)
            entry["minutes"] = round((time.monotonic() - started) / 60, 1)
            trainer.history.append(entry)
            log(json.dumps(entry))
            save_atomic(trainer.state(), checkpoint)
            last_save = time.monotonic()
        elif time.monotonic() - last_save > checkpoint_minutes * 60:
            save_atomic(trainer.state(), checkpoint)
            last_save = time.monotonic()
            log(f"checkpoint at step {trainer.step}/{trainer.total_steps} (loss {_mean(running[-20:]).get('loss')})")
    save_atomic(trainer.state(), checkpoint)
    (out / "history.json").write_text(json.dumps(trainer.history, indent=1))
    if trainer.done:
        export(trainer.features, out / "features.pt")
        log(f"done: {out / 'features.pt'}")
    return {"done": trainer.done, "step": trainer.step, "history": trainer.history}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}


def main(argv: list[str] | None = None) -> int:
    from mlcore.modelfiles import check_file, models_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder in the ans-roman layout")
    parser.add_argument("--out", required=True, help="checkpoints, history and the result go here")
    parser.add_argument("--models-dir", help="where the ImageNet weights are (default: the models folder)")
    parser.add_argument("--hours", type=float, help="stop (checkpointed) after this long; run again to go on")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--validate-every", type=int, default=1)
    for name, value in asdict(Settings()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=type(value), default=value)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings(**{name: getattr(args, name) for name in asdict(Settings())})
    weights = check_file(models_dir(args.models_dir), "mobilenetv2-imagenet")
    result = run(
        load_ans_layout(args.data),
        weights=weights,
        out=Path(args.out),
        settings=settings,
        hours=args.hours,
        max_steps=args.max_steps,
        validate_every=args.validate_every,
        log=lambda line: print(line, flush=True),
    )
    return 0 if result["done"] or args.hours or args.max_steps else 1


if __name__ == "__main__":
    sys.exit(main())
