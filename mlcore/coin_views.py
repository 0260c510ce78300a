"""The coin backbone's views of catalogue cut-outs: cached greyscale cut-outs, training augmentation, queries.

Used by ``mlcore.train_backbone``. The augmentation covers both photo regimes, from a coin of
~56 px (a poor phone photo) to the full studio resolution (a good one): a turn within ±25° (what is
left after the rotation search), scale and centring jitter, resolution, defocus or motion blur,
gamma, contrast, a light gradient, a glint, noise and JPEG at the reduced size. It is written
independently of ``mlcore.degrade`` (the benchmark's query generator), so that the network does not
learn the benchmark. ``validation_query`` makes the simple, fixed queries that choose epochs.
"""

from __future__ import annotations

import io
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from mlcore.backbone import IMAGENET_MEAN, IMAGENET_STD
from mlcore.dataset import CatalogueRecord, side_design, type_key

CACHE_SIZE = 288  # cut-outs are kept at this size, greyscale (the embedding reads grey)
NEUTRAL = 128


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
    from mlcore.cutout import catalogue_cutout

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
