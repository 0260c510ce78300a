"""Measure the object finder: mask IoU on composited photos, latency, and multi-coin detection.

``python -m bench.segmentation [--data ../shared/data] [--out FILE] [--per-kind N] [--kinds K,..] [--catalogue N]``
prints (and optionally writes) JSON:

* ``iou``: the collector cut-outs (alpha = hand-made ground-truth mask) composited, at a random
  scale (coin 300–800 px) and position, onto procedurally generated backgrounds (seeded): plain
  white/black/grey/colour, gradients, wood-like and cloth-like textures, brick, and a cluttered
  "photo-like" scene of random shapes; ``+shadow`` kinds add a soft drop shadow, ``+small`` kinds
  a small coin (120–260 px, a few % of a wider photo). IoU of the best
  detection's mask vs the ground truth (the alpha ≥ 50 %), per background kind and overall (mean,
  min, p10, share ≥ 0.9).
* ``latency_s``: p50/p95 wall and CPU seconds of ``find_objects`` on those photos (model loaded first).
* ``coins``: detections in ``skimage.data.coins()`` (24 coins) with a sensible size and shape.
* ``catalogue_iou_vs_whiteness``: ANS catalogue photos (coin on white, often touching the frame),
  IoU against a simple "not white" mask (a proxy, not a hand-made truth).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mlcore.modelfiles import models_dir as default_models_dir
from mlcore.segment import Detection, Segmenter

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


# --- procedural backgrounds (all deterministic given the generator) -------------------------------


def _plain(color: tuple[int, int, int]) -> Callable[[np.random.Generator, tuple[int, int]], Image.Image]:
    def make(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
        jitter = rng.integers(-6, 7, 3)
        return Image.new("RGB", size, tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(color, jitter, strict=True)))

    return make


def _random_colour(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))


def _gradient(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = size
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    array = start[None, None, :] * (1 - t[..., None]) + end[None, None, :] * t[..., None]
    return Image.fromarray(array.astype(np.uint8))


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cell: int) -> np.ndarray:
    width, height = size
    small = rng.random((max(2, height // cell + 2), max(2, width // cell + 2))).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize(size, Image.Resampling.BICUBIC))


def _wood(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    warp = _smooth_noise(rng, size, 120) * 40
    rings = np.sin((yy + warp) / rng.uniform(6, 14) + 3 * _smooth_noise(rng, size, 300))
    grain = _smooth_noise(rng, (width, height), 4) * 0.3
    t = np.clip(0.5 + 0.35 * rings + grain - 0.15, 0, 1)
    light, dark = np.array([196, 140, 84]) * rng.uniform(0.7, 1.1), np.array([110, 66, 32]) * rng.uniform(0.6, 1.1)
    array = dark[None, None] * (1 - t[..., None]) + light[None, None] * t[..., None]
    if rng.random() < 0.5:
        array = array.transpose(1, 0, 2)[:height, :width] if width == height else array
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _cloth(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(3, 7)
    weave = 0.5 + 0.25 * np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period)
    folds = _smooth_noise(rng, size, 160) * 0.5
    t = np.clip(weave * 0.6 + folds + rng.normal(0, 0.05, (height, width)), 0, 1)
    base = rng.integers(20, 230, 3).astype(np.float32)
    array = base[None, None] * (0.55 + 0.6 * t[..., None])
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _noise(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = size
    base = rng.integers(40, 220, 3).astype(np.float32)
    array = base[None, None] + rng.normal(0, rng.uniform(10, 40), (height, width, 3))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _brick(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = size
    mortar = tuple(int(v) for v in rng.integers(170, 220, 3))
    image = Image.new("RGB", size, mortar)
    draw = ImageDraw.Draw(image)
    brick_h = int(rng.integers(30, 70))
    brick_w = int(brick_h * rng.uniform(2.0, 3.0))
    gap = max(2, brick_h // 10)
    base = np.array([150, 60, 40]) * rng.uniform(0.7, 1.2)
    for row, y in enumerate(range(-brick_h, height + brick_h, brick_h)):
        offset = (brick_w // 2) * (row % 2)
        for x in range(-brick_w - offset, width + brick_w, brick_w):
            colour = tuple(int(np.clip(c, 0, 255)) for c in base * rng.uniform(0.8, 1.2))
            draw.rectangle((x + gap, y + gap, x + brick_w - gap, y + brick_h - gap), fill=colour)
    array = np.asarray(image, dtype=np.float32) + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _clutter(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A 'photo-like' scene: a gradient table with many random shapes (some round), slightly blurred."""
    image = _gradient(rng, size)
    draw = ImageDraw.Draw(image)
    width, height = size
    for _ in range(int(rng.integers(25, 60))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = int(rng.integers(-50, width)), int(rng.integers(-50, height))
        w, h = int(rng.integers(10, max(11, width // 4))), int(rng.integers(10, max(11, height // 4)))
        kind = rng.integers(0, 4)
        if kind == 0:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        elif kind == 1:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        elif kind == 2:
            draw.line((x, y, x + w, y + h), fill=colour, width=int(rng.integers(2, 12)))
        else:
            points = [(int(x + rng.integers(0, w)), int(y + rng.integers(0, h))) for _ in range(5)]
            draw.polygon(points, fill=colour)
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.5))))


BACKGROUNDS: dict[str, Callable[[np.random.Generator, tuple[int, int]], Image.Image]] = {
    "white": _plain((250, 250, 250)),
    "black": _plain((12, 12, 12)),
    "grey": _plain((128, 128, 128)),
    "colour": _random_colour,
    "gradient": _gradient,
    "noise": _noise,
    "wood": _wood,
    "cloth": _cloth,
    "brick": _brick,
    "clutter": _clutter,
}
# Background kinds measured: every generator, two with a drop shadow under the coin, two with a small coin.
KINDS = (*BACKGROUNDS, "white+shadow", "wood+shadow", "clutter+small", "cloth+small")


def composite_sample(coin: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """The coin (RGBA) pasted at a random scale and position on a generated background; (photo, truth mask)."""
    base, _, variant = kind.partition("+")
    small = variant == "small"  # a phone photo taken from afar: the coin is a few % of the frame
    diameter = int(rng.integers(120, 261)) if small else int(rng.integers(300, 801))
    scale = diameter / max(coin.size)
    coin = coin.resize(
        (max(1, round(coin.width * scale)), max(1, round(coin.height * scale))), Image.Resampling.LANCZOS
    )
    canvas_w = int(coin.width * (rng.uniform(4.0, 5.5) if small else rng.uniform(1.25, 2.6)))
    canvas_h = int(coin.height * (rng.uniform(3.0, 4.5) if small else rng.uniform(1.25, 2.2)))
    shadow = variant == "shadow"
    background = BACKGROUNDS[base](rng, (canvas_w, canvas_h))
    x = int(rng.integers(0, canvas_w - coin.width + 1))
    y = int(rng.integers(0, canvas_h - coin.height + 1))
    alpha = coin.getchannel("A")
    photo = background.copy()
    if shadow:
        # A soft drop shadow, as under a desk lamp: darker background that is not part of the coin.
        offset = int(coin.width * rng.uniform(0.02, 0.06))
        blur = coin.width * rng.uniform(0.01, 0.04)
        strength = float(rng.uniform(0.45, 0.7))
        shade = alpha.point(lambda v: int(v * strength)).filter(ImageFilter.GaussianBlur(blur))
        photo.paste(Image.new("RGB", coin.size, (0, 0, 0)), (x + offset, y + offset), shade)
    photo.paste(coin.convert("RGB"), (x, y), alpha)
    truth = np.zeros((canvas_h, canvas_w), dtype=bool)
    truth[y : y + coin.height, x : x + coin.width] = np.asarray(alpha) >= 128
    return photo, truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _summary(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "n": len(values),
        "mean": round(float(array.mean()), 4),
        "min": round(float(array.min()), 4),
        "p10": round(float(np.percentile(array, 10)), 4),
        "share_ge_0.9": round(float((array >= 0.9).mean()), 4),
    }


def sensible_coins(detections: list[Detection]) -> list[Detection]:
    """Detections that look like a whole coin: roundish and not a speck or glare patch."""
    return [d for d in detections if d.circularity >= 0.6 and 0.002 <= d.area <= 0.9]


def bench_iou(
    segmenter: Segmenter, images: list[Path], *, per_kind: int, seed: int, kinds: tuple[str, ...] = KINDS
) -> tuple[dict[str, list[float]], dict[str, list[float]], list[dict]]:
    """IoU per background kind, latencies (wall and CPU seconds) and the worst cases."""
    rng = np.random.default_rng(seed)
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    latencies: dict[str, list[float]] = {"wall": [], "cpu": []}
    worst: list[dict] = []
    coins = [Image.open(path).convert("RGBA") for path in images]
    for kind in kinds:
        for i in range(per_kind):
            index = int(rng.integers(0, len(coins)))
            photo, truth = composite_sample(coins[index], kind, rng)
            started, cpu = time.perf_counter(), time.process_time()
            detections = segmenter.find_objects(photo)
            latencies["wall"].append(time.perf_counter() - started)
            latencies["cpu"].append(time.process_time() - cpu)
            score = iou(detections[0].mask, truth) if detections else 0.0
            results[kind].append(score)
            worst.append({"kind": kind, "i": i, "image": images[index].name, "iou": round(score, 4)})
    worst.sort(key=lambda row: row["iou"])
    return results, latencies, worst[:8]


def whiteness_proxy(photo: Image.Image) -> np.ndarray:
    """Approximate truth for a studio photo on white: the largest non-white region, holes filled."""
    from scipy import ndimage

    array = np.asarray(photo.convert("RGB"), dtype=np.int16)
    mask = ndimage.binary_fill_holes((255 - array).max(axis=2) > 25)
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    return labels == int(np.argmax(sizes)) + 1


def bench_catalogue(segmenter: Segmenter, ans_dir: Path, *, limit: int) -> dict:
    """ANS catalogue photos (300 px on white, coin often touching the frame): IoU vs ``whiteness_proxy``."""
    paths = sorted((ans_dir / "images").glob("*.jpg"))
    if not paths:
        return {"skipped": f"no images under {ans_dir}"}
    step = max(1, len(paths) // limit)
    scores, cpu = [], []
    for path in paths[::step][:limit]:
        photo = Image.open(path).convert("RGB")
        started = time.process_time()
        detections = segmenter.find_objects(photo)
        cpu.append(time.process_time() - started)
        scores.append(iou(detections[0].mask, whiteness_proxy(photo)) if detections else 0.0)
    return {**_summary(scores), "cpu_s_p50": round(float(np.median(cpu)), 3)}


def bench_coins(segmenter: Segmenter) -> dict:
    from skimage import data

    photo = Image.fromarray(data.coins()).convert("RGB")
    started, cpu = time.perf_counter(), time.process_time()
    detections = segmenter.find_objects(photo)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "expected": 24,
        "detections": len(detections),
        "sensible": len(sensible_coins(detections)),
        "wall_s": round(elapsed, 3),
        "cpu_s": round(cpu, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=None)
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--per-kind", type=int, default=12, help="composited photos per background kind")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated background kinds")
    parser.add_argument("--catalogue", type=int, default=30, help="ANS catalogue photos to score (0: none)")
    args = parser.parse_args(argv)
    segmenter = Segmenter(default_models_dir(args.models_dir))
    segmenter.ensure_loaded()
    images = sorted((Path(args.data) / "collector-cutouts" / "images").glob("*.webp"))
    report: dict = {
        "model": segmenter.describe(),
        "seed": args.seed,
    }
    if images:
        per_kind, latencies, worst = bench_iou(
            segmenter, images, per_kind=args.per_kind, seed=args.seed, kinds=tuple(args.kinds.split(","))
        )
        every = [value for values in per_kind.values() for value in values]
        report["iou"] = {
            "overall": _summary(every),
            "target_mean": 0.95,
            "per_background": {kind: _summary(values) for kind, values in per_kind.items()},
            "worst": worst,
        }
        # Wall time depends on what else the machine runs; CPU time (all threads) is the cost itself.
        report["latency_s"] = {
            name: {
                "p50": round(float(np.percentile(values, 50)), 3),
                "p95": round(float(np.percentile(values, 95)), 3),
            }
            for name, values in latencies.items()
        }
        report["latency_s"]["n"] = len(latencies["wall"])
        report["latency_s"]["load_average_1min"] = round(os.getloadavg()[0], 2)
        report["latency_s"]["cpu_count"] = os.cpu_count()
    else:
        report["iou"] = f"no collector cut-outs under {args.data}"
    report["coins"] = bench_coins(segmenter)
    if args.catalogue:
        report["catalogue_iou_vs_whiteness"] = bench_catalogue(
            segmenter, Path(args.data) / "ans-roman", limit=args.catalogue
        )
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
