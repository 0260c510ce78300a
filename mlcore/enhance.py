"""Mild clean-up of small, low-resolution coin photos: upscale, light denoise, gentle sharpening.

Only classical filters that cannot invent detail (no learned super-resolution: it paints plausible
legends that are not on the coin). Applied only when the coin itself was small in the photo
(``source_size`` below ``min_size`` pixels); larger coins are returned unchanged. Whether this runs
on the identification path is a Pipeline flag decided by measurement (see ``mlcore.pipeline``).
"""

from __future__ import annotations

from PIL import Image, ImageFilter

MIN_SIZE = 200  # coin diameter in the original photo, pixels
TARGET_SIZE = 384


def enhance(
    image: Image.Image,
    *,
    source_size: int | None = None,
    min_size: int = MIN_SIZE,
    target_size: int = TARGET_SIZE,
) -> tuple[Image.Image, bool]:
    """(image, applied). ``source_size``: the coin's size in the original photo (default: the image's)."""
    size = source_size if source_size is not None else min(image.size)
    if size >= min_size:
        return image, False
    mode = image.mode
    out = image.convert("RGB")
    if max(out.size) < target_size:
        # Lanczos keeps edges sharper than bilinear without inventing anything.
        scale = target_size / max(out.size)
        out = out.resize(
            (max(1, round(out.width * scale)), max(1, round(out.height * scale))), Image.Resampling.LANCZOS
        )
    # Median 3 removes sensor noise and JPEG speckle; unsharp mask with a threshold sharpens edges only.
    out = out.filter(ImageFilter.MedianFilter(3))
    out = out.filter(ImageFilter.UnsharpMask(radius=2, percent=60, threshold=3))
    if mode == "RGBA":
        alpha = image.getchannel("A").resize(out.size, Image.Resampling.LANCZOS)
        out.putalpha(alpha)
    return out, True
