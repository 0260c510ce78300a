"""The one place the Django side gets mlcore's pipeline: one instance per process, loaded lazily.

Workers hold the models in memory between tasks (django-q2 recycles workers after a number of
tasks to bound memory), so loading happens once per worker, never at import time.
"""

from __future__ import annotations

import threading

from django.conf import settings

_lock = threading.Lock()
_pipelines: dict[str, object] = {}


def get_pipeline():
    """The mlcore Pipeline for this process's models folder."""
    from mlcore.pipeline import Pipeline

    key = str(settings.OBVERSE_MODELS_DIR)
    with _lock:
        if key not in _pipelines:
            _pipelines[key] = Pipeline(settings.OBVERSE_MODELS_DIR)
        return _pipelines[key]


def reset_pipeline() -> None:
    """Forget loaded models (after training a new version, or in tests)."""
    with _lock:
        _pipelines.clear()
