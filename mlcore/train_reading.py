"""Training's one pass over the catalogue's images: everything each part learns from, read once.

Per image: the descriptors and block-13 maps of the clean cut-out, of a query-like copy (upright
but for what the rotation search leaves) and of that copy turned by a random angle; the two
copies' layout features, with their known angles, train the orientation estimator (a share of the
images, evenly spread); some images also become phone-like photos (``mlcore.degrade``) to score the
side classifier on the real query path. Images are not kept in memory: a batch is read and dropped.

Catalogue photos are studio shots on a plain light background, so they are cut out with a fast
threshold mask (framed like the pipeline's cut-outs) rather than by the saliency model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from mlcore.cutout import catalogue_cutout, cutout_with_mask
from mlcore.dataset import CatalogueRecord
from mlcore.pipeline import TURN_RESIDUAL
from mlcore.side import NEUTRAL, SIDES, augment_like_query

logger = logging.getLogger(__name__)

CUTOUT_SIZE = 384
BATCH = 32  # images read by the backbone at once


def phone_cutouts(image: Image.Image, rng: np.random.Generator, *, size: int = CUTOUT_SIZE):
    """(turned, upright) cut-outs of a phone-like degraded copy (``mlcore.degrade``), cut with its true mask."""
    from mlcore.degrade import degrade_with_truth

    photo = degrade_with_truth(image, rng)
    turned = cutout_with_mask(photo.image, photo.mask, size=size)
    upright = turned.rotate(-photo.angle, resample=Image.Resampling.BILINEAR, fillcolor=NEUTRAL)
    return turned, upright


@dataclass
class CatalogueReading:
    """What the pass read, one row per readable image of a known side (``rows``: (record index, side))."""

    rows: list[tuple[int, str]] = field(default_factory=list)
    clean_parts: list[np.ndarray] = field(default_factory=list)  # descriptors of the clean cut-outs, per batch
    upright_parts: list[np.ndarray] = field(default_factory=list)  # ... of the query-like upright copies
    # Block-13 maps of the same three images, the side network's input (float16: ~50 kB each).
    stems: dict[str, list[torch.Tensor]] = field(
        default_factory=lambda: {"clean": [], "query_upright": [], "query_turned": []}
    )
    # The copies' layout features that train the orientation estimator, their angles and rows.
    layout_parts: list[np.ndarray] = field(default_factory=list)
    layout_angles: list[float] = field(default_factory=list)
    layout_rows: list[int] = field(default_factory=list)
    # Phone-like cut-outs ("turned", "upright") of some images, and the row of each.
    phone: dict[str, list] = field(default_factory=lambda: {"turned": [], "upright": [], "row": []})


def _read_batch(
    reading: CatalogueReading,
    pending: list[tuple[int, str, Image.Image]],
    embedder,
    rng: np.random.Generator,
    orientation_every: int,
) -> None:
    """Read a batch of clean cut-outs and their two query-like copies into ``reading``; empty ``pending``."""
    if not pending:
        return
    clean = [image for _, _, image in pending]
    residuals = rng.uniform(-TURN_RESIDUAL, TURN_RESIDUAL, len(clean))
    turns = rng.uniform(0, 360, len(clean))
    upright = [
        augment_like_query(image, rng, angle=float(residual)) for image, residual in zip(clean, residuals, strict=True)
    ]
    turned = [
        image.rotate(float(turn), resample=Image.Resampling.BILINEAR, fillcolor=NEUTRAL)
        for image, turn in zip(upright, turns, strict=True)
    ]
    result = embedder.read(clean, stems=True)
    reading.clean_parts.append(result.descriptors)
    reading.stems["clean"].append(result.stems)
    first = len(reading.rows)
    wanted = [i for i in range(len(pending)) if (first + i) % orientation_every == 0]
    copies_made = (
        ("query_upright", upright, residuals, reading.upright_parts),
        ("query_turned", turned, residuals + turns, None),  # its descriptors serve nothing
    )
    for kind, copies, angles, parts in copies_made:
        result = embedder.read(copies, layout=True, stems=True)
        if parts is not None:
            parts.append(result.descriptors)
        reading.stems[kind].append(result.stems)
        reading.layout_parts.append(result.layout[wanted])
        reading.layout_angles.extend(float(angles[i]) for i in wanted)
        reading.layout_rows.extend(first + i for i in wanted)
    reading.rows.extend((index, side) for index, side, _ in pending)
    pending.clear()


def read_catalogue(
    records: Sequence[CatalogueRecord],
    embedder,
    rng: np.random.Generator,
    *,
    orientation_images: int,
    phone_samples: int,
    say: Callable[[str], None],
) -> CatalogueReading:
    """One pass over ``records``' images (see the module docstring); raises ValueError when none is readable.

    ``orientation_images`` images (evenly spread; 0: none) give their copies to the orientation
    estimator, ``phone_samples`` become phone-like photos. Every random draw comes from ``rng``, in
    image order: a seed defines the pass.
    """
    reading = CatalogueReading()
    total = sum(len(r.images) for r in records)
    orientation_every = max(1, total // max(1, orientation_images)) if orientation_images else total + 1
    phone_every = max(1, total // max(1, phone_samples)) if phone_samples else 0
    phone = reading.phone
    pending: list[tuple[int, str, Image.Image]] = []
    seen = 0
    for index, record in enumerate(records):
        for side, path in sorted(record.images.items()):
            if side not in SIDES:
                continue
            try:
                with Image.open(path) as raw:
                    raw.load()
                    cutout = catalogue_cutout(raw)
                    if phone_every and seen % phone_every == 0 and len(phone["row"]) < phone_samples:
                        turned, upright = phone_cutouts(raw, rng)
                        phone["turned"].append(turned)
                        phone["upright"].append(upright)
                        phone["row"].append(len(reading.rows) + len(pending))
            except (OSError, ValueError) as exc:
                logger.warning("skipping %s (%s): %s", record.record_id, path, exc)
                continue
            pending.append((index, side, cutout))
            seen += 1
            if len(pending) >= BATCH:
                _read_batch(reading, pending, embedder, rng, orientation_every)
                say(f"features: {seen}/{total} images")
    _read_batch(reading, pending, embedder, rng, orientation_every)
    if not reading.rows:
        raise ValueError("No readable catalogue images to train on")
    return reading
