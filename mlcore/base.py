"""The one shape every model in mlcore has: a name, a version, lazy loading under a lock.

Nothing heavy happens at import time or in ``__init__``; the first call to ``ensure_loaded()``
(made by ``predict``-style methods) loads weights from the models folder, never from a network.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar


class LazyModel:
    """Base class: subclasses set ``name``/``version`` and implement ``_load()`` returning the model."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = ""

    def __init__(self, models_dir: str | Path) -> None:
        self.models_dir = Path(models_dir)
        self._lock = threading.Lock()
        self._model: Any = None

    def _load(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def ensure_loaded(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


REGISTRY: dict[str, type[LazyModel]] = {}


def register(cls: type[LazyModel]) -> type[LazyModel]:
    """Class decorator: make a model class findable by its ``name`` (e.g. from a setting or a CLI flag)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls
    return cls
