"""The one place the Django side gets mlcore's pipeline: one instance per process, loaded lazily.

Workers hold the models in memory between tasks (django-q2 recycles workers after a number of
tasks to bound memory), so loading happens once per worker, never at import time. When another
process activates a newly trained version (``manage.py train_models``), every process picks it up
on its next ``get_pipeline()``: the previous version's embeddings are pruned soon after the switch,
and a process still embedding with the old version would find no candidates.
"""

from __future__ import annotations

import threading

from django.conf import settings

_lock = threading.Lock()
_pipelines: dict[tuple[str, bool], tuple[object, str | None]] = {}  # (models folder, enhance) → (pipeline, its version)


def get_pipeline():
    """The mlcore Pipeline for this process's models folder, for the version active now."""
    from mlcore.pipeline import Pipeline
    from mlcore.versions import active_version

    key = (str(settings.OBVERSE_MODELS_DIR), settings.OBVERSE_ENHANCE)
    active = active_version(settings.OBVERSE_MODELS_DIR)  # one small file read: cheap next to any task
    with _lock:
        cached = _pipelines.get(key)
        if cached is None or cached[1] != active:
            cached = _pipelines[key] = (
                Pipeline(settings.OBVERSE_MODELS_DIR, use_enhance=settings.OBVERSE_ENHANCE),
                active,
            )
        return cached[0]


def reset_pipeline() -> None:
    """Forget loaded models (after training a new version, or in tests)."""
    with _lock:
        _pipelines.clear()
