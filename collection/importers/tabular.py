"""Import a catalogue from a CSV file: the generic layout (docs/importing.md) or the ANS ``labels.csv``.

One row is one specimen, keyed by ``record_id``. The header is checked before any row is read: a
column that is neither known nor an alias stops the import with an error naming it, so a typo
never silently drops data. The file must be UTF-8 (a BOM is fine).

Cells are data, never formulas: one that a spreadsheet would run (``=…``, ``+…``, ``@…``) is stored
as the plain text it is and reported as a warning; a leading single quote that an export added to
neutralise such a cell is removed again (collection/exporters.py), so export → import is lossless.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from collection import services
from collection.importers.base import (
    ANS_NAME,
    ImportResult,
    ImportRun,
    RecordError,
    ans_source_values,
    clean_text,
    formula_restore,
    is_formula_like,
    item_title_from,
    parse_axis,
    parse_decimal,
    parse_year,
)
from collection.models import ConceptKind, Side, Source

MAX_CSV_BYTES = 200 * 2**20
VALUE_SEPARATOR = "|"  # several concepts of one kind in one cell: "Caracalla | Geta"

# Concept columns of the generic layout: column → kind; "<column>_uri" holds the Nomisma URI.
CONCEPT_COLUMNS = {
    "authority": ConceptKind.AUTHORITY.value,
    "mint": ConceptKind.MINT.value,
    "region": ConceptKind.REGION.value,
    "material": ConceptKind.MATERIAL.value,
    "denomination": ConceptKind.DENOMINATION.value,
    "object_type": ConceptKind.OBJECT_TYPE.value,
    "category": ConceptKind.CATEGORY.value,
}
ITEM_TEXT_COLUMNS = ("obverse_legend", "obverse_description", "reverse_legend", "reverse_description")
SPECIMEN_TEXT_COLUMNS = ("holding_collection", "provenance", "findspot", "image_rights")
IMAGE_COLUMNS = {"obverse_image": Side.OBVERSE, "reverse_image": Side.REVERSE}
KNOWN_COLUMNS = frozenset(
    {
        "record_id",
        "title",
        "item_uri",
        "item_reference",
        "item_title",
        *CONCEPT_COLUMNS,
        *(f"{column}_uri" for column in CONCEPT_COLUMNS),
        "date_from",
        "date_to",
        *ITEM_TEXT_COLUMNS,
        "weight_g",
        "diameter_mm",
        "axis",
        "source_url",
        *SPECIMEN_TEXT_COLUMNS,
        *IMAGE_COLUMNS,
    }
)
# Other names for known columns (the ANS labels.csv and common spellings); None: read and ignored.
ALIASES: dict[str, str | None] = {
    "type_id": "item_uri",
    "type_uri": "item_uri",
    "type_reference": "item_reference",
    "reference": "item_reference",
    "weight": "weight_g",
    "diameter": "diameter_mm",
    "die_axis": "axis",
    "nuds": None,
}
# Columns whose presence marks the ANS labels.csv layout (its metadata is ODbL, credited to the ANS).
ANS_MARKERS = {"type_id", "type_reference", "nuds"}
_CONCEPT_RE = re.compile(r"^concept:([a-z][a-z0-9_]{0,49})(:uri)?$")


@dataclass(frozen=True)
class Layout:
    """The header of one CSV file, resolved: which column feeds which field."""

    columns: dict[str, str]  # canonical name → column as written in the file
    concept_columns: dict[str, tuple[str | None, str | None]]  # kind → (label column, uri column)
    attr_columns: dict[str, str]  # attribute name → column
    is_ans: bool

    def has(self, name: str) -> bool:
        return name in self.columns


class HeaderError(Exception):
    """The CSV header cannot be used; nothing is imported."""


def layout_from_header(header: list[str]) -> Layout:
    """Resolve a header to a Layout, or raise HeaderError naming the first unusable column."""
    columns: dict[str, str] = {}
    concepts: dict[str, list[str | None]] = {}
    attrs: dict[str, str] = {}
    seen: set[str] = set()
    for position, raw in enumerate(header, start=1):
        name = raw.strip()
        lowered = name.lower()
        if not name:
            raise HeaderError(f"column {position} has no name")
        if lowered in seen:
            raise HeaderError(f"column {name!r} appears twice")
        seen.add(lowered)
        if match := _CONCEPT_RE.match(lowered):
            kind = match.group(1)
            slot = concepts.setdefault(kind, [None, None])
            slot[1 if match.group(2) else 0] = raw
            continue
        if lowered.startswith("attr:") and name[5:].strip():
            attrs[name[5:].strip()] = raw
            continue
        canonical = lowered if lowered in KNOWN_COLUMNS else ALIASES.get(lowered, "?")
        if canonical == "?":
            raise HeaderError(
                f"unknown column {name!r} (column {position}); see docs/importing.md for the known columns, "
                f"or name it 'attr:{name}' to keep it as an item attribute"
            )
        if canonical is None:
            continue
        if canonical in columns:
            raise HeaderError(f"columns {columns[canonical]!r} and {name!r} both mean {canonical!r}")
        columns[canonical] = raw
    if "record_id" not in columns:
        raise HeaderError("the required column 'record_id' is missing")
    _add_standard_concept_columns(columns, concepts)
    return Layout(
        columns=columns,
        concept_columns={kind: (label, uri) for kind, (label, uri) in concepts.items()},
        attr_columns=attrs,
        is_ans=bool(ANS_MARKERS & {name.strip().lower() for name in header}),
    )


def _add_standard_concept_columns(columns: dict[str, str], concepts: dict[str, list[str | None]]) -> None:
    """Add the standard concept columns (``mint``, ``mint_uri``…) to the ``concept:`` ones, which must not repeat."""
    standard = {CONCEPT_COLUMNS[c] for c in columns if c in CONCEPT_COLUMNS}
    for kind in concepts:
        if kind in standard:
            raise HeaderError(f"'concept:{kind}' repeats a standard column; use '{kind}' and '{kind}_uri'")
    for column, kind in CONCEPT_COLUMNS.items():
        if column in columns or f"{column}_uri" in columns:
            concepts[kind] = [columns.get(column), columns.get(f"{column}_uri")]


def read_csv_text(path: Path) -> str:
    """The file's text, or HeaderError saying where it is not UTF-8."""
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            raise HeaderError(f"file too large ({size / 2**20:.0f} MB; limit {MAX_CSV_BYTES // 2**20} MB)")
        data = path.read_bytes()
    except OSError as exc:
        raise HeaderError(f"cannot read the file ({exc.strerror or exc})") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise HeaderError(
            f"not a UTF-8 file: byte 0x{data[exc.start]:02x} on line {line} cannot be decoded; "
            "save the file as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet program)"
        ) from exc


def import_csv_file(
    path: Path,
    *,
    images_dir: Path | None = None,
    source: Source | None = None,
    progress: bool = False,
) -> ImportResult:
    """Import every row of a CSV file, one transaction per row; return what happened.

    Image paths in ``obverse_image``/``reverse_image`` are relative to ``images_dir`` (default:
    the CSV's folder). ``source`` credits every row; for the ANS labels.csv it defaults to the
    American Numismatic Society (ODbL).
    """
    path = Path(path)
    run = ImportRun(progress=progress)
    try:
        text = read_csv_text(path)
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            raise HeaderError("the file is empty")
        layout = layout_from_header(header)
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except HeaderError as exc:
        run.fail(str(path), str(exc))
        return run.finish()
    except csv.Error as exc:
        run.fail(str(path), f"malformed CSV: {exc}")
        return run.finish()

    base_dir = Path(images_dir) if images_dir else path.parent
    with run:
        _import_rows(run, layout, header, rows, base_dir=base_dir, source=source)
    return run.finish()


def _import_rows(
    run: ImportRun,
    layout: Layout,
    header: list[str],
    rows: list[tuple[int, list[str]]],
    *,
    base_dir: Path,
    source: Source | None,
) -> None:
    """Write each row in its own transaction (rows with a wrong cell count fail without one)."""
    index = {name: position for position, name in enumerate(header)}
    for line, cells in run.iterate(rows, total=len(rows), unit="row"):
        if len(cells) != len(header):
            run.fail(f"line {line}", f"has {len(cells)} cells, the header has {len(header)}")
            continue
        row = {name: cells[position] for name, position in index.items()}
        risky = [name.strip() for name, cell in row.items() if is_formula_like(cell)]
        row = {name: formula_restore(cell) for name, cell in row.items()}
        record_id = clean_text(row[layout.columns["record_id"]])
        if not record_id:
            run.fail(f"line {line}", "record_id is empty")
            continue
        if risky:
            run.warn(
                record_id,
                f"line {line}: {', '.join(risky)} would run as a spreadsheet formula; stored as plain text",
            )
        run.record(
            record_id, lambda row=row, record_id=record_id: _write_row(run, layout, row, record_id, base_dir, source)
        )


def _write_row(
    run: ImportRun, layout: Layout, row: dict[str, str], record_id: str, base_dir: Path, source: Source | None
) -> bool:
    """Write one row (inside its transaction); return whether its specimen was new."""

    def value(name: str) -> str:
        column = layout.columns.get(name)
        return clean_text(row[column]) if column else ""

    if source is None and layout.is_ans:
        source = run.source(name=ANS_NAME, **ans_source_values())

    concepts = _row_concepts(run, layout, row)
    title = value("title")
    fields = {
        "date_from": parse_year(value("date_from"), name="date_from"),
        "date_to": parse_year(value("date_to"), name="date_to"),
        **{name: value(name) for name in ITEM_TEXT_COLUMNS},
    }
    attributes = {name: clean_text(row[column]) for name, column in layout.attr_columns.items() if row[column].strip()}
    item_uri, item_reference = value("item_uri"), value("item_reference")
    item = None
    if item_uri or item_reference:
        item, _ = services.item_upsert(
            uri=item_uri,
            reference=item_reference,
            title=value("item_title") or item_title_from(title, record_id) or item_reference,
            fields=fields,
            concepts=concepts,
            attributes=attributes,
            source=source,
        )

    specimen_fields: dict = {
        "title": title,
        "weight_g": parse_decimal(value("weight_g"), name="weight_g", places=3, maximum=Decimal(10**5)),
        "diameter_mm": parse_decimal(value("diameter_mm"), name="diameter_mm", places=2, maximum=Decimal(10**5)),
        "die_axis": parse_axis(value("axis")),
        **{name: value(name) for name in SPECIMEN_TEXT_COLUMNS if layout.has(name)},
    }
    if layout.has("source_url"):
        specimen_fields["source_url"] = value("source_url")
    if layout.has("item_uri") or layout.has("item_reference"):
        specimen_fields["item"] = item
    if source is not None:
        specimen_fields["source"] = source
    if item is None and (attributes or concepts):
        # No item to carry them: keep the row's attributes and terms on the specimen, not lost.
        specimen_fields["attributes"] = {
            **attributes,
            "concepts": [{"kind": c.kind, "label": c.label, "uri": c.uri} for c in concepts],
        }
    specimen, created = services.specimen_upsert(record_id=record_id, fields=specimen_fields)

    images = run.existing_images(specimen, created=created)
    for column, side in IMAGE_COLUMNS.items():
        name = value(column)
        if not name:
            continue
        image_path = base_dir / name
        if not image_path.is_file():
            raise RecordError(f"missing image: {column} {name!r} not found in {base_dir}")
        run.attach_image(specimen=specimen, side=side, path=image_path, existing=images.get(side))
    return created


def _row_concepts(run: ImportRun, layout: Layout, row: dict[str, str]) -> list:
    """The row's vocabulary terms, one per label (or URI) of each concept column, found or created."""
    concepts = []
    for kind, (label_column, uri_column) in layout.concept_columns.items():
        labels = _split(row[label_column]) if label_column else []
        uris = _split(row[uri_column]) if uri_column else []
        if labels and uris and len(labels) != len(uris):
            raise RecordError(f"{kind}: {len(labels)} labels but {len(uris)} URIs (separate several with '|')")
        for n in range(max(len(labels), len(uris))):
            concepts.append(run.concept(kind, labels[n] if labels else "", uris[n] if uris else ""))
    return concepts


def _split(cell: str) -> list[str]:
    return [part for part in (clean_text(p) for p in cell.split(VALUE_SEPARATOR)) if part]
