"""Turn a clean catalogue photo into what a visitor's phone would send: the benchmark's queries.

``degrade_like_phone`` cuts the coin out of its studio photo (plain light background → threshold
mask, or the alpha channel of an RGBA cut-out), then builds a phone snapshot of it: a procedural
background (wood, cloth, paper, a cluttered desk or a palm), the coin turned by any angle and
slightly foreshortened (the phone is not held perfectly parallel), a soft shadow, uneven light and a
colour cast, off-centre framing, blur, sensor noise, a small final size (the coin is about 150 px
across) and strong JPEG compression. Everything is drawn from the ``rng`` passed in, so a seed
defines a query exactly. ``degrade_with_truth`` also returns what was done (angle, coin box), which
the evaluation needs to score rotation estimates.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from mlcore.segment import object_mask

BACKGROUNDS = ("wood", "cloth", "paper", "clutter", "skin")


@dataclass(frozen=True)
class PhotoRegime:
    """How good a phone photo is: the coin's size in it, the optics and the compression.

    ``poor`` is the worst a volunteer sends (a coin of ~150 px, defocused, JPEG 30–50); ``good`` is a
    phone at close range (the coin 500–1,000 px across, mild defocus ≤ 0.9 px, JPEG 75–92). Both
    have the same framing, tilt, light, glint and backgrounds. Blur is in final-image pixels.
    """

    name: str
    coin_size: tuple[float, float]  # (low, high) of a uniform draw; equal: normal around it (±12 %)
    oversample: float  # the scene is drawn this much larger than the final photo (optics, not pixels)
    fill: tuple[float, float]  # the coin's share of the frame's shorter side
    blur: tuple[float, float]
    shake: float  # probability of a little hand shake
    noise: tuple[float, float]
    quality: tuple[int, int]


REGIMES = {
    "poor": PhotoRegime("poor", (150.0, 150.0), 1.5, (0.35, 0.75), (0.3, 1.1), 0.3, (2.0, 7.0), (30, 51)),
    "good": PhotoRegime("good", (500.0, 1000.0), 1.0, (0.5, 0.8), (0.0, 0.9), 0.1, (1.0, 4.0), (75, 93)),
}


@dataclass(frozen=True)
class DegradedPhoto:
    """A degraded query and its ground truth.

    ``angle`` is the counter-clockwise rotation (degrees) applied to the upright coin, so turning the
    photo by ``-angle`` (i.e. ``rotate_upright(image, -angle)`` … see ``mlcore.orientation``) makes it
    upright again; ``box`` is the coin's bounding box in the returned image (x0, y0, x1, y1) and
    ``mask`` its boolean mask (the ground truth a segmenter is scored against).
    """

    image: Image.Image
    angle: float
    box: tuple[int, int, int, int]
    background: str
    mask: np.ndarray


def coin_rgba(image: Image.Image) -> Image.Image:
    """The object cropped to its mask's box, as RGBA with a slightly softened edge."""
    mask = object_mask(image)
    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    alpha = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))
    rgba = image.convert("RGB").copy()
    rgba.putalpha(alpha)
    return rgba.crop(box)


# --- Procedural backgrounds ---------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Noise in [0, 1] with features about ``scale`` pixels wide.

    Coarse noise is drawn on a small grid and upsampled (bicubic), which is much cheaper than a wide
    Gaussian filter on the full canvas and looks the same.
    """
    height, width = shape
    if scale <= 2.0:
        noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=max(scale, 0.5))
    else:
        grid = (max(2, int(math.ceil(width / scale))), max(2, int(math.ceil(height / scale))))
        coarse = rng.standard_normal((grid[1], grid[0])).astype(np.float32)
        noise = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BICUBIC))
    noise = noise - noise.min()
    return noise / max(float(noise.max()), 1e-6)


def _colour(rng: np.random.Generator, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    return rng.uniform(low, high, 3) * 255.0


def _background(rng: np.random.Generator, size: tuple[int, int], kind: str) -> np.ndarray:
    """(h, w, 3) float background of one kind."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "wood":
        base = np.array([rng.uniform(90, 190), rng.uniform(55, 120), rng.uniform(25, 70)])
        theta = rng.uniform(0, math.pi)
        along = xx * math.cos(theta) + yy * math.sin(theta)
        warp = _smooth_noise(rng, (height, width), width / 12) * rng.uniform(10, 40)
        grain = 0.5 + 0.5 * np.sin((along + warp) * rng.uniform(0.15, 0.5))
        fine = _smooth_noise(rng, (height, width), 1.0)
        shade = 0.75 + 0.2 * grain + 0.1 * fine
        return base[None, None, :] * shade[..., None]
    if kind == "cloth":
        base = _colour(rng, 0.05, 0.9)
        weave = 0.5 + 0.25 * (np.sin(xx * rng.uniform(1.2, 2.5)) + np.sin(yy * rng.uniform(1.2, 2.5)))
        folds = _smooth_noise(rng, (height, width), width / 6)
        shade = 0.7 + 0.1 * weave + 0.3 * folds
        return base[None, None, :] * shade[..., None]
    if kind == "paper":
        base = _colour(rng, 0.45, 1.0)
        fibres = _smooth_noise(rng, (height, width), 1.5)
        return base[None, None, :] * (0.9 + 0.1 * fibres)[..., None]
    if kind == "skin":
        base = np.array([rng.uniform(150, 235), rng.uniform(100, 180), rng.uniform(80, 150)])
        creases = _smooth_noise(rng, (height, width), 2.0)
        shade = 0.8 + 0.2 * _smooth_noise(rng, (height, width), width / 5) - 0.08 * (creases > 0.7)
        return base[None, None, :] * shade[..., None]
    # clutter: a desk with objects (papers, pens, other coins, a mat edge) in random colours
    canvas = Image.new("RGB", size, tuple(int(c) for c in _colour(rng, 0.2, 0.9)))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(6, 16))):
        colour = tuple(int(c) for c in _colour(rng))
        x0, y0 = rng.uniform(-0.3, 1.0, 2) * np.array([width, height])
        w, h = rng.uniform(0.08, 0.6, 2) * np.array([width, height])
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        elif shape == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + w], fill=colour, outline=tuple(int(c * 0.6) for c in colour))
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=colour, width=int(rng.integers(2, 8)))
    texture = _smooth_noise(rng, (height, width), 1.0)
    return np.asarray(canvas, dtype=np.float32) * (0.9 + 0.1 * texture)[..., None]


# --- The degradation ----------------------------------------------------------------------------


def _warp(coin: Image.Image, *, angle: float, squash: float, tilt: float) -> Image.Image:
    """Squash by ``squash`` along direction ``tilt`` (radians), then rotate ``angle`` degrees CCW; expand."""
    c, s = math.cos(tilt), math.sin(tilt)
    rot_t = np.array([[c, -s], [s, c]])
    forward = rot_t @ np.diag([1.0, squash]) @ rot_t.T
    a = math.radians(angle)
    # Image y points down, so a counter-clockwise turn on screen is [[cos, sin], [-sin, cos]].
    turn = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    forward = turn @ forward
    w, h = coin.size
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64) - [w / 2, h / 2]
    mapped = corners @ forward.T
    out_w = int(math.ceil(mapped[:, 0].max() - mapped[:, 0].min()))
    out_h = int(math.ceil(mapped[:, 1].max() - mapped[:, 1].min()))
    inverse = np.linalg.inv(forward)
    # Output pixel p maps to input inverse·(p − out_centre) + in_centre.
    offset = np.array([w / 2, h / 2]) - inverse @ np.array([out_w / 2, out_h / 2])
    matrix = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    return coin.transform((out_w, out_h), Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR)


def degrade_with_truth(
    image: Image.Image, rng: np.random.Generator, *, coin_size: float | None = None, regime: str = "poor"
) -> DegradedPhoto:
    """Degrade a catalogue photo like a phone snapshot and say how (see the module docstring).

    ``regime``: ``REGIMES``' name; ``coin_size`` (px) overrides its coin size. The steps below draw
    from ``rng`` one after the other: their order is part of what a seed means.
    """
    spec = REGIMES[regime]
    coin = coin_rgba(image)
    low, high = (coin_size, coin_size) if coin_size else spec.coin_size
    if low == high:
        final_coin = float(np.clip(rng.normal(low, low * 0.12), low * 0.75, low * 1.25))
    else:
        final_coin = float(rng.uniform(low, high))
    # Work larger than the final resolution, so blur and downscaling act like optics, not pixels.
    work_coin = int(round(final_coin * spec.oversample))
    coin, angle = _tilted_and_turned(coin, rng, work_coin)
    canvas, kind, (x, y) = _framed_background(rng, spec, coin.size)
    alpha = np.asarray(coin.getchannel("A"), dtype=np.float32) / 255.0
    _cast_shadow(rng, canvas, alpha, (x, y))
    cover = np.zeros(canvas.shape[:2], dtype=np.float32)
    cover[y : y + coin.height, x : x + coin.width] = alpha
    layer = np.zeros(canvas.shape, dtype=np.float32)
    layer[y : y + coin.height, x : x + coin.width] = np.asarray(coin.convert("RGB"), dtype=np.float32)
    photo = canvas * (1 - cover[..., None]) + layer * cover[..., None]
    photo = _lit(rng, photo, cover, (x, y, coin.width, coin.height))
    out = _through_optics(rng, Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)), spec)
    # Downscale so the coin is ~final_coin px across, then sensor noise and strong JPEG compression.
    factor = final_coin / work_coin
    small = (max(16, round(canvas.shape[1] * factor)), max(16, round(canvas.shape[0] * factor)))
    result = _sensor_and_jpeg(rng, out.resize(small, Image.Resampling.BILINEAR), spec)
    coverage = Image.fromarray((cover * 255).astype(np.uint8)).resize(small, Image.Resampling.BILINEAR)
    mask = np.asarray(coverage) >= 128
    rows, cols = np.nonzero(mask)
    if len(rows):
        box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    else:  # pragma: no cover - the coin always covers pixels
        box = (0, 0, small[0], small[1])
    return DegradedPhoto(image=result.convert("RGB"), angle=angle % 360.0, box=box, background=kind, mask=mask)


def _tilted_and_turned(coin: Image.Image, rng: np.random.Generator, work_coin: int) -> tuple[Image.Image, float]:
    """(the RGBA coin scaled to ``work_coin`` px, foreshortened, turned and cropped to itself; the turn's angle).

    One affine warp: foreshortening along a random axis (the phone is not held quite parallel to the
    table, up to ~20° tilt), then the turn by ``angle`` (counter-clockwise, as Image.rotate).
    """
    scale = work_coin / max(coin.size)
    coin = coin.resize(
        (max(8, round(coin.width * scale)), max(8, round(coin.height * scale))), Image.Resampling.LANCZOS
    )
    squash = float(rng.uniform(0.92, 1.0))
    tilt = math.radians(float(rng.uniform(0, 180)))
    angle = float(rng.uniform(0, 360))
    coin = _warp(coin, angle=angle, squash=squash, tilt=tilt)
    bbox = coin.getchannel("A").getbbox() or (0, 0, coin.width, coin.height)
    return coin.crop(bbox), angle


def _framed_background(
    rng: np.random.Generator, spec: PhotoRegime, coin_size: tuple[int, int]
) -> tuple[np.ndarray, str, tuple[int, int]]:
    """(the (h, w, 3) background, its kind, the coin's top-left corner on it) of a frame around the coin.

    The coin fills a share of the shorter side (``spec.fill``), placed off-centre; portrait or landscape.
    """
    fill = float(rng.uniform(*spec.fill))
    short = int(round(max(coin_size) / fill))
    aspect = float(rng.choice([1.0, 4 / 3, 3 / 4, 16 / 9]))
    width, height = (int(round(short * aspect)), short) if aspect >= 1 else (short, int(round(short / aspect)))
    kind = str(rng.choice(BACKGROUNDS))
    canvas = _background(rng, (width, height), kind)
    free_x, free_y = max(0, width - coin_size[0]), max(0, height - coin_size[1])
    x = int(round(free_x * np.clip(rng.normal(0.5, 0.2), 0.0, 1.0)))
    y = int(round(free_y * np.clip(rng.normal(0.5, 0.2), 0.0, 1.0)))
    return canvas, kind, (x, y)


def _cast_shadow(rng: np.random.Generator, canvas: np.ndarray, a: np.ndarray, place: tuple[int, int]) -> None:
    """Darken ``canvas`` in place with a soft contact shadow of the coin, offset away from the light.

    ``a``: the coin's alpha (0–1), ``place``: its top-left corner (x, y) on the canvas.
    """
    height, width = canvas.shape[:2]
    x, y = place
    shadow = np.zeros((height, width), dtype=np.float32)
    dx, dy = (rng.uniform(-0.06, 0.06, 2) * max(a.shape)).astype(int)
    sy0, sx0 = max(0, y + dy), max(0, x + dx)
    sy1, sx1 = min(height, y + dy + a.shape[0]), min(width, x + dx + a.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        shadow[sy0:sy1, sx0:sx1] = a[sy0 - (y + dy) : sy1 - (y + dy), sx0 - (x + dx) : sx1 - (x + dx)]
    # Blur the shadow at quarter resolution (a wide Gaussian on the full canvas is slow).
    sigma = max(a.shape) * rng.uniform(0.02, 0.06) / 4
    quarter = Image.fromarray(shadow, mode="F").resize((max(1, width // 4), max(1, height // 4)), Image.Resampling.BOX)
    quarter = ndimage.gaussian_filter(np.asarray(quarter), sigma=sigma)
    shadow = np.asarray(Image.fromarray(quarter, mode="F").resize((width, height), Image.Resampling.BILINEAR))
    canvas *= (1.0 - rng.uniform(0.2, 0.5) * shadow)[..., None]


def _lit(rng: np.random.Generator, photo: np.ndarray, cover: np.ndarray, place: tuple[int, int, int, int]):
    """``photo`` under uneven light (a linear gradient, an off-centre fall-off), a colour cast and sometimes a glint.

    ``place``: the coin's (x, y, width, height) in the photo; ``cover`` its coverage.
    """
    height, width = cover.shape
    x, y, coin_width, coin_height = place
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = ((xx / width - 0.5) * math.cos(theta) + (yy / height - 0.5) * math.sin(theta)) * rng.uniform(0.2, 0.7)
    cx, cy = rng.uniform(0, 1) * width, rng.uniform(0, 1) * height
    radial = np.hypot(xx - cx, yy - cy) / math.hypot(width, height)
    light = (1.0 + ramp) * (1.0 - rng.uniform(0.0, 0.5) * radial) * rng.uniform(0.7, 1.2)
    cast = rng.normal(1.0, 0.07, 3)
    photo = photo * light[..., None] * cast[None, None, :]
    # A specular glint on the metal: a soft bright blob somewhere on the coin, sometimes.
    if rng.random() < 0.5:
        gx = x + rng.uniform(0.2, 0.8) * coin_width
        gy = y + rng.uniform(0.2, 0.8) * coin_height
        glint = np.exp(-(((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * (coin_width * rng.uniform(0.05, 0.15)) ** 2)))
        photo += (glint * cover * rng.uniform(30, 90))[..., None]
    return photo


def _through_optics(rng: np.random.Generator, out: Image.Image, spec: PhotoRegime) -> Image.Image:
    """Defocus blur, sometimes a little hand shake."""
    out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(*spec.blur)) * spec.oversample))
    if rng.random() < spec.shake:
        length = int(rng.integers(3, 8))
        kernel = np.zeros((length, length), dtype=np.float32)
        kernel[length // 2, :] = 1.0 / length
        kernel = ndimage.rotate(kernel, rng.uniform(0, 180), reshape=False, order=1)
        kernel /= max(float(kernel.sum()), 1e-6)
        arr = np.asarray(out, dtype=np.float32)
        out = Image.fromarray(np.clip(ndimage.convolve(arr, kernel[..., None]), 0, 255).astype(np.uint8))
    return out


def _sensor_and_jpeg(rng: np.random.Generator, out: Image.Image, spec: PhotoRegime) -> Image.Image:
    """Sensor noise, then strong JPEG compression (decoded again)."""
    arr = np.asarray(out, dtype=np.float32)
    arr = arr + rng.normal(0, rng.uniform(*spec.noise), arr.shape)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    out.save(buffer, format="JPEG", quality=int(rng.integers(*spec.quality)))
    buffer.seek(0)
    result = Image.open(buffer)
    result.load()
    return result


def degrade_like_phone(image: Image.Image, rng: np.random.Generator, *, regime: str = "poor") -> Image.Image:
    """A phone-like photo of the coin in ``image`` (seeded by ``rng``); see the module docstring."""
    return degrade_with_truth(image, rng, regime=regime).image
