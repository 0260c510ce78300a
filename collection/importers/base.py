"""What the catalogue importers share: the result summary, one transaction per record, value parsing.

An importer turns each source record (a NUDS file, a CSV row) into calls to ``collection.services``
inside its own ``transaction.atomic()`` block, through ``ImportRun.record``: a record that fails
for any reason is rolled back entirely, reported with a readable reason, and the run goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from tqdm import tqdm

from collection import services
from collection.models import Concept, Source, Specimen, SpecimenImage

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The ANS's terms of use for its metadata (../shared/data/README.md): credit wherever it is shown.
ANS_NAME = "American Numismatic Society"
ODBL_URL = "http://opendatacommons.org/licenses/odbl/"
KNOWN_LICENCES = {
    "opendatacommons.org/licenses/odbl": ("ODbL", "https://opendatacommons.org/licenses/odbl/"),
    "creativecommons.org/publicdomain/zero": ("CC0-1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "creativecommons.org/licenses/by/4.0": ("CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/"),
}


class RecordError(Exception):
    """One record cannot be imported; the message tells the person running the import why."""


@dataclass
class ImportResult:
    """What an import did: counts, the records that failed (with reasons) and the time it took.

    ``warnings`` are records imported as they are but worth a look (cells a spreadsheet would run
    as formulas). ``image_ids`` lists catalogue images added or replaced, so a caller can queue them
    for indexing.
    """

    created: int = 0
    updated: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    images_added: int = 0
    images_replaced: int = 0
    images_unchanged: int = 0
    images_linked: int = 0
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.created} created, {self.updated} updated, {len(self.failed)} failed; "
            f"images: {self.images_added} added, {self.images_replaced} replaced, "
            f"{self.images_unchanged} unchanged, {self.images_linked} linked (remote); {self.elapsed_s:.1f} s"
        )

    def summary(self, *, max_failures: int = 50) -> str:
        """A readable report: the counts, notes, and one line per failed record."""
        lines = [f"Import finished: {self}"]
        lines += [f"Note: {note}" for note in self.notes]
        for title, entries in (("Failed records:", self.failed), ("Warnings:", self.warnings)):
            if entries:
                lines.append(title)
                lines += [f"  {key}: {reason}" for key, reason in entries[:max_failures]]
                if len(entries) > max_failures:
                    lines.append(f"  … and {len(entries) - max_failures} more")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = [list(pair) for pair in self.failed]
        data["warnings"] = [list(pair) for pair in self.warnings]
        del data["image_ids"]
        return data

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2, ensure_ascii=False))


class ImportRun:
    """One import: caches of concepts and sources, the per-record transaction and the result.

    Caches hold rows written in earlier records' transactions; when a record fails they are
    cleared, since rows it created were rolled back with it.
    """

    def __init__(self, *, progress: bool = False) -> None:
        self.result = ImportResult()
        self.progress = progress
        self._started = time.monotonic()
        self._concepts: dict[tuple[str, str, str], Concept] = {}
        self._sources: dict[str, Source] = {}
        self._written_files: list[str] = []

    # --- the loop ---------------------------------------------------------------------------

    def iterate(self, units: Iterable[T], *, total: int | None = None, unit: str = "record") -> Iterator[T]:
        """Iterate with a tqdm progress bar on stderr when progress is on."""
        return iter(tqdm(units, total=total, unit=unit, file=sys.stderr, disable=not self.progress, dynamic_ncols=True))

    def record(self, key: str, handler: Callable[[], bool]) -> None:
        """Run ``handler`` (which returns True when it created its specimen) in one transaction.

        Any exception rolls the record back and is reported as a failure; the run continues.
        """
        self._written_files = []
        try:
            with transaction.atomic():
                created = handler()
        except RecordError as exc:
            self._fail(key, str(exc))
        except services.ImageFileError as exc:
            self._fail(key, f"unreadable image: {exc}")
        except ValidationError as exc:
            self._fail(key, f"invalid value: {services.validation_message(exc)}")
        except (ValueError, DatabaseError) as exc:
            self._fail(key, f"{type(exc).__name__}: {exc}".strip())
        except OSError as exc:  # the media folder is full or unwritable: the record is rolled back, no files kept
            self._fail(key, f"cannot store the image ({exc.strerror or exc}); check the media folder's free space")
        except Exception as exc:  # one record must never stop the import; keep the traceback in the log
            logger.exception("unexpected error importing %s", key)
            self._fail(key, f"unexpected error ({type(exc).__name__}: {exc})")
        else:
            if created:
                self.result.created += 1
            else:
                self.result.updated += 1

    def warn(self, key: str, reason: str) -> None:
        """Report something worth a look about a record that is imported all the same."""
        self.result.warnings.append((key, reason))

    def fail(self, key: str, reason: str) -> None:
        """Report a unit that failed before any of it was written (a file that cannot be parsed)."""
        self.result.failed.append((key, reason))

    def _fail(self, key: str, reason: str) -> None:
        self.result.failed.append((key, reason))
        # Rows and files of the rolled-back record are gone or orphaned: forget and remove them.
        self._concepts.clear()
        self._sources.clear()
        services.specimen_image_files_delete(names=self._written_files)
        self._written_files = []

    def __enter__(self) -> ImportRun:
        # Each record still commits on its own, but without waiting for the WAL flush: a server crash
        # could lose the last moments of an import, which re-running it (idempotent) restores. This is
        # PostgreSQL's documented trade-off for bulk loads; it applies to this session only.
        self._set_synchronous_commit("OFF")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._set_synchronous_commit("DEFAULT")

    @staticmethod
    def _set_synchronous_commit(value: str) -> None:
        if connection.vendor == "postgresql" and not connection.needs_rollback:
            with connection.cursor() as cursor:
                cursor.execute(f"SET synchronous_commit TO {value}")

    def finish(self) -> ImportResult:
        self.result.elapsed_s = round(time.monotonic() - self._started, 3)
        return self.result

    # --- cached services --------------------------------------------------------------------

    def concept(self, kind: str, label: str, uri: str = "") -> Concept:
        label, uri = " ".join((label or "").split()), (uri or "").strip()
        key = (kind, Concept.make_slug(label) if not uri else "", uri)
        concept = self._concepts.get(key)
        if concept is None:
            try:
                concept = services.concept_get_or_create(kind=kind, label=label, uri=uri)
            except ValidationError as exc:
                raise RecordError(f"invalid {kind} {label or uri!r}: {services.validation_message(exc)}") from exc
            self._concepts[key] = concept
        return concept

    def source(self, *, name: str, **values: str) -> Source:
        source = self._sources.get(name)
        if source is None:
            source = services.source_get_or_create(name=name, **values)
            self._sources[name] = source
        return source

    @staticmethod
    def existing_images(specimen: Specimen, *, created: bool) -> dict[str, SpecimenImage]:
        """The specimen's current images by side, in one query (none to look for when it is new)."""
        if created:
            return {}
        return {image.side: image for image in SpecimenImage.objects.filter(specimen=specimen, sort_order=0)}

    def attach_image(self, **kwargs: Any) -> None:
        image, outcome = services.specimen_image_attach(**kwargs)
        if outcome in ("added", "replaced"):
            self._written_files += [
                image.image.name,
                image.thumbnail.name,
                *services.specimen_image_tile_names(image=image),
            ]
        setattr(self.result, f"images_{outcome}", getattr(self.result, f"images_{outcome}") + 1)
        if outcome in ("added", "replaced"):
            self.result.image_ids.append(image.pk)


# --- Parsing helpers -------------------------------------------------------------------------------


def clean_text(value: str | None) -> str:
    """Whitespace collapsed to single spaces."""
    return " ".join((value or "").split())


def parse_decimal(value: str | None, *, name: str, places: int, maximum: Decimal) -> Decimal | None:
    """A positive decimal ('12.26', '12,26'), rounded to ``places``; '' is None; anything else a RecordError."""
    text = clean_text(value)
    if not text:
        return None
    try:
        number = Decimal(text.replace(",", "."))
    except InvalidOperation:
        raise RecordError(f"bad number in {name}: {text!r} is not a number") from None
    if not number.is_finite() or number < 0 or number >= maximum:
        raise RecordError(f"bad number in {name}: {text!r} is out of range (0 to {maximum})")
    return number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


_ERA = re.compile(r"^(?:(AD|CE)\s*)?(-?\d+)\s*(BCE|BC|CE|AD)?$", re.IGNORECASE)


def parse_year(value: str | None, *, name: str) -> int | None:
    """A year as an integer: '-0038', '38 BC' and '38 BCE' are -38; 'AD 14', '14 CE' and '14' are 14; '' is None."""
    text = clean_text(value)
    if not text:
        return None
    match = _ERA.match(text)
    try:
        if match is None:
            raise ValueError(text)
        year = int(match.group(2))
        if (match.group(3) or "").upper() in {"BC", "BCE"}:
            year = -abs(year)
    except ValueError:
        raise RecordError(f"bad number in {name}: {text!r} is not a year (use -44 for 44 BC)") from None
    if not -5000 <= year <= 3000:
        raise RecordError(f"bad number in {name}: {text!r} is not a plausible year")
    return year


def parse_axis(value: str | None) -> int | None:
    """Die axis in clock hours 1–12 (0 is 12 o'clock); '' is None."""
    text = clean_text(value).rstrip("h").strip()
    if not text:
        return None
    try:
        hours = int(text)
    except ValueError:
        raise RecordError(f"bad number in axis: {value!r} is not clock hours (1–12)") from None
    if not 0 <= hours <= 12:
        raise RecordError(f"bad number in axis: {value!r} is not clock hours (1–12)")
    return hours or 12


# Cells a spreadsheet program runs as a formula when they start with one of these (OWASP "CSV
# injection"): '=cmd|' /C calc'!A0', '=HYPERLINK(…)', '@SUM(…)'. Tab and carriage return count too,
# since some programs strip them first.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?\d+(?:[.,]\d+)?$")


def is_formula_like(cell: str) -> bool:
    """Whether a spreadsheet would read the cell as a formula (plain numbers such as '-44' are not)."""
    return cell.startswith(FORMULA_TRIGGERS) and not _PLAIN_NUMBER.match(cell.strip())


def formula_neutralise(cell: str) -> str:
    """The cell made inert for spreadsheets: a formula-like value gets a leading single quote (OWASP).

    Spreadsheets show such a cell as text without the quote; ``formula_restore`` removes it on import.
    """
    return f"'{cell}" if is_formula_like(cell) else cell


def formula_restore(cell: str) -> str:
    """Undo ``formula_neutralise``: "'=x" is "=x" (a spreadsheet, too, treats the quote as a text marker)."""
    return cell[1:] if cell.startswith("'") and is_formula_like(cell[1:]) else cell


def item_title_from(title: str, record_id: str) -> str:
    """The record title without its trailing record id: 'Bronze As of Tiberius, Rome, 34–35. 0000.1' → '… 34–35'."""
    title = clean_text(title)
    if record_id:
        title = re.sub(rf"[\s.,;:]*{re.escape(record_id)}\s*$", "", title)
    return title.rstrip(" .,;:")


def licence_for(href: str, text: str) -> tuple[str, str]:
    """A short licence name and URL for a licence link ('…/odbl/' → 'ODbL')."""
    for fragment, (name, url) in KNOWN_LICENCES.items():
        if fragment in (href or ""):
            return name, url
    return clean_text(text)[:200], href or ""


def ans_source_values() -> dict[str, str]:
    """The Source fields for American Numismatic Society metadata (ODbL, with its credit line)."""
    return {
        "licence": "ODbL",
        "licence_url": "https://opendatacommons.org/licenses/odbl/",
        "credit": f"Metadata © {ANS_NAME}, ODbL",
        "url": "https://numismatics.org/",
    }


class ImageIndex:
    """Finds ``<record_id>.obv.*`` / ``<record_id>.rev.*`` in a folder, listing the folder once."""

    SIDES = {"obv": "obverse", "rev": "reverse"}
    EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp"}

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.exists = folder.is_dir()
        self._files: dict[tuple[str, str], Path] = {}
        if self.exists:
            # Plain strings, sorted once: thousands of Path objects would cost more than the import's XML.
            for name in sorted(entry.name for entry in os.scandir(folder) if entry.is_file()):
                stem, dot, suffix = name.rpartition(".")
                if not dot or f".{suffix.lower()}" not in self.EXTENSIONS or "." not in stem:
                    continue
                record_id, side_code = stem.rsplit(".", 1)
                side = self.SIDES.get(side_code.lower())
                if side:
                    self._files.setdefault((record_id, side), folder / name)

    def find(self, record_id: str, side: str) -> Path | None:
        return self._files.get((record_id, side))


# What to start for the images an import added or replaced, called as ``hook(image_ids=[...])``. The
# identification app registers its search indexing here (``identification.apps``): the catalogue
# cannot import it.
IMAGES_IMPORTED_HOOKS: list[Callable[..., None]] = []


def images_imported_hook_register(hook: Callable[..., None]) -> None:
    """Call ``hook(image_ids=[...])`` after every import that added or replaced images (registered once)."""
    if hook not in IMAGES_IMPORTED_HOOKS:
        IMAGES_IMPORTED_HOOKS.append(hook)


def index_imported_images(result: ImportResult, *, stdout=None) -> int:
    """Queue search indexing (cut-out + embedding) of the images an import added or replaced.

    Runs in the background worker, through the registered hooks; ``OBVERSE_INDEX_ON_IMPORT=0``
    turns it off (then run ``manage.py reindex`` later). Returns how many images were queued.
    """
    from django.conf import settings

    ids = list(result.image_ids)
    if not ids or not settings.OBVERSE_INDEX_ON_IMPORT or not IMAGES_IMPORTED_HOOKS:
        return 0
    for hook in IMAGES_IMPORTED_HOOKS:
        hook(image_ids=ids)
    if stdout is not None:
        stdout.write(f"{len(ids)} images queued for search indexing (the worker embeds them).")
    return len(ids)
