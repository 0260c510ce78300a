"""Export the catalogue as CSV in the generic layout that ``import_csv`` reads (docs/importing.md).

One row per specimen, with its item's fields and concepts, so an export re-imports into the same
records (keyed by ``record_id``). Every cell that a spreadsheet program would run as a formula
(``=…``, ``+…``, ``-…``, ``@…``, or a leading tab or carriage return) gets a leading single quote
(OWASP's advice for CSV injection); the importer removes that quote again, and plain numbers such
as ``-44`` are left alone.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from collection.importers.base import formula_neutralise, is_formula_like
from collection.importers.tabular import CONCEPT_COLUMNS, ITEM_TEXT_COLUMNS, SPECIMEN_TEXT_COLUMNS, VALUE_SEPARATOR
from collection.models import Side, Specimen, SpecimenImage

KIND_COLUMNS = {kind: column for column, kind in CONCEPT_COLUMNS.items()}
HEAD_COLUMNS = ["record_id", "title", "item_uri", "item_reference", "item_title"]
SPECIMEN_COLUMNS = ["weight_g", "diameter_mm", "axis", "source_url", *SPECIMEN_TEXT_COLUMNS]
IMAGE_COLUMNS = {Side.OBVERSE: "obverse_image", Side.REVERSE: "reverse_image"}
CONCEPT_KIND = re.compile(r"^[a-z][a-z0-9_]{0,49}$")


@dataclass
class ExportResult:
    """What an export wrote: rows (specimens), the cells it neutralised, and where."""

    path: str
    rows: int = 0
    neutralised: int = 0

    def __str__(self) -> str:
        return (
            f"{self.rows} specimens exported to {self.path}; "
            f"{self.neutralised} cells that a spreadsheet would run as formulas were neutralised"
        )


def _concept_cells(concepts: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """Concept (kind, label, uri) triples → the layout's columns: 'mint', 'mint_uri', 'concept:portrait'…"""
    by_kind: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for kind, label, uri in concepts:
        by_kind[kind].append((label, uri))
    cells: dict[str, str] = {}
    for kind, pairs in by_kind.items():
        if kind not in KIND_COLUMNS and not CONCEPT_KIND.match(kind):
            continue  # a kind the layout cannot name (the importer reads lower-case letters, digits, '_')
        pairs.sort()
        label_column = KIND_COLUMNS.get(kind, f"concept:{kind}")
        uri_column = f"{KIND_COLUMNS[kind]}_uri" if kind in KIND_COLUMNS else f"concept:{kind}:uri"
        cells[label_column] = f" {VALUE_SEPARATOR} ".join(label for label, _ in pairs)
        # The importer pairs labels with URIs by position, so URIs go out only when every term has one;
        # otherwise the labels alone re-import to the same concepts (matched by kind and label).
        if all(uri for _, uri in pairs):
            cells[uri_column] = f" {VALUE_SEPARATOR} ".join(uri for _, uri in pairs)
    return cells


def _scalar_attributes(attributes: dict) -> dict[str, str]:
    """Attribute values a single cell can carry (text, numbers, booleans); lists and objects are left out."""
    cells = {}
    for key, value in sorted(attributes.items()):
        if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
            continue
        cells[f"attr:{key}"] = str(value)
    return cells


def _number(value) -> str:
    return "" if value is None else str(value)


def _row(specimen: Specimen, images: dict[str, str]) -> dict[str, str]:
    item = specimen.item
    row = {
        "record_id": specimen.record_id,
        "title": specimen.title,
        "weight_g": _number(specimen.weight_g),
        "diameter_mm": _number(specimen.diameter_mm),
        "axis": _number(specimen.die_axis),
        "source_url": specimen.source_url,
        **{name: getattr(specimen, name) for name in SPECIMEN_TEXT_COLUMNS},
        **images,
    }
    if item is not None:
        row.update(
            {
                "item_uri": item.uri,
                "item_reference": item.reference,
                "item_title": item.title,
                "date_from": _number(item.date_from),
                "date_to": _number(item.date_to),
                **{name: getattr(item, name) for name in ITEM_TEXT_COLUMNS},
            }
        )
        row.update(_concept_cells((c.kind, c.label, c.uri) for c in item.concepts.all()))
        row.update(_scalar_attributes(item.attributes or {}))
    else:
        # Without an item the importer keeps a row's terms and attributes on the specimen: mirror that.
        attributes = dict(specimen.attributes or {})
        terms = attributes.pop("concepts", []) or []
        row.update(_concept_cells((t.get("kind", ""), t.get("label", ""), t.get("uri", "")) for t in terms))
        row.update(_scalar_attributes(attributes))
    return row


def catalogue_csv_export(*, out: TextIO, path: str = "", include_images: bool = False) -> ExportResult:
    """Write every specimen (with its item) as CSV rows in the generic import layout; return counts.

    ``include_images`` adds ``obverse_image``/``reverse_image`` with paths relative to the media folder,
    so ``import_csv FILE --images MEDIA_ROOT`` finds them. The export holds private fields (findspot,
    provenance): it is for curators and backups, not for publishing.
    """
    specimens = list(Specimen.objects.select_related("item").prefetch_related("item__concepts").order_by("record_id"))
    images: dict[int, dict[str, str]] = defaultdict(dict)
    if include_images:
        for image in SpecimenImage.objects.filter(sort_order=0, side__in=list(IMAGE_COLUMNS)).exclude(image=""):
            images[image.specimen_id][IMAGE_COLUMNS[image.side]] = image.image.name
    rows = [_row(specimen, images.get(specimen.pk, {})) for specimen in specimens]

    concept_columns = sorted({name for row in rows for name in row if name.startswith("concept:")})
    standard = [
        name for column in CONCEPT_COLUMNS for name in (column, f"{column}_uri") if any(name in row for row in rows)
    ]
    attr_columns = sorted({name for row in rows for name in row if name.startswith("attr:")})
    header = [
        *HEAD_COLUMNS,
        *standard,
        "date_from",
        "date_to",
        *ITEM_TEXT_COLUMNS,
        *SPECIMEN_COLUMNS,
        *concept_columns,
        *attr_columns,
        *(IMAGE_COLUMNS.values() if include_images else ()),
    ]
    result = ExportResult(path=path)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = [row.get(name, "") for name in header]
        result.neutralised += sum(1 for cell in cells if is_formula_like(cell))
        writer.writerow([formula_neutralise(cell) for cell in cells])
        result.rows += 1
    return result


def catalogue_csv_export_file(*, path: Path, include_images: bool = False) -> ExportResult:
    """``catalogue_csv_export`` into a UTF-8 file (with a BOM, so spreadsheet programs read it as UTF-8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        return catalogue_csv_export(out=out, path=str(path), include_images=include_images)
