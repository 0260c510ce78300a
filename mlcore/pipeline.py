"""The composed identification pipeline: photo → cut-out → upright → (enhanced) → side → embedding.

``Pipeline(models_dir).process(photo)`` runs the steps in order, calling ``on_step(name)`` before
each (the Django side shows them as progress), and returns a ``ProcessResult`` with every
intermediate a curator may need to see why an identification went wrong. Catalogue photos go
through the same path with ``known_side`` and ``assume_upright`` so that catalogue and query
embeddings are comparable. Every part loads lazily on first use; the trained parts (side,
orientation, metadata calibration) come from the active trained version (``mlcore.versions``) and
are only needed when their step runs.

Metadata needs catalogue neighbours (a pgvector search on the Django side), so it is a separate
call: ``Pipeline.predict_metadata(neighbours)``. The rotation search's query (the cut-out embedded
at several turns, searched turn by turn, each catalogue image scored by its best turn;
docs/ml-notes.md, "Rotation search") comes with a query's ``ProcessResult.turns``;
``Pipeline.query_turns(cutout, angle)`` makes it again from a stored cut-out. The orientation
estimator reads the cut-out at eight turns in one batch (``mlcore.orientation``), the side
classifier the upright cut-out (the first of the search's turns).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from mlcore.enhance import enhance
from mlcore.imageio import ImageDecodeError, decode_image
from mlcore.metadata import MetadataPredictor, Prediction
from mlcore.modelfiles import ModelFileError
from mlcore.side import SIDES, SideClassifier

STEPS = ("finding_object", "removing_background", "turning_upright", "enhancing", "classifying", "embedding")
CUTOUT_SIZE = 384
# Rotation search: the upright cut-out is also embedded turned by this many evenly spaced offsets
# (0 = the estimator's own angle) and each catalogue image scores by its best turn. Chosen on a
# held-out seed within the latency budget (docs/ml-notes.md, "Rotation search": 12 turns scored the
# same but cost twice as much); 0 or 1 switches it off. ROTATION_PRIOR weighs the orientation
# estimator's log-probability of each turn (0 = every turn equally plausible).
ROTATION_TURNS = 8
ROTATION_PRIOR = 0.03
# The best turn is at most half a step from upright: learned parts that compare a query with the
# catalogue (the embedding's whitening) are trained on copies turned anywhere within it.
TURN_RESIDUAL = 180.0 / ROTATION_TURNS
NEUTRAL = (128, 128, 128)  # mlcore.cutout's background grey


class CatalogueCut(NamedTuple):
    """A catalogue photo indexed by ``Pipeline.process_catalogue``: its RGBA cut-out and embedding, or why not."""

    cutout: Image.Image | None
    embedding: np.ndarray | None
    error: str = ""


class QueryTurns(NamedTuple):
    """A query photo for the rotation search: correction angles (degrees), (T, dim) embeddings, score bonuses."""

    angles: np.ndarray
    vectors: np.ndarray
    bonus: np.ndarray


__all__ = ["STEPS", "ImageDecodeError", "NoObjectFound", "Pipeline", "ProcessResult", "QueryTurns"]


class NoObjectFound(ValueError):
    """No coin (or other object) could be found in the photo; the message is meant for the uploader."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "No coin could be found in this photo. Please photograph the coin on a plain background, "
            "filling most of the frame, in good light."
        )


@dataclass
class ProcessResult:
    """Everything the pipeline made of one photo (images are PIL; ``embedding`` is L2-normalised float32)."""

    original_size: tuple[int, int]
    detections: list[dict[str, Any]]  # every object found: {"box": [x0, y0, x1, y1], "score": float}
    chosen: int
    crop_box: tuple[int, int, int, int]
    cutout: Image.Image  # RGBA, background transparent
    upright: Image.Image  # RGB on neutral, turned upright (and enhanced when that ran)
    angle: float  # degrees the cut-out was turned to make it upright (counter-clockwise)
    angle_confidence: float
    enhanced: bool
    side: str
    side_confidence: float
    embedding: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per step, plus "decoding", "total"
    model_versions: dict[str, str] = field(default_factory=dict)
    mask: Image.Image | None = None  # the chosen object's mask (L) at the original size
    on_neutral: Image.Image | None = None  # the cut-out on neutral before turning
    before_enhance: Image.Image | None = None
    # The rotation search's query (as ``query_turns`` makes it), made before classifying (the side reads
    # its first turn). None for catalogue photos (``assume_upright``) and when the search is off.
    turns: QueryTurns | None = None


def on_neutral_of(cutout: Image.Image) -> Image.Image:
    """The RGB cut-out on neutral grey from a stored RGBA cut-out (``ProcessResult.cutout``).

    The same pixels as ``mlcore.cutout.make_cutout``'s ``on_neutral``: it composes the coin over neutral
    grey by the same alpha. An RGB cut-out is returned as it is.
    """
    on_neutral = cutout.convert("RGB")
    if cutout.mode == "RGBA":
        on_neutral = Image.composite(on_neutral, Image.new("RGB", cutout.size, NEUTRAL), cutout.getchannel("A"))
    return on_neutral


class _Upright(NamedTuple):
    """The turning-upright step's outcome (``Pipeline._turn_upright``)."""

    angle: float  # degrees the cut-out is turned to make it upright (counter-clockwise)
    confidence: float
    image: Image.Image  # the cut-out on neutral, turned upright
    probabilities: np.ndarray | None  # the orientation estimator's bins, reused as the rotation search's prior
    # The cut-out read (an ``mlcore.embed.Reading``) at the estimator's evenly spaced turns, the first as cut;
    # None when the step was skipped.
    views: Any


class _StepClock:
    """Milliseconds each step took, each step announced to ``on_step`` (the Django side's progress) as it starts."""

    def __init__(self, on_step: Callable[[str], None] | None) -> None:
        self.on_step = on_step
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    def since_start(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 1)

    @contextmanager
    def step(self, name: str):
        if self.on_step is not None:
            self.on_step(name)
        started = time.perf_counter()
        yield
        self.timings[name] = round((time.perf_counter() - started) * 1000, 1)


def _as_image(source: bytes | str | os.PathLike | Image.Image) -> Image.Image:
    """The photo as RGB or RGBA (a file or its bytes decoded; raises ImageDecodeError)."""
    if isinstance(source, Image.Image):
        image = source
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        return image
    return decode_image(source)


class Pipeline:
    """All mlcore parts composed; thread-safe lazy loading (one instance per worker process).

    ``use_enhance`` switches the enhancement step on for small coins. It is off by default: on the
    real path it left recall@8 unchanged on two seeds (docs/ml-notes.md, "Enhancement, with and
    without"). The step is reported to ``on_step`` either way. ``embed_cutout`` and ``query_turns``
    start from a stored cut-out, whose coin size in the photo is no longer known, and never enhance:
    with it on, re-index with ``reindex --recut``.
    ``use_orientation`` can turn the upright step off (then queries keep their photographed angle).
    ``rotation_turns`` and ``rotation_prior``: the rotation search's query (``query_turns``).
    """

    def __init__(
        self,
        models_dir: str | Path | None = None,
        *,
        use_enhance: bool = False,
        use_orientation: bool = True,
        cutout_size: int = CUTOUT_SIZE,
        rotation_turns: int = ROTATION_TURNS,
        rotation_prior: float = ROTATION_PRIOR,
        pinned_version: str | None = None,
    ) -> None:
        from mlcore.modelfiles import models_dir as default_models_dir

        self.models_dir = default_models_dir(models_dir)
        # A trained version to use instead of the active one (a new version is re-indexed before it
        # is activated); None: the active version.
        self.pinned_version = pinned_version
        self.use_enhance = use_enhance
        self.use_orientation = use_orientation
        self.cutout_size = cutout_size
        self.rotation_turns = rotation_turns if use_orientation else 1
        self.rotation_prior = rotation_prior
        self._lock = threading.RLock()  # a part may create another (orientation uses the embedder)
        self._parts: dict[str, Any] = {}

    # --- parts, created on first use --------------------------------------------------------

    def _part(self, key: str, factory: Callable[[], Any]) -> Any:
        part = self._parts.get(key)
        if part is None:
            with self._lock:
                part = self._parts.get(key)
                if part is None:
                    part = self._parts[key] = factory()
        return part

    @property
    def segmenter(self):
        from mlcore.segment import Segmenter

        return self._part("segmenter", lambda: Segmenter(self.models_dir))

    @property
    def orientation(self):
        from mlcore.orientation import OrientationEstimator

        # Reads the embedder's layout features: one copy of the weights per process.
        return self._part("orientation", lambda: OrientationEstimator(self.models_dir, embedder=self.embedder))

    @property
    def side_classifier(self) -> SideClassifier:
        return self._part("side", lambda: SideClassifier(self.models_dir, embedder=self.embedder))

    @property
    def embedder(self):
        from mlcore.embed import Embedder

        return self._part("embedder", lambda: Embedder(self.models_dir, pinned_version=self.pinned_version))

    @property
    def metadata(self) -> MetadataPredictor:
        return self._part("metadata", lambda: MetadataPredictor(self.models_dir, pinned_version=self.pinned_version))

    def model_versions(self) -> dict[str, str]:
        """name@version of every part loaded so far (and always the embedder's)."""
        versions = {}
        parts = {"embedding": self.embedder, **{k: v for k, v in self._parts.items() if k != "embedder"}}
        for key, part in parts.items():
            described = part.describe() if part.loaded or key == "embedding" else {"name": part.name}
            if "version" in described:
                versions[key] = f"{described['name']}@{described['version']}"
        return versions

    # --- steps --------------------------------------------------------------------------------

    def process(
        self,
        source: bytes | str | os.PathLike | Image.Image,
        *,
        known_side: str | None = None,
        assume_upright: bool = False,
        on_step: Callable[[str], None] | None = None,
        choose: int | None = None,
    ) -> ProcessResult:
        """Run every step on one photo. Raises ImageDecodeError (unusable file) or NoObjectFound.

        ``choose``: which of the objects found is the coin (an index into ``detections``, as a user
        picks it when a photo shows several); None, or an index the photo does not have: the likeliest.
        """
        from mlcore.cutout import make_cutout, rotate_upright

        if known_side is not None and known_side not in SIDES:
            known_side = None  # 'other'/'unknown' sides are classified like any query
        clock = _StepClock(on_step)
        image = _as_image(source)
        clock.timings["decoding"] = clock.since_start()
        with clock.step("finding_object"):
            found, chosen = self._find_objects(image, assume_upright=assume_upright, choose=choose)
        with clock.step("removing_background"):
            cut = make_cutout(image, found[chosen], size=self.cutout_size)
            on_neutral = cut.on_neutral.convert("RGB")
        with clock.step("turning_upright"):
            turn = self._turn_upright(on_neutral, keep=assume_upright or not self.use_orientation)
        with clock.step("enhancing"):
            upright, enhanced, turn_source = self._enhance(turn.image, on_neutral, cut.box)

        angles = self._search_angles(turn.angle, assume_upright=assume_upright)

        def describe():
            turned = [upright] + [rotate_upright(turn_source, float(a)) for a in angles[1:]]
            return self.embedder.read(turned, stems=not known_side)

        # The search's turns; with no turn made (nothing trained), the views already read are those turns.
        same = turn.views is not None and len(turn.views.descriptors) == len(angles) and not turn.angle and not enhanced
        reading = turn.views if same else None
        with clock.step("classifying"):
            if known_side:
                side, side_confidence = known_side, 1.0
            else:
                if reading is None:
                    reading = describe()
                side, side_confidence = self._classify(reading.stems, upright_estimated=turn.probabilities is not None)
        with clock.step("embedding"):
            if reading is None:
                reading = describe()
            embedding, turns = self._embed(reading.descriptors, angles, turn.probabilities)
        clock.timings["total"] = clock.since_start()

        return ProcessResult(
            original_size=image.size,
            detections=[{"box": [int(v) for v in d.box], "score": float(d.score)} for d in found],
            chosen=chosen,
            crop_box=tuple(int(v) for v in cut.box),
            cutout=cut.rgba,
            upright=upright,
            angle=float(turn.angle),
            angle_confidence=float(turn.confidence),
            enhanced=enhanced,
            side=side,
            side_confidence=float(side_confidence),
            embedding=embedding,
            timings=clock.timings,
            model_versions=self.model_versions(),
            mask=Image.fromarray((found[chosen].mask * 255).astype(np.uint8)),
            on_neutral=on_neutral,
            before_enhance=turn.image,
            turns=turns,
        )

    def _search_angles(self, angle: float, *, assume_upright: bool) -> np.ndarray:
        """The rotation search's turns: the upright estimate and evenly spaced turns from it (catalogue: one)."""
        if not assume_upright and self.rotation_turns > 1:
            return (float(angle) + self.turn_offsets()) % 360.0
        return np.array([angle % 360.0])

    def _find_objects(self, image: Image.Image, *, assume_upright: bool, choose: int | None) -> tuple[list, int]:
        """(every object found, the index of the coin): the likeliest, or ``choose``. Raises NoObjectFound."""
        from mlcore.segment import studio_detection

        # A catalogue's studio photo is usually one coin on a plain background: cut out by colour when that
        # is safe, which spares the model run that dominates indexing (``studio_detection``).
        studio = studio_detection(image) if assume_upright and image.mode == "RGB" else None
        found = [studio] if studio else self.segmenter.find_objects(image, sharpen=choose or 0)
        if not found:
            raise NoObjectFound()
        chosen = max(range(len(found)), key=lambda i: found[i].score)
        if choose is not None and 0 <= choose < len(found):
            chosen = choose
        return found, chosen

    def _turn_upright(self, on_neutral: Image.Image, *, keep: bool) -> _Upright:
        """The orientation estimate and the cut-out turned by it; ``keep``: no estimate, the cut-out as it is."""
        from mlcore.cutout import rotate_upright
        from mlcore.orientation import angle_from_probabilities, turn_views

        if keep:
            return _Upright(0.0, 1.0, on_neutral, None, None)
        # One pass over the turned views gives the orientation's layout (and, as it happens, the search's
        # turns when nothing is turned: the estimate is 0° or nothing is trained).
        views = turn_views(on_neutral, self.orientation.tta)
        view_reading = self.embedder.read(views, layout=True, stems=True)
        probabilities = None
        try:
            probabilities = self.orientation.probabilities_of_views(view_reading.layout)[0]
            turned, confidence = angle_from_probabilities(probabilities)
            angle = (-turned) % 360.0
        except ModelFileError:
            # Nothing trained yet (a fresh catalogue): keep the photographed angle. Identification
            # still works, less well, until `train_models` has run.
            angle, confidence = 0.0, 0.0
        upright = rotate_upright(on_neutral, angle) if angle else on_neutral
        return _Upright(angle, confidence, upright, probabilities, view_reading)

    def _enhance(
        self, upright: Image.Image, on_neutral: Image.Image, box: tuple[int, int, int, int]
    ) -> tuple[Image.Image, bool, Image.Image]:
        """(the upright cut-out, enhanced or not, what the rotation search's other turns are cut from)."""
        if not self.use_enhance:
            return upright, False, on_neutral
        coin_size = min(box[2] - box[0], box[3] - box[1])
        upright, enhanced = enhance(upright, source_size=coin_size)
        turn_source = on_neutral
        if enhanced:
            # Every turn of the search reads the same enhanced pixels, not only the upright one.
            turn_source, _ = enhance(on_neutral, source_size=coin_size)
        return upright, enhanced, turn_source

    def _classify(self, stems, *, upright_estimated: bool) -> tuple[str, float]:
        """(side, confidence) from the block-13 maps of the search's turns (the first: the upright estimate)."""
        # The side of the upright cut-out: the classifier reads an upright coin best (held-out types,
        # frozen features: 0.86 / 0.83 on two seeds, against 0.77 / 0.76 for the mean over 8 turns).
        # With no upright estimate to trust (nothing trained), the mean over the turned views instead.
        try:
            return self.side_classifier.predict_stems(stems[:1] if upright_estimated else stems)
        except ModelFileError:
            return "unknown", 0.0  # untrained: the search then looks at both sides

    def _embed(
        self, descriptors: np.ndarray, angles: np.ndarray, probabilities: np.ndarray | None
    ) -> tuple[np.ndarray, QueryTurns | None]:
        """(the upright embedding, the rotation search's query when it has several turns)."""
        vectors = np.asarray(self.embedder.embed_descriptors(descriptors), dtype=np.float32)
        if len(angles) <= 1:
            return vectors[0], None
        bonus = np.zeros(len(angles))
        if self.rotation_prior and probabilities is not None:
            from mlcore.retrieval import turn_bonus

            bonus = turn_bonus(probabilities, angles, self.rotation_prior)
        return vectors[0], QueryTurns(angles=angles, vectors=vectors, bonus=bonus)

    def turn_offsets(self) -> np.ndarray:
        """Degrees (counter-clockwise, from the upright estimate) of the rotation search's turns; first 0."""
        turns = max(1, int(self.rotation_turns))
        return np.arange(turns) * (360.0 / turns)

    def query_turns(self, cutout: Image.Image, angle: float, *, first: np.ndarray | None = None) -> QueryTurns:
        """The rotation search's query: the cut-out turned by ``angle`` + each of ``turn_offsets``, embedded.

        ``cutout``: the RGBA cut-out ``process`` returned (stored by the Django side), or the RGB
        cut-out on neutral; ``angle``: the upright estimate it returned. ``first``: the embedding
        ``process`` already made (turn 0), reused as is. The bonus of each turn is
        ``rotation_prior``·log p(turn) from the orientation estimator (zeros when nothing is trained),
        so that an implausible turn must match clearly better to win. Same computation as
        ``bench.evaluate``'s rotation search (docs/ml-notes.md).
        """
        from mlcore.embed import embed_turns
        from mlcore.retrieval import turn_bonus

        on_neutral = on_neutral_of(cutout)
        angles = (float(angle) + self.turn_offsets()) % 360.0
        rest = embed_turns(self.embedder, on_neutral, angles[1:] if first is not None else angles)
        vectors = rest if first is None else np.concatenate([np.asarray(first, np.float32).reshape(1, -1), rest])
        bonus = np.zeros(len(angles))
        if self.rotation_prior and len(angles) > 1:
            try:
                probabilities = self.orientation.probabilities([on_neutral])[0]
                bonus = turn_bonus(probabilities, angles, self.rotation_prior)
            except ModelFileError:
                pass  # nothing trained: every turn equally plausible
        return QueryTurns(angles=angles, vectors=vectors, bonus=bonus)

    def process_catalogue(self, sources: Sequence[bytes | Image.Image]) -> list[CatalogueCut]:
        """Catalogue photos (upright, side known), several at once: each found, cut out, and all embedded in one batch.

        The same cut-outs and embeddings as ``process(photo, assume_upright=True)`` one by one, but the
        backbone runs once for the batch and a studio photo skips the segmentation model
        (``mlcore.segment.studio_detection``): catalogue indexing's speed (docs/scaling.md). A photo
        that cannot be decoded or shows no object gets ``error`` instead of a cut-out.
        """
        from mlcore.cutout import make_cutout
        from mlcore.segment import studio_detection

        cuts: list[tuple[Image.Image, Image.Image] | str] = []
        for source in sources:
            try:
                image = source if isinstance(source, Image.Image) else decode_image(source)
                if image.mode not in ("RGB", "RGBA"):
                    image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
                studio = studio_detection(image) if image.mode == "RGB" else None
                found = [studio] if studio else self.segmenter.find_objects(image)
                if not found:
                    raise NoObjectFound()
                cut = make_cutout(image, max(found, key=lambda d: d.score), size=self.cutout_size)
                cuts.append((cut.rgba, cut.on_neutral.convert("RGB")))
            except (ImageDecodeError, NoObjectFound) as exc:
                cuts.append(str(exc))
        good = [cut for cut in cuts if not isinstance(cut, str)]
        vectors = iter(self.embed_many([on_neutral for _, on_neutral in good]) if good else [])
        return [
            CatalogueCut(None, None, cut) if isinstance(cut, str) else CatalogueCut(cut[0], next(vectors))
            for cut in cuts
        ]

    def embed_many(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, dim) catalogue embeddings of upright cut-outs on neutral (or stored RGBA cut-outs), one batch."""
        reading = self.embedder.read([on_neutral_of(image) for image in images])
        return np.asarray(self.embedder.embed_descriptors(reading.descriptors), dtype=np.float32)

    def embed_cutout(self, cutout: Image.Image) -> np.ndarray:
        """The catalogue embedding of a stored cut-out: what ``process(photo, assume_upright=True)`` gives.

        Re-indexing the catalogue for a new embedding version starts from the cut-out the first
        indexing stored, so the object is not found again: U^2-Net-p is 0.37 s of a catalogue photo's
        ~0.5 s on this 2-core CPU (docs/scaling.md, "Indexing the catalogue").
        """
        reading = self.embedder.read([on_neutral_of(cutout)])
        return np.asarray(self.embedder.embed_descriptors(reading.descriptors), dtype=np.float32)[0]

    def predict_metadata(self, neighbours: Iterable[tuple[dict[str, str], float]]) -> dict[str, Prediction]:
        """{field: Prediction(value, confidence)} from catalogue neighbours [(labels, cosine similarity)]."""
        return self.metadata.predict(neighbours)

    def metadata_calibrated(self) -> bool:
        """Whether metadata confidences are calibrated by a trained version (else they are raw vote shares)."""
        self.metadata.ensure_loaded()
        return self.metadata.trained_version != "uncalibrated"
