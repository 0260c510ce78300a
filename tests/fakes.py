"""A small, deterministic stand-in for mlcore's Pipeline, for testing the Django orchestration fast.

Its embedding is the photo itself at 32×40 grey pixels (1280 values), so identical or similar
pictures really are near each other in pgvector; end-to-end tests use the real pipeline. The
``fake_pipeline`` fixture (tests/conftest.py) puts one in place of the real one.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from mlcore.pipeline import STEPS


@dataclass
class FakePrediction:
    value: str
    confidence: float


@dataclass
class FakeResult:
    cutout: Image.Image
    upright: Image.Image
    crop_box: tuple
    detections: list
    chosen: int
    angle: float
    angle_confidence: float
    enhanced: bool
    side: str
    side_confidence: float
    embedding: np.ndarray
    timings: dict = field(default_factory=dict)
    model_versions: dict = field(default_factory=dict)
    turns: object = None  # the rotation search's query when the pipeline makes it while processing


class FakeEmbedder:
    name = "fake-pixels"
    version = "1"


class FakePipeline:
    """Follows mlcore.pipeline.Pipeline's interface; records what it was asked.

    Its attributes say how it behaves and can be changed by a test: ``fail_with``, ``block_at``,
    ``objects``, and ``embedder.version`` (a retraining).
    """

    def __init__(self, fail_with: Exception | None = None, block_at: str | None = None, objects: int = 1):
        self.embedder = FakeEmbedder()
        self.fail_with = fail_with
        self.block_at = block_at  # hang at this step, as a worker stuck or about to be killed would
        self.objects = objects  # objects "found" in every photo: side by side, equal strips, the first best
        self.calls = 0  # photos processed (found, cut out, embedded)
        self.cutouts_embedded = 0  # stored cut-outs embedded again (a re-index)
        self.choices: list[int | None] = []  # the ``choose`` of every call
        self.versions_asked: list[str | None] = []  # the ``version`` of every ``get_pipeline`` call

    def process(self, source, *, known_side=None, assume_upright=False, on_step=None, choose=None):
        self.calls += 1
        self.choices.append(choose)
        if self.fail_with is not None:
            raise self.fail_with
        image = Image.open(io.BytesIO(source)) if isinstance(source, bytes) else source
        image = image.convert("RGB")
        for step in STEPS:
            if on_step:
                on_step(step)
            if step == self.block_at:
                time.sleep(3600)
        strip = image.width // self.objects
        boxes = [[i * strip, 0, (i + 1) * strip, image.height] for i in range(self.objects)]
        chosen = choose if choose is not None and 0 <= choose < len(boxes) else 0
        image = image.crop(boxes[chosen])
        vector = np.asarray(image.convert("L").resize((32, 40)), dtype=np.float32).ravel() - 127.5
        vector /= np.linalg.norm(vector) or 1.0
        cutout = image.resize((96, 96)).convert("RGBA")
        return FakeResult(
            cutout=cutout,
            upright=image.resize((96, 96)),
            crop_box=tuple(boxes[chosen]),
            detections=[{"box": box, "score": round(1.0 - 0.1 * i, 3)} for i, box in enumerate(boxes)],
            chosen=chosen,
            angle=0.0 if assume_upright else 30.0,
            angle_confidence=0.9,
            enhanced=False,
            side=known_side or "obverse",
            side_confidence=0.97,
            embedding=vector,
            timings={"embedding": 1.0},
            model_versions={"embedding": f"{self.embedder.name}@{self.embedder.version}"},
        )

    def embed_cutout(self, cutout):
        self.cutouts_embedded += 1
        vector = np.asarray(cutout.convert("L").resize((32, 40)), dtype=np.float32).ravel() - 127.5
        return vector / (np.linalg.norm(vector) or 1.0)

    def embed_many(self, cutouts):
        return np.stack([self.embed_cutout(cutout) for cutout in cutouts])

    def process_catalogue(self, sources):
        """As mlcore's: each catalogue photo cut out and embedded, or the reason it could not be."""
        from mlcore.pipeline import CatalogueCut

        out = []
        for source in sources:
            try:
                result = self.process(source, assume_upright=True)
            except Exception as exc:  # the real one reports unusable photos the same way
                out.append(CatalogueCut(None, None, str(exc)))
                continue
            out.append(CatalogueCut(result.cutout, result.embedding))
        return out

    def predict_metadata(self, neighbours):
        votes: dict[str, dict[str, float]] = {}
        for labels, score in neighbours:
            for kind, value in labels.items():
                votes.setdefault(kind, {}).setdefault(value, 0.0)
                votes[kind][value] += max(score, 0.0)
        out = {}
        for kind, counts in votes.items():
            value = max(counts, key=counts.get)
            out[kind] = FakePrediction(value, counts[value] / (sum(counts.values()) or 1.0))
        return out


def fake_get_pipeline(pipeline: FakePipeline):
    """A stand-in for ``identification.pipeline_cache.get_pipeline`` that always answers ``pipeline``."""

    def get_pipeline(version: str | None = None) -> FakePipeline:
        pipeline.versions_asked.append(version)
        return pipeline

    return get_pipeline


def install_in_process(**kwargs) -> FakePipeline:
    """Put a FakePipeline in place of the real one for the rest of this process (worker subprocesses).

    Every product module reaches the pipeline through ``pipeline_cache.get_pipeline``, so replacing
    that one attribute is enough; a django-q2 cluster forks its workers afterwards, so they inherit it.
    """
    from identification import pipeline_cache

    pipeline = FakePipeline(**kwargs)
    pipeline_cache.get_pipeline = fake_get_pipeline(pipeline)
    return pipeline
