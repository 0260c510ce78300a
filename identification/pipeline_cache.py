"""The one place the Django side gets mlcore's pipeline: one instance per process, loaded lazily.

Only the worker and the command-line tools call it: a page or an API request never loads a model
(narrowing candidates searches with the vectors the worker stored). Workers hold the models in
memory between tasks (django-q2 recycles workers after a number of tasks to bound memory), so
loading happens once per worker, never at import time. When another
process activates a newly trained version (``manage.py train_models``), every process picks it up
on its next ``get_pipeline()``: the previous version's embeddings are pruned soon after the switch,
and a process still embedding with the old version would find no candidates.
"""

from __future__ import annotations

import threading

from django.conf import settings

_lock = threading.Lock()
# (models folder, enhance, pinned version or None) → (pipeline, the active version it was made for)
_pipelines: dict[tuple[str, bool, str | None], tuple[object, str | None]] = {}


def get_pipeline(version: str | None = None):
    """The mlcore Pipeline for this process's models folder: the active version's, or trained ``version``'s.

    A version that is not active yet is what a re-index embeds the catalogue with before it is
    activated (``manage.py reindex --model VERSION``), so searches never find an empty index.
    """
    from mlcore.pipeline import Pipeline
    from mlcore.versions import active_version

    key = (str(settings.OBVERSE_MODELS_DIR), settings.OBVERSE_ENHANCE, version)
    active = active_version(settings.OBVERSE_MODELS_DIR)  # one small file read: cheap next to any task
    with _lock:
        cached = _pipelines.get(key)
        if cached is None or cached[1] != active:
            pipeline = Pipeline(
                settings.OBVERSE_MODELS_DIR, use_enhance=settings.OBVERSE_ENHANCE, pinned_version=version
            )
            cached = _pipelines[key] = (pipeline, active)
        return cached[0]


def reset_pipeline() -> None:
    """Forget loaded models (after training a new version, or in tests)."""
    with _lock:
        _pipelines.clear()


def embedding_version(pipeline) -> tuple[str, str]:
    """(model name, version) of the embeddings ``pipeline`` makes: the index its queries are compared with.

    Reading it loads the embedder (the version depends on the trained projection found), so it is
    for the worker and the commands only.
    """
    embedder = pipeline.embedder
    return embedder.name, embedder.version
