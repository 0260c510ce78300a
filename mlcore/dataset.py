"""Labelled catalogue records in the ``ans-roman`` layout (labels.csv + images/), without Django.

The same ``CatalogueRecord`` shape is built from the database by ``manage.py train_models``, so
training and evaluation see one format whatever the source.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Sequence
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
    designs: dict[str, str] = field(default_factory=dict)  # side → design key (``design_key``), when known


def type_key(record: CatalogueRecord) -> str:
    """The item a record belongs to: its type, or the record itself when it has none."""
    return record.type_id or f"record:{record.record_id}"


def hash_unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from the parts (independent of Python's hash seed)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_types(records: Sequence[CatalogueRecord], *, seed: int, train_fraction: float) -> set[str]:
    """Types whose seeded hash falls below ``train_fraction``: the ones learned parts may see.

    A type's place depends only on its key and the seed, so a larger ``train_fraction`` keeps every
    type a smaller one chose (splits nest).
    """
    return {type_key(r) for r in records if hash_unit(seed, "split", type_key(r)) < train_fraction}


def design_key(authority: str, legend: str, description: str) -> str:
    """What one side of a coin shows, as a key: the authority, the legend's letters and the description.

    Many catalogue types share one side's design (same ruler, legend and bust; they differ on the
    other side), so a photo of that side cannot tell them apart. Two sides with the same key show the
    same design: the legend keeps only its letters A–Z (catalogues differ in brackets, ligatures and
    line breaks) and the description is compared case- and spacing-insensitively. "" when the record
    says nothing about the side (no legend and no description): then nothing is known to be shared.
    """
    letters = re.sub(r"[^A-Z]", "", (legend or "").upper())
    words = " ".join((description or "").lower().split())
    if not letters and not words:
        return ""
    return f"{(authority or '').strip().lower()}|{letters}|{words}"


def side_design(record: CatalogueRecord, side: str) -> str:
    """The record's design key for ``side``, or its type and side when the design is unknown."""
    return record.designs.get(side) or f"{type_key(record)}|{side}"


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
            designs = {}
            for side, prefix in (("obverse", "obverse"), ("reverse", "reverse")):
                key = design_key(
                    row.get("authority", ""), row.get(f"{prefix}_legend", ""), row.get(f"{prefix}_description", "")
                )
                if key:
                    designs[side] = key
            records.append(CatalogueRecord(row["record_id"], row.get("type_id", ""), images, labels, designs))
            if limit and len(records) >= limit:
                break
    return records
