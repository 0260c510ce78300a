"""Decode and validate uploaded photos; re-encode them without metadata.

``decode_image`` is the pipeline's front door: whatever a museum user uploads (bytes, a path or an
open file) comes out as a Pillow image in ``RGB`` (or ``RGBA`` when the alpha channel actually
carries a mask), upright (EXIF orientation applied), within size limits, or raises
``ImageDecodeError`` with a message the user can act on.

Choices (documented because callers rely on them):

* Only raster photo formats are accepted (JPEG/MPO, PNG, WebP, GIF, TIFF, BMP). Everything else —
  SVG, PDF, text, HEIC (no decoder here), EPS (would run Ghostscript) — is refused.
* Limits are checked on the header, before any pixel is decoded (decompression bombs); JPEGs may be
  larger than other formats, as they are decoded reduced (below). Pillow's own
  bomb check (``Image.MAX_IMAGE_PIXELS``) stays in force as a second net and is reported the same way.
  ``probe_image`` runs only these header checks, cheaply enough for the web request that receives an
  upload; ``decode_image`` runs them again and then decodes.
* Whatever a crafted or damaged file makes a decoder raise is reported as ``ImageDecodeError``, never
  as another exception (tests/mlcore/test_imageio_fuzz.py fuzzes this).
* Animated GIF/WebP and multi-page TIFF: the first frame is used (phones and galleries show it).
* Large photos are decoded reduced: JPEGs via ``draft`` (DCT scaling, much cheaper), other formats
  resized after decoding, so that the longer side is at most ``DecodeLimits.max_side``.
* Colour: an embedded ICC profile is converted to sRGB; 16-bit greyscale is scaled (not clipped)
  to 8 bits; CMYK, palette, 1-bit, LA/PA are normalised. Alpha is kept only when it is meaningful
  (some pixel is not fully opaque and some pixel is not fully transparent).
* The returned image carries no metadata (``info`` is emptied): nothing private leaks downstream.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

# Formats a museum photo can reasonably arrive in. Restricting Image.open to these also keeps
# exotic decoders (EPS → Ghostscript, etc.) out of reach of uploaded files.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "TIFF", "BMP")

NOT_AN_IMAGE = "The file is not an image (or is damaged)."
SUPPORTED = "Please upload a photo (JPEG, PNG or WebP)."
SNIFF_BYTES = 2048  # enough of the head of a file to recognise documents that are not photos

# What Pillow's parsers and decoders raise on crafted or damaged input (besides their own errors):
# all of them mean "not a usable image" to the person who uploaded the file.
DECODER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)


class ImageDecodeError(ValueError):
    """The upload cannot be used as a photo; the message is meant for the person who uploaded it."""


@dataclass(frozen=True)
class DecodeLimits:
    """Limits applied while decoding an upload.

    ``max_bytes``/``max_pixels``/``min_side`` reject the file; ``max_side`` does not reject but
    decodes large photos reduced so that their longer side is at most that many pixels.
    """

    max_bytes: int = 25 * 2**20
    max_pixels: int = 50_000_000
    # JPEGs (and MPOs) are decoded reduced in the DCT domain (``draft``): a 150-megapixel photo costs
    # what a ~38-megapixel one does, so phones' 50–200 MP modes and 61 MP cameras are not refused.
    max_pixels_jpeg: int = 150_000_000
    min_side: int = 32
    max_side: int = 4096
    # A strip thousands of times longer than wide is no photo of an object, and reducing it to
    # ``max_side`` would leave a line one pixel high for the pipeline to choke on.
    max_aspect: float = 20.0


@dataclass(frozen=True)
class ImageProbe:
    """What the header of an upload says (no pixel decoded): its format and dimensions."""

    format: str
    width: int
    height: int


def _read_source(source: bytes | str | os.PathLike | BinaryIO, limits: DecodeLimits) -> bytes:
    """All bytes of the upload, refusing empty or over-size files without reading more than needed."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        try:
            size = os.path.getsize(source)
        except OSError as exc:
            raise ImageDecodeError("The file could not be read.") from exc
        if size > limits.max_bytes:
            raise ImageDecodeError(_too_many_bytes(size, limits))
        with open(source, "rb") as fh:
            data = fh.read(limits.max_bytes + 1)
    else:
        data = source.read(limits.max_bytes + 1)
        if not isinstance(data, bytes):
            raise ImageDecodeError("The file could not be read.")
    if not data:
        raise ImageDecodeError("The file is empty.")
    if len(data) > limits.max_bytes:
        raise ImageDecodeError(_too_many_bytes(len(data), limits))
    return data


def _too_many_bytes(size: int, limits: DecodeLimits) -> str:
    if size > limits.max_bytes + 1:  # exact size known (path); otherwise we stopped reading early
        return f"The file is too large: {size / 2**20:.1f} MB (limit {limits.max_bytes / 2**20:.0f} MB)."
    return f"The file is too large (limit {limits.max_bytes / 2**20:.0f} MB)."


def _sniff_non_image(data: bytes) -> str | None:
    """A specific message for common non-photo uploads, or None."""
    head = data[:SNIFF_BYTES].lstrip().lower()
    if head.startswith(b"%pdf"):
        return f"PDF documents are not supported. {SUPPORTED}"
    if b"<svg" in head or (head.startswith(b"<?xml") and b"svg" in head):
        return f"SVG drawings are not supported. {SUPPORTED}"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<script")):
        return f"Web pages (HTML) are not supported. {SUPPORTED}"
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06", b"Rar!", b"7z\xbc\xaf", b"\x1f\x8b")):
        return f"Archives (ZIP, RAR, 7z, gzip) are not supported. {SUPPORTED}"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc", b"ftypavif"):
        return f"HEIC/AVIF photos are not supported yet. {SUPPORTED}"
    return None


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f}" if pixels >= 10e6 else f"{pixels / 1e6:.1f}"


def _open_checked(fh: BinaryIO, head: bytes, limits: DecodeLimits) -> Image.Image:
    """Open lazily (header only) and check dimensions before any pixel is decoded.

    ``head`` is the start of the file, for a specific message when it is a document, not a photo.
    """
    try:
        with warnings.catch_warnings():
            # Our own limit below is the one users see; Pillow's warning would only add log noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Damaged TIFF/EXIF headers make Pillow warn; the decode that follows decides.
            warnings.simplefilter("ignore", UserWarning)
            Image.init()  # registers every plugin (MPO is not among Pillow's pre-loaded ones)
            formats = [name for name in ALLOWED_FORMATS if name in Image.OPEN]
            image = Image.open(fh, formats=formats)
    except Image.DecompressionBombError as exc:
        match = re.search(r"\((\d+) pixels\)", str(exc))
        size = f": {_megapixels(int(match.group(1)))} megapixels" if match else ""
        raise ImageDecodeError(
            f"The photo is too large{size} (limit {_megapixels(limits.max_pixels)} megapixels)."
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(_sniff_non_image(head) or NOT_AN_IMAGE) from exc
    except DECODER_ERRORS as exc:
        raise ImageDecodeError(NOT_AN_IMAGE) from exc
    width, height = image.size
    max_pixels = limits.max_pixels_jpeg if image.format in ("JPEG", "MPO") else limits.max_pixels
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"The photo is too large: {_megapixels(width * height)} megapixels "
            f"(limit {_megapixels(max_pixels)}{'' if image.format in ('JPEG', 'MPO') else ' for ' + image.format})."
        )
    if min(width, height) < limits.min_side:
        raise ImageDecodeError(
            f"The photo is too small: {width}×{height} pixels (at least {limits.min_side} on each side)."
        )
    if max(width, height) > limits.max_aspect * min(width, height):
        raise ImageDecodeError(
            f"The photo is too narrow: {width}×{height} pixels "
            f"(the long side may be at most {limits.max_aspect:g} times the short side)."
        )
    return image


def probe_image(source: bytes | str | os.PathLike | BinaryIO, *, limits: DecodeLimits = DecodeLimits()) -> ImageProbe:
    """Check an upload from its header only: size in bytes, format, dimensions. No pixel is decoded.

    Cheap enough for the web request that receives the upload (reads a few kilobytes); raises
    ImageDecodeError with the same messages as ``decode_image``. A file that passes may still fail
    to decode (truncated or corrupt pixel data): that is found by ``decode_image`` later. An open
    file is left at the position it had.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _probe_file(io.BytesIO(bytes(source)), limits)
    if isinstance(source, str | os.PathLike):
        try:
            with open(source, "rb") as fh:
                return _probe_file(fh, limits)
        except OSError as exc:
            raise ImageDecodeError("The file could not be read.") from exc
    return _probe_file(source, limits)


def _probe_file(fh: BinaryIO, limits: DecodeLimits) -> ImageProbe:
    start = fh.tell()
    try:
        size = fh.seek(0, io.SEEK_END) - start
        fh.seek(start)
        if size <= 0:
            raise ImageDecodeError("The file is empty.")
        if size > limits.max_bytes:
            raise ImageDecodeError(_too_many_bytes(size, limits))
        head = fh.read(SNIFF_BYTES)
        fh.seek(start)
        image = _open_checked(fh, head, limits)
        return ImageProbe(format=image.format or "", width=image.width, height=image.height)
    finally:
        fh.seek(start)


def _to_srgb(image: Image.Image) -> Image.Image:
    """Apply an embedded ICC profile (Adobe RGB, Display P3, CMYK press profiles…) to get sRGB."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        target = ImageCms.createProfile("sRGB")
        out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, source, target, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image  # a broken profile is not worth rejecting a photo for
    return converted if converted is not None else image


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit greyscale to 8 bits by scaling (Pillow's own convert would clip at 255).

    Works in bands of rows: a float copy of a whole 50-megapixel image would need 400 MB.
    """
    array = np.asarray(image)
    peak = float(array.max()) if array.size else 0.0
    if image.mode == "F":
        scale = 255.0 if peak <= 1.0 else (1.0 if peak <= 255.0 else 255.0 / peak)
    else:
        scale = 255.0 / 65535.0 if peak > 255 else 1.0
    out = np.empty(array.shape, dtype=np.uint8)
    for top in range(0, array.shape[0], 256):
        band = array[top : top + 256].astype(np.float32) * np.float32(scale) + np.float32(0.5)
        out[top : top + 256] = np.clip(band, 0, 255)
    return Image.fromarray(out, mode="L")


def _normalise_mode(image: Image.Image) -> Image.Image:
    """RGB, or RGBA when the alpha channel is a meaningful mask."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _scale_to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
    elif image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV
    if image.mode == "RGBA" and not alpha_is_meaningful(image):
        image = image.convert("RGB")
    return image


def alpha_is_meaningful(image: Image.Image) -> bool:
    """True when the image has an alpha channel that is neither fully opaque nor fully transparent."""
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
        return False
    low, high = image.getchannel("A").getextrema()
    return low < 255 and high > 0


def decode_image(source: bytes | str | os.PathLike | BinaryIO, *, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Decode an uploaded photo to an upright ``RGB``/``RGBA`` Pillow image, or raise ImageDecodeError."""
    data = _read_source(source, limits)
    image = _open_checked(io.BytesIO(data), data[:SNIFF_BYTES], limits)
    try:
        image.seek(0)  # first frame of an animation or multi-page file (before draft: MPO's seek resets it)
        if image.format in ("JPEG", "MPO") and max(image.size) > limits.max_side:
            # DCT-domain downscaling by 1/2, 1/4 or 1/8: the big photo is never decoded in full.
            image.draft(image.mode, (limits.max_side, limits.max_side))
        image.load()
        icc = image.info.get("icc_profile")
        # Unreadable EXIF: keep the pixels as stored rather than refuse the photo. In place, because
        # a turned copy of a 50-megapixel photo would double the peak memory.
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError, SyntaxError, struct.error):
            ImageOps.exif_transpose(image, in_place=True)
        if icc:
            image.info["icc_profile"] = icc
        image = _to_srgb(image)
        image = _normalise_mode(image)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"The photo is too large (limit {_megapixels(limits.max_pixels)} megapixels).") from exc
    except DECODER_ERRORS as exc:
        raise ImageDecodeError(NOT_AN_IMAGE) from exc
    if max(image.size) > limits.max_side:
        image.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    image.info = {}
    return image


def _clean_copy(image: Image.Image) -> Image.Image:
    """A copy whose ``info`` is empty, so no encoder can carry EXIF/GPS/XMP/ICC/comments across."""
    clean = image.copy()
    clean.info = {}
    return clean


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    """JPEG bytes with no metadata at all. Transparent areas of an RGBA image are composited on white."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    elif image.mode not in ("RGB", "L"):
        image = _normalise_mode(image).convert("RGB")
    buffer = io.BytesIO()
    _clean_copy(image).save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes (alpha kept) with no metadata at all."""
    if image.mode not in ("RGB", "RGBA", "L", "LA", "1"):
        image = _normalise_mode(image)  # P (its transparency lives in info), CMYK, 16-bit…
    buffer = io.BytesIO()
    _clean_copy(image).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()
