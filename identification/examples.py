"""The example-photo library: phone-like photos of demo specimens for visitors without a coin at hand.

``manage.py load_demo`` writes them with an ``examples.json`` index; this module only reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils.text import slugify


@dataclass(frozen=True)
class ExamplePhoto:
    key: str
    path: Path
    label: str


def examples_dir() -> Path:
    return Path(settings.OBVERSE_DEMO_DIR) / "examples"


def example_photos() -> list[ExamplePhoto]:
    index = examples_dir() / "examples.json"
    try:
        entries = json.loads(index.read_text())
    except (OSError, ValueError):
        return []
    photos = []
    for entry in entries if isinstance(entries, list) else entries.get("examples", []):
        path = examples_dir() / Path(entry.get("file") or entry.get("path", "")).name
        if path.is_file():
            label = entry.get("label") or f"{entry.get('side', 'photo').capitalize()} of {entry.get('record_id', '?')}"
            # Keys go into URLs: record ids carry dots ("DEMO.031.2"), slugs may not.
            photos.append(ExamplePhoto(key=slugify(path.stem), path=path, label=label))
    return photos


def example_get(key: str) -> ExamplePhoto | None:
    return next((photo for photo in example_photos() if photo.key == key), None)
