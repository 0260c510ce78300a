"""Static IIIF Image API level 0 tiles: the pyramid a deep-zoom viewer asks for, made once per image.

A level 0 image service serves only files that exist; its ``info.json`` lists them (``tiles``
and ``sizes``), and viewers (Mirador, Universal Viewer, OpenSeadragon) ask for exactly those,
by their canonical URL: ``{region}/{size}/0/default.jpg``. The tiles are cut when an image is
stored (``collection.services``), so serving them is reading a file. One function,
``tile_plan``, names every file for a width and height; generation and lookup both use it.

Pure Pillow, no Django.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image

# 512 px tiles, as image servers commonly cut them: a photo up to 512 px is its own single tile (the
# ANS's 300 px photos then cost an import nothing), a 2,400 px one has 4 levels and 25 tiles.
TILE_SIZE = 512
JPEG_QUALITY = 85


@dataclass(frozen=True)
class TileFile:
    """One file of the pyramid: the canonical region and size of the request that returns it."""

    region: str  # "full" or "x,y,w,h" in full-image pixels
    size: str  # "max" or "w,h"
    scale_factor: int
    box: tuple[int, int, int, int]  # the crop in the image scaled by 1/scale_factor
    width: int
    height: int

    @property
    def name(self) -> str:
        """The file's name inside the image's tile folder."""
        return f"{self.region}_{self.size}.jpg"


def scale_factors(width: int, height: int, tile: int = TILE_SIZE) -> list[int]:
    """1, 2, 4… until the whole image fits in one tile: the levels a viewer zooms through."""
    factors = [1]
    while math.ceil(width / factors[-1]) > tile or math.ceil(height / factors[-1]) > tile:
        factors.append(factors[-1] * 2)
    return factors


def sizes(width: int, height: int, tile: int = TILE_SIZE) -> list[tuple[int, int]]:
    """The whole image at each level, smallest first (``info.json`` ``sizes``; thumbnails use them)."""
    return sorted((math.ceil(width / f), math.ceil(height / f)) for f in scale_factors(width, height, tile))


def tile_plan(width: int, height: int, tile: int = TILE_SIZE) -> list[TileFile]:
    """Every file of the pyramid: the tiles of each level, and the whole image at each level.

    Regions and sizes are in the canonical form of the Image API 3.0 (``full`` for the whole
    image, ``max`` for full size, otherwise ``x,y,w,h`` and ``w,h``), as viewers request them.
    """
    files: dict[str, TileFile] = {}
    for factor in scale_factors(width, height, tile):
        scaled_w, scaled_h = math.ceil(width / factor), math.ceil(height / factor)
        step = tile * factor
        candidates = [(0, 0, width, height)]  # the whole image at this level (sizes)
        candidates += [
            (x, y, min(step, width - x), min(step, height - y))
            for y in range(0, height, step)
            for x in range(0, width, step)
        ]
        for x, y, w, h in candidates:
            out_w, out_h = (
                (scaled_w, scaled_h) if (w, h) == (width, height) else (math.ceil(w / factor), math.ceil(h / factor))
            )
            region = "full" if (x, y, w, h) == (0, 0, width, height) else f"{x},{y},{w},{h}"
            size = "max" if (out_w, out_h) == (width, height) else f"{out_w},{out_h}"
            left, top = x // factor, y // factor
            item = TileFile(region, size, factor, (left, top, left + out_w, top + out_h), out_w, out_h)
            files.setdefault(item.name, item)
    return list(files.values())


def tiles_make(image: Image.Image, *, skip_full: bool = False, tile: int = TILE_SIZE) -> dict[str, bytes]:
    """The JPEG bytes of every file in ``tile_plan`` for this (upright, decoded) image, by name.

    ``skip_full`` leaves out ``full/max``, for an image already stored as a JPEG at full size:
    that file is served instead of a copy. Transparent images are flattened on white.
    """
    if image.mode in ("RGBA", "LA", "PA", "P"):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    levels: dict[int, Image.Image] = {1: image}
    out: dict[str, bytes] = {}
    for item in tile_plan(width, height, tile):
        if skip_full and item.region == "full" and item.size == "max":
            continue
        level = levels.get(item.scale_factor)
        if level is None:
            # Each level is scaled once from the full image, then cut: no tile is resampled twice.
            size = (math.ceil(width / item.scale_factor), math.ceil(height / item.scale_factor))
            level = levels[item.scale_factor] = image.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        level.crop(item.box).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        out[item.name] = buffer.getvalue()
    return out


def tile_lookup(width: int, height: int, region: str, size: str, tile: int = TILE_SIZE) -> TileFile | None:
    """The file that answers ``{region}/{size}``, or None where the level 0 service has none.

    Accepts the canonical forms and the short ones viewers also send (``w,``, ``,h``, and
    Image API 2's ``full`` for full size), matched against the files that exist.
    """
    region = region.strip()
    if region != "full":
        try:
            x, y, w, h = (int(part) for part in region.split(","))
        except ValueError:
            return None
        region = "full" if (x, y, w, h) == (0, 0, width, height) else f"{x},{y},{w},{h}"
    candidates = [f for f in tile_plan(width, height, tile) if f.region == region]
    size = size.strip()
    if size in ("max", "full"):
        return next((f for f in candidates if f.scale_factor == 1), None)
    try:
        want_w, want_h = (int(part) if part else None for part in size.split(","))
    except ValueError:
        return None
    for item in candidates:
        if (want_w is None or want_w == item.width) and (want_h is None or want_h == item.height):
            return item
    return None
