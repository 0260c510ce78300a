"""Find the objects (coins) in a photo: a saliency mask, split into connected components, ranked.

U^2-Net-p (via rembg's onnxruntime session, from the local models folder) gives a 320×320 saliency
map; it is upsampled to a working resolution, thresholded, cleaned (specks dropped, holes filled)
and split into connected components. Each component becomes a ``Detection`` with a full-size mask
and a score that prefers large, central, round objects. Several coins in one photo are all
reported, best first; touching coins are split (watershed at the neck between two discs), and a
large irregular blob (coins merged through glare between them) gets a second, closer look on a
crop. A small best object (a coin photographed from afar) has its mask redone on a crop, where
the model sees it at full resolution.

An RGBA image whose alpha channel is meaningful already carries its mask: the alpha is used and
the model is not run. A catalogue's studio photo (one object on a plain background) is cut out by
colour distance when that is safe (``studio_detection``: the border is one colour and what differs
from it is one round object); otherwise, e.g. a soft drop shadow on white, where colour distance
fell to a mean IoU of 0.905 against the model's 0.990, the model runs (figures:
docs/ml-notes.md, "Catalogue photos without the model").
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from mlcore.base import LazyModel, register
from mlcore.imageio import alpha_is_meaningful
from mlcore.modelfiles import check_file, read_manifest

MODEL_INPUT = 320  # u2netp's native input size; larger inputs cost more and do not help
WORKING_SIDE = 1024  # components are found at most at this resolution, then masks are upsampled
THRESHOLD = 0.5
MIN_AREA_FRACTION = 0.0005  # specks smaller than 0.05 % of the photo are noise, not coins
MIN_AREA_PIXELS = 64
SPLIT_BELOW_CIRCULARITY = 0.6  # components less round than this are candidates for splitting
REFINE_MIN_AREA = 0.01  # irregular blobs at least this big (fraction of the photo) get a closer look
MAX_REFINE = 3  # closer looks per photo (each costs one more model run)
SMALL_AREA = 0.05  # a best object smaller than this (fraction of the photo) gets its mask redone on a crop
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# U2NET_HOME is process-wide; guard the few lines that set it while rembg creates its session.
_ENV_LOCK = threading.Lock()


@dataclass
class Detection:
    """One object found in a photo.

    ``box`` is (x0, y0, x1, y1) in image pixels (x1/y1 exclusive); ``mask`` is a boolean array the
    size of the image; ``area`` is the mask's fraction of the image; ``circularity`` is 1 for a
    perfect disc; ``centrality`` is 1 at the image centre and 0 in a corner; ``score`` ranks
    detections (higher is more likely the coin the user meant); ``confidence`` is the mean saliency
    (or alpha) inside the object, 0..1.
    """

    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)
    area: float
    circularity: float
    centrality: float
    score: float
    confidence: float = 1.0


def _model_input(image: Image.Image) -> np.ndarray:
    """The image as u2netp expects it (same preprocessing as rembg: scaled by its max, ImageNet stats)."""
    rgb = image.convert("RGB")
    if max(rgb.size) > 4 * MODEL_INPUT:
        # Cheap box-filter reduction first; the final resize then has little left to do.
        factor = max(1, min(rgb.size) // (2 * MODEL_INPUT))
        if factor > 1:
            rgb = rgb.reduce(factor)
    small = rgb.resize((MODEL_INPUT, MODEL_INPUT), Image.Resampling.BILINEAR)
    array = np.asarray(small, dtype=np.float32)
    array = array / max(float(array.max()), 1e-6)
    array = (array - MEAN) / STD
    return array.transpose(2, 0, 1)[None].astype(np.float32)


def _resize_float(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to (width, height)."""
    if array.shape[::-1] == size:
        return array.astype(np.float32, copy=False)
    return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))


def _circularity(component: np.ndarray, area_px: float) -> float:
    """Area over the area of the smallest disc around the component's centroid holding its boundary (0..1).

    Robust at low resolution where perimeter-based measures are noisy; a square scores ~0.64, a half
    disc ~0.4, a long bar near 0.
    """
    edge = component & ~ndimage.binary_erosion(component)
    ys, xs = np.nonzero(edge)
    if len(xs) == 0:
        return 0.0
    cy, cx = np.nonzero(component)
    my, mx = cy.mean(), cx.mean()
    radius = float(np.sqrt(((ys - my) ** 2 + (xs - mx) ** 2).max())) + 0.5
    return float(min(1.0, area_px / (math.pi * radius * radius)))


@dataclass
class _Piece:
    """A candidate object at working resolution: its mask inside ``region`` and the threshold that cut it."""

    region: tuple[slice, slice]
    mask: np.ndarray
    threshold: float


def _pieces_of(work: np.ndarray, piece: _Piece, min_area: float) -> list[_Piece]:
    """Split a non-round component into round ones by raising the threshold (touching coins, glare between them).

    A component is split only if a higher threshold cuts it into two or more substantial pieces that
    are rounder on average than the whole: one irregular object (a medal with its loop) stays whole.
    """
    area = float(piece.mask.sum())
    whole = _circularity(np.pad(piece.mask, 1), area)
    if whole >= SPLIT_BELOW_CIRCULARITY:
        return [piece]
    local = work[piece.region]
    for threshold in np.arange(piece.threshold + 0.1, 0.96, 0.1):
        labels, count = ndimage.label(piece.mask & (local >= threshold))
        if count < 2:
            continue
        parts = []
        for index, region in enumerate(ndimage.find_objects(labels), start=1):
            mask = ndimage.binary_fill_holes(labels[region] == index)
            if mask.sum() >= max(min_area, 0.05 * area):
                parts.append((region, mask))
        if len(parts) < 2:
            continue
        roundness = np.mean([_circularity(np.pad(mask, 1), float(mask.sum())) for _, mask in parts])
        if roundness < whole + 0.15:
            continue
        result = []
        for region, mask in parts:
            absolute = tuple(
                slice(outer.start + inner.start, outer.start + inner.stop)
                for outer, inner in zip(piece.region, region, strict=True)
            )
            result += _pieces_of(work, _Piece(absolute, mask, float(threshold)), min_area)
        return result
    return _split_touching(piece, min_area)


def _split_touching(piece: _Piece, min_area: float) -> list[_Piece]:
    """Split touching discs at the necks of the shape (watershed on the distance transform)."""
    distance = ndimage.distance_transform_edt(np.pad(piece.mask, 1))[1:-1, 1:-1]
    peak = float(distance.max())
    if peak < 3:
        return [piece]
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    peaks = peak_local_max(
        distance, min_distance=max(2, int(0.6 * peak)), threshold_abs=0.45 * peak, labels=piece.mask.astype(int)
    )
    if len(peaks) < 2:
        return [piece]
    markers = np.zeros(piece.mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=piece.mask)
    area = float(piece.mask.sum())
    parts = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        mask = labels[region] == index
        if mask.sum() >= max(min_area, 0.05 * area):
            parts.append((region, mask))
    if len(parts) < 2:
        return [piece]
    # Every piece must be a disc: chunks of a bar or a ruler are squares (≈0.64) and stay together.
    if min(_circularity(np.pad(mask, 1), float(mask.sum())) for _, mask in parts) < 0.72:
        return [piece]
    return [
        _Piece(
            tuple(
                slice(outer.start + inner.start, outer.start + inner.stop)
                for outer, inner in zip(piece.region, region, strict=True)
            ),
            mask,
            piece.threshold,
        )
        for region, mask in parts
    ]


def detections_from_probability(
    probability: np.ndarray,
    *,
    image_size: tuple[int, int],
    max_objects: int = 30,
    threshold: float = THRESHOLD,
) -> list[Detection]:
    """Turn a probability map (any resolution, values 0..1) into ranked detections at ``image_size``."""
    width, height = image_size
    scale = min(1.0, WORKING_SIDE / max(width, height))
    work_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    work = _resize_float(probability, work_size)
    binary = work >= threshold
    if not binary.any():
        return []
    labels, _count = ndimage.label(binary)
    work_pixels = work_size[0] * work_size[1]
    min_area = max(MIN_AREA_PIXELS * scale * scale, MIN_AREA_FRACTION * work_pixels)
    pieces: list[_Piece] = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        mask = ndimage.binary_fill_holes(labels[region] == index)
        if mask.sum() >= min_area:
            pieces += _pieces_of(work, _Piece(region, mask, threshold), min_area)
    ranked = []
    for piece in pieces:
        area_px = float(piece.mask.sum())
        ys, xs = np.nonzero(piece.mask)
        cy = (ys.mean() + piece.region[0].start + 0.5) / work_size[1]
        cx = (xs.mean() + piece.region[1].start + 0.5) / work_size[0]
        centrality = _centrality(cx, cy)
        circularity = _circularity(np.pad(piece.mask, 1), area_px)
        area = area_px / work_pixels
        confidence = float(work[piece.region][piece.mask].mean())
        ranked.append((_score(area, centrality, circularity, confidence), piece, circularity, centrality, confidence))
    ranked.sort(key=lambda item: item[0], reverse=True)
    result = []
    for score, piece, circularity, centrality, confidence in ranked[:max_objects]:
        local, (top, left) = _full_mask(probability, piece, work_size, image_size)
        rows = np.flatnonzero(local.any(axis=1))
        cols = np.flatnonzero(local.any(axis=0))
        if len(rows) == 0:
            continue
        mask = np.zeros((height, width), dtype=bool)  # calloc: only the touched rows cost memory
        mask[top : top + local.shape[0], left : left + local.shape[1]] = local
        result.append(
            Detection(
                box=(left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]) + 1, top + int(rows[-1]) + 1),
                mask=mask,
                area=round(float(local.sum()) / (width * height), 6),
                circularity=round(circularity, 4),
                centrality=round(centrality, 4),
                score=round(score, 6),
                confidence=round(confidence, 4),
            )
        )
    return result


def studio_mask(image: Image.Image, *, tolerance: int) -> np.ndarray:
    """The largest blob that differs from the background colour, holes filled; all False when none.

    The background colour is the median of the border pixels (handles off-white studio paper).
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    distance = np.abs(rgb - background).max(axis=2)
    mask = ndimage.binary_opening(distance > tolerance, iterations=2)
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
    return ndimage.binary_fill_holes(labels == (int(np.argmax(sizes)) + 1))


def object_mask(image: Image.Image, *, tolerance: int = 24) -> np.ndarray:
    """Boolean mask of the object in a studio photo on a plain background (or from meaningful alpha).

    The background colour is the median of the border pixels; pixels further than ``tolerance`` from
    it (max over channels) are object; the largest component is kept with its holes filled.
    """
    if image.mode == "RGBA":
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255 and alpha.max() > 0:
            return alpha >= 128
    mask = studio_mask(image, tolerance=tolerance)
    if mask.sum() < 0.02 * mask.size:  # nothing convincing: treat the whole frame as the object
        return np.ones(mask.shape, dtype=bool)
    return mask


# A studio photo is cut out without the model only when the background is one colour where the
# border shows it (half the border pixels within this many levels of its median: a coin may touch
# the frame), what differs from it is one object at least this round, and the object's edge is
# sharp: raising the colour tolerance from 24 to 60 levels keeps ≥ 95 % of it (a soft shadow, or a
# worn coin as pale as the paper, loses more and goes to the model).
STUDIO_BORDER_SPREAD = 10
STUDIO_MIN_CIRCULARITY = 0.8
STUDIO_MIN_SHARPNESS = 0.95
STUDIO_AREA = (0.05, 0.97)
STUDIO_TOLERANCE = 24
STUDIO_WORK_SIDE = 512


def studio_detection(image: Image.Image) -> Detection | None:
    """The one object of a studio photo on a plain background, by colour distance; None when unsure.

    Costs a few milliseconds instead of a model run (catalogue indexing: ``Pipeline.process`` with
    ``assume_upright``). The mask is found at most ``STUDIO_WORK_SIDE`` px and scaled up.
    """
    rgb = image.convert("RGB")
    scale = min(1.0, STUDIO_WORK_SIDE / max(rgb.size))
    small = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.int16)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    spread = np.abs(border - np.median(border, axis=0)).max(axis=1)
    if np.median(spread) > STUDIO_BORDER_SPREAD:
        return None
    mask = studio_mask(small, tolerance=STUDIO_TOLERANCE)
    area = float(mask.mean())
    if not STUDIO_AREA[0] <= area <= STUDIO_AREA[1]:
        return None
    circularity = _circularity(mask, float(mask.sum()))
    if circularity < STUDIO_MIN_CIRCULARITY:
        return None
    if studio_mask(small, tolerance=60).sum() < STUDIO_MIN_SHARPNESS * mask.sum():
        return None
    if scale < 1.0:
        full = Image.fromarray(mask.astype(np.uint8) * 255).resize(rgb.size, Image.Resampling.BILINEAR)
        mask = np.asarray(full) >= 128
    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    centrality = _centrality(float(cols.mean()) / mask.shape[1], float(rows.mean()) / mask.shape[0])
    return Detection(
        box=box,
        mask=mask,
        area=area,
        circularity=circularity,
        centrality=centrality,
        score=_score(area, centrality, circularity, 1.0),
    )


def _centrality(cx: float, cy: float) -> float:
    """1 at the image centre, 0 in a corner (cx, cy as fractions of width and height)."""
    return float(max(0.0, 1.0 - math.hypot(cx - 0.5, cy - 0.5) / math.hypot(0.5, 0.5)))


def _score(area: float, centrality: float, circularity: float, confidence: float) -> float:
    """Prefer large, central, round, confidently salient objects (0..1; size weighs most)."""
    return math.sqrt(area) * (0.5 + 0.5 * centrality) * (0.25 + 0.75 * circularity) * confidence


def _full_mask(
    probability: np.ndarray, piece: _Piece, work_size: tuple[int, int], image_size: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """The piece's mask at full image resolution, as (mask of its box, (top, left) of the box).

    Upsampled from the probability (smooth edges), restricted to the piece so neighbours stay out.
    """
    width, height = image_size
    region = piece.region
    if work_size == image_size:
        return piece.mask, (region[0].start, region[1].start)
    sx = width / work_size[0]
    sy = height / work_size[1]
    # Box in full resolution, with two working pixels of margin so the upsampled edge is not cut.
    y0 = max(0, int((region[0].start - 2) * sy))
    y1 = min(height, int(math.ceil((region[0].stop + 2) * sy)))
    x0 = max(0, int((region[1].start - 2) * sx))
    x1 = min(width, int(math.ceil((region[1].stop + 2) * sx)))
    if probability.shape == (height, width):  # an alpha channel: already at full resolution
        crop = probability[y0:y1, x0:x1]
    else:
        crop = _sample_bilinear(probability, (x0, y0, x1, y1), image_size)
    # Ownership: the piece dilated by two working pixels, upsampled nearest-neighbour onto the box.
    own = np.pad(piece.mask, 2)
    own = ndimage.binary_dilation(own, iterations=2)
    wy0, wx0 = region[0].start - 2, region[1].start - 2
    rows = np.clip(((np.arange(y0, y1) + 0.5) / sy).astype(int) - wy0, 0, own.shape[0] - 1)
    cols = np.clip(((np.arange(x0, x1) + 0.5) / sx).astype(int) - wx0, 0, own.shape[1] - 1)
    owned = own[np.ix_(rows, cols)]
    local = ndimage.binary_fill_holes((crop >= piece.threshold) & owned)
    local_labels, local_count = ndimage.label(local)
    if local_count > 1:  # keep the main piece; slivers inside the dilated ring are not the object
        sizes = ndimage.sum(local, local_labels, range(1, local_count + 1))
        local = local_labels == (int(np.argmax(sizes)) + 1)
    return local, (y0, x0)


def _sample_bilinear(
    probability: np.ndarray, box: tuple[int, int, int, int], image_size: tuple[int, int]
) -> np.ndarray:
    """Bilinear samples of a low-resolution map at the full-resolution pixel centres inside ``box``."""
    x0, y0, x1, y1 = box
    ph, pw = probability.shape
    ys = (np.arange(y0, y1) + 0.5) * ph / image_size[1] - 0.5
    xs = (np.arange(x0, x1) + 0.5) * pw / image_size[0] - 0.5
    ys = np.clip(ys, 0, ph - 1)
    xs = np.clip(xs, 0, pw - 1)
    return ndimage.map_coordinates(
        probability.astype(np.float32), np.meshgrid(ys, xs, indexing="ij"), order=1, mode="nearest"
    )


@register
class Segmenter(LazyModel):
    """Saliency segmentation with U^2-Net-p (rembg's ``u2netp``, loaded from the models folder only)."""

    name = "u2netp"
    version = "rembg-u2netp-1"

    def _load(self) -> Any:
        path = check_file(self.models_dir, "u2netp")  # ModelFileError naming the setup command
        import onnxruntime as ort
        from rembg import new_session

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("OBVERSE_ONNX_THREADS", "0") or 0)
        # Idle threads sleep instead of spinning: workers share cores with the web server and each other.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        with _ENV_LOCK:
            # rembg finds "<U2NET_HOME>/u2netp.onnx"; the file exists (checked above), so it never downloads.
            previous = os.environ.get("U2NET_HOME")
            os.environ["U2NET_HOME"] = str(path.parent)
            try:
                session = new_session("u2netp", sess_opts=options, providers=["CPUExecutionProvider"])
            finally:
                if previous is None:
                    os.environ.pop("U2NET_HOME", None)
                else:
                    os.environ["U2NET_HOME"] = previous
        return session

    def describe(self) -> dict[str, str]:
        entry = read_manifest(self.models_dir).get("u2netp", {})
        return {"name": self.name, "version": self.version, "file_sha256": entry.get("sha256", "")}

    def saliency(self, image: Image.Image) -> np.ndarray:
        """u2netp's raw saliency (0..1) at 320×320 for an image (no per-image min-max stretch)."""
        session = self.ensure_loaded()
        inner = session.inner_session
        outputs = inner.run([inner.get_outputs()[0].name], {inner.get_inputs()[0].name: _model_input(image)})
        return np.clip(outputs[0][0, 0], 0.0, 1.0).astype(np.float32)

    def find_objects(self, image: Image.Image, *, max_objects: int = 30, sharpen: int = 0) -> list[Detection]:
        """All objects in the photo, best first; [] when nothing stands out.

        ``sharpen``: the object (index) whose mask is redone on a crop when it is small (``sharpen_small``):
        the best one, or the one a user picked.
        """
        if image.mode == "RGBA" and alpha_is_meaningful(image):
            probability = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
            return detections_from_probability(probability, image_size=image.size, max_objects=max_objects)
        detections = detections_from_probability(self.saliency(image), image_size=image.size, max_objects=max_objects)
        detections = self._refine_irregular(image, detections)
        if 0 <= sharpen < len(detections) and detections[sharpen].area < SMALL_AREA:
            detections[sharpen] = self.sharpen_small(image, detections[sharpen])
        return detections[:max_objects]

    def sharpen_small(self, image: Image.Image, detection: Detection) -> Detection:
        """Redo the mask of a small best object from a crop around it (the model sees it at full 320 px).

        A coin filling 5 % of a phone photo is only ~70 px across in the whole-photo saliency map;
        on the crop its edge is traced several times more finely. Costs one more model run.
        """
        width, height = image.size
        x0, y0, x1, y1 = detection.box
        side = int(max(x1 - x0, y1 - y0) * 1.6)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        crop = (max(0, cx - side // 2), max(0, cy - side // 2), min(width, cx + side // 2), min(height, cy + side // 2))
        if min(crop[2] - crop[0], crop[3] - crop[1]) < 32:
            return detection
        region = image.crop(crop)
        left, top = crop[0], crop[1]
        own = detection.mask[top : crop[3], left : crop[2]]
        best, best_iou = None, 0.5  # the crop's object must be the same one (IoU ≥ 0.5 with the coarse mask)
        for candidate in detections_from_probability(self.saliency(region), image_size=region.size):
            union = float(np.logical_or(candidate.mask, own).sum())
            overlap = float(np.logical_and(candidate.mask, own).sum()) / union if union else 0.0
            if overlap >= best_iou:
                best, best_iou = candidate, overlap
        if best is None:
            return detection
        mask = np.zeros((height, width), dtype=bool)
        mask[top : crop[3], left : crop[2]] = best.mask
        bx0, by0, bx1, by1 = best.box
        return Detection(
            box=(bx0 + left, by0 + top, bx1 + left, by1 + top),
            mask=mask,
            area=round(float(best.mask.sum()) / (width * height), 6),
            circularity=best.circularity,
            centrality=detection.centrality,
            score=detection.score,  # keep the ranking made on the whole photo
            confidence=best.confidence,
        )

    def _refine_irregular(self, image: Image.Image, detections: list[Detection]) -> list[Detection]:
        """Look again, closer, at large irregular detections (coins merged through glare or shadow).

        At 320 px for the whole photo, bright background between neighbouring coins can be as
        salient as the coins; on a crop around the blob the model separates them. The closer look
        is kept only when it yields pieces that are clearly rounder; at most ``MAX_REFINE`` crops.
        """
        width, height = image.size
        refined: list[Detection] = []
        looks = 0
        for detection in detections:
            x0, y0, x1, y1 = detection.box
            pad_x, pad_y = int(0.1 * (x1 - x0)) + 2, int(0.1 * (y1 - y0)) + 2
            crop = (max(0, x0 - pad_x), max(0, y0 - pad_y), min(width, x1 + pad_x), min(height, y1 + pad_y))
            crop_area = (crop[2] - crop[0]) * (crop[3] - crop[1])
            worth_it = (
                detection.circularity < SPLIT_BELOW_CIRCULARITY
                and detection.area >= REFINE_MIN_AREA
                and crop_area <= 0.6 * width * height  # a crop of nearly the whole photo shows nothing new
                and min(crop[2] - crop[0], crop[3] - crop[1]) >= 32
                and looks < MAX_REFINE
            )
            if not worth_it:
                refined.append(detection)
                continue
            looks += 1
            closer = self._look_closer(image, detection, crop)
            refined += closer or [detection]
        refined.sort(key=lambda d: d.score, reverse=True)
        return refined

    def _look_closer(
        self, image: Image.Image, detection: Detection, crop: tuple[int, int, int, int]
    ) -> list[Detection] | None:
        """Detections inside ``crop`` that belong to ``detection`` and are rounder, in image coordinates."""
        region = image.crop(crop)
        inner = detections_from_probability(self.saliency(region), image_size=region.size)
        left, top = crop[0], crop[1]
        own = detection.mask[top : crop[3], left : crop[2]]
        pieces = []
        for candidate in inner:
            inside = float(np.logical_and(candidate.mask, own).sum()) / max(1.0, float(candidate.mask.sum()))
            if inside >= 0.6:  # pieces mostly outside the blob are neighbours already found on their own
                pieces.append(candidate)
        if not pieces or np.mean([p.circularity for p in pieces]) < detection.circularity + 0.15:
            return None
        width, height = image.size
        result = []
        for piece in pieces:
            mask = np.zeros((height, width), dtype=bool)
            mask[top : crop[3], left : crop[2]] = piece.mask
            bx0, by0, bx1, by1 = piece.box
            area = float(piece.mask.sum()) / (width * height)
            ys, xs = np.nonzero(piece.mask)
            centrality = _centrality((xs.mean() + left + 0.5) / width, (ys.mean() + top + 0.5) / height)
            result.append(
                Detection(
                    box=(bx0 + left, by0 + top, bx1 + left, by1 + top),
                    mask=mask,
                    area=round(area, 6),
                    circularity=piece.circularity,
                    centrality=round(centrality, 4),
                    score=round(_score(area, centrality, piece.circularity, piece.confidence), 6),
                    confidence=piece.confidence,
                )
            )
        return result
