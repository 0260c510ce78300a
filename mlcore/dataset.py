"""Labelled catalogue records in the ``ans-roman`` layout (labels.csv + images/), without Django.

The same ``CatalogueRecord`` shape is built from the database by ``manage.py train_models``, so
training and evaluation see one format whatever the source.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

# Metadata fields predicted from photos (Concept kinds); others may be added by a catalogue.
METADATA_FIELDS = ("authority", "mint", "material", "denomination")


@dataclass
class CatalogueRecord:
    """One specimen: its type (``type_id``), metadata labels and the paths of its side images."""

    record_id: str
    type_id: str
    images: dict[str, Path] = field(default_factory=dict)  # side ('obverse'/'reverse') → path
    labels: dict[str, str] = field(default_factory=dict)  # metadata field → value


def type_key(record: CatalogueRecord) -> str:
    """The item a record belongs to: its type, or the record itself when it has none."""
    return record.type_id or f"record:{record.record_id}"


def load_ans_layout(directory: str | Path, *, limit: int | None = None) -> list[CatalogueRecord]:
    """Read ``labels.csv`` of a folder in the ans-roman layout; images missing on disk are skipped."""
    directory = Path(directory)
    records = []
    with (directory / "labels.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            images = {}
            for side, column in (("obverse", "obverse_image"), ("reverse", "reverse_image")):
                if row.get(column) and (directory / row[column]).exists():
                    images[side] = directory / row[column]
            labels = {name: row[name] for name in METADATA_FIELDS if row.get(name)}
            records.append(CatalogueRecord(row["record_id"], row.get("type_id", ""), images, labels))
            if limit and len(records) >= limit:
                break
    return records
