"""Cut a detected object out of its photo: a square, centred, fixed-size image with a soft-edged alpha.

The crop is a square around the detection's box, grown by ``margin`` on every side; where it runs
past the photo's border the missing part is padded (transparent in ``rgba``, neutral grey in
``on_neutral``), so the object stays centred. Two renderings are returned: ``rgba`` (transparent
outside the mask; fully transparent pixels carry the neutral grey, so later resizing does not bleed
background colours into the edge) and ``on_neutral`` (RGB on mid-grey ``NEUTRAL``, the input that
the side classifier and the embedder expect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from mlcore.segment import Detection, object_mask

NEUTRAL = (128, 128, 128)  # mid-grey: neither a white catalogue background nor a black velvet one
FEATHER = 0.8  # Gaussian radius (output pixels) that softens the mask edge without eating the rim


@dataclass
class Cutout:
    """The object cut out of the photo.

    ``box`` is the square crop (x0, y0, x1, y1) in original image coordinates, margin included; it
    may extend past the image (that part is padding). ``scale`` is output pixels per original pixel.
    """

    rgba: Image.Image
    on_neutral: Image.Image
    box: tuple[int, int, int, int]
    scale: float


def crop_box(box: tuple[int, int, int, int], *, margin: float = 0.06) -> tuple[int, int, int, int]:
    """The square crop around ``box`` with ``margin`` (fraction of the object's size) on every side."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    side = max(1, math.ceil(side * (1 + 2 * margin)))
    cx = (x0 + x1) / 2
    cy = (y0 + y1) / 2
    left = math.floor(cx - side / 2)
    top = math.floor(cy - side / 2)
    return (left, top, left + side, top + side)


def make_cutout(image: Image.Image, detection: Detection, *, size: int = 384, margin: float = 0.06) -> Cutout:
    """Crop the detection (square, centred, padded at the border), resize to ``size`` and mask it."""
    if detection.mask.shape != (image.height, image.width):
        raise ValueError(f"mask shape {detection.mask.shape} does not match image size {image.size}")
    box = crop_box(detection.box, margin=margin)
    side = box[2] - box[0]
    scale = size / side
    # Image.crop pads outside the image with zeros: black RGB (hidden by the mask) and mask 0.
    rgb = image.convert("RGB").crop(box)
    mask = Image.fromarray(detection.mask.astype(np.uint8) * 255, mode="L").crop(box)
    reducing = 2.0 if side > 2 * size else None  # big crops: fast box reduction, then Lanczos
    rgb = rgb.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=reducing)
    mask = mask.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=reducing)
    if FEATHER > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(FEATHER))
    neutral = Image.new("RGB", (size, size), NEUTRAL)
    on_neutral = Image.composite(rgb, neutral, mask)
    # Transparent pixels carry neutral grey (not the photo's background) — see the module docstring.
    visible = mask.point(lambda value: 255 if value > 0 else 0)
    rgba = Image.composite(rgb, neutral, visible).convert("RGBA")
    rgba.putalpha(mask)
    return Cutout(rgba=rgba, on_neutral=on_neutral, box=box, scale=scale)


def rotate_upright(image: Image.Image, angle: float) -> Image.Image:
    """``image`` turned ``angle`` degrees counter-clockwise about its centre, same size, corners neutral."""
    if not angle % 360:
        return image.copy()
    fill: Any = NEUTRAL if image.mode == "RGB" else (*NEUTRAL, 0) if image.mode == "RGBA" else 128
    return image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=fill)


def mask_detection(mask: np.ndarray) -> Detection:
    """A ``Detection`` for a known mask (a catalogue photo's, a degraded copy's truth); nearly empty: the frame."""
    if mask.sum() < 0.01 * mask.size:
        mask = np.ones(mask.shape, dtype=bool)
    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    return Detection(box=box, mask=mask, area=float(mask.mean()), circularity=1.0, centrality=1.0, score=1.0)


def cutout_with_mask(image: Image.Image, mask: np.ndarray, *, size: int = 384) -> Image.Image:
    """The pipeline's cut-out on neutral grey (``make_cutout``) for a known mask."""
    return make_cutout(image.convert("RGB"), mask_detection(mask), size=size).on_neutral


def catalogue_cutout(image: Image.Image, *, size: int = 384) -> Image.Image:
    """A studio photo on a plain background (or a cut-out with alpha) → the cut-out the pipeline would store."""
    return cutout_with_mask(image, object_mask(image), size=size)
