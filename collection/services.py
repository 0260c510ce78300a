"""Writing the catalogue: sources, concepts, items, specimens and their images.

Importers, the demo loader and (later) editing pages call these functions; nothing else writes
catalogue rows. Each service validates before it saves and runs in a transaction. They nest inside
a caller's transaction without savepoints (``savepoint=False``): an importer wraps each record in its
own ``atomic()`` block, so a failure anywhere in a record rolls back that whole record and nothing else.
Validation happens before the first write, outside the atomic block, so a caller that catches a
ValidationError or ImageFileError inside its own transaction can carry on.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import secrets
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Q
from django.utils.text import get_valid_filename
from PIL import Image, ImageOps, UnidentifiedImageError

from collection.linked_data import tiles as iiif_tiles
from collection.models import Concept, ImageEmbedding, Item, Side, Source, Specimen, SpecimenImage
from collection.search import item_refresh_search

# Catalogue photos are studio shots; anything bigger than this is a mistake or a decompression bomb.
MAX_IMAGE_BYTES = 60 * 2**20
# Formats a catalogue photo may arrive in; keeps exotic decoders (EPS → Ghostscript…) out of reach.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP")
THUMBNAIL_SIZE = 240
JPEG_QUALITY = 92

_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
_ITEM_FIELDS = {
    "date_from",
    "date_to",
    "obverse_legend",
    "obverse_description",
    "reverse_legend",
    "reverse_description",
    "description",
}
_SPECIMEN_FIELDS = {
    "item",
    "title",
    "weight_g",
    "diameter_mm",
    "die_axis",
    "holding_collection",
    "provenance",
    "findspot",
    "image_rights",
    "source",
    "source_url",
    "attributes",
}


_LOOK_UP = object()  # "not given" marker for specimen_image_attach(existing=...)


class ImageFileError(ValueError):
    """An image file that cannot be used (unreadable, not an image, too large); the message says why."""


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == {} or value == []


def validation_message(error: ValidationError) -> str:
    """A one-line text for a model ValidationError: 'uri: Enter a valid URL.; title: …'."""
    if hasattr(error, "message_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())
    return " ".join(error.messages)


# --- Sources and concepts ------------------------------------------------------------------------


def source_get_or_create(
    *, name: str, url: str = "", licence: str = "", licence_url: str = "", credit: str = ""
) -> Source:
    """The Source called ``name``, created if needed; blank fields of an existing one are filled, never overwritten."""
    name = " ".join(name.split())[:200]
    if not name:
        raise ValueError("A source needs a name.")
    values = {"url": url, "licence": licence, "licence_url": licence_url, "credit": credit}
    # One row per call: a single save is atomic on its own.
    source = Source.objects.filter(name=name).first()
    if source is None:
        source = Source(name=name, **values)
        source.full_clean(validate_unique=False)
        source.save()
        return source
    changed = [field for field, value in values.items() if value and not getattr(source, field)]
    if changed:
        for field in changed:
            setattr(source, field, values[field])
        source.full_clean(validate_unique=False)
        source.save(update_fields=changed)
    return source


def _concept_slug(label: str) -> str:
    slug = Concept.make_slug(label)
    if slug == "unnamed" and label.strip().lower() != "unnamed":
        # A label with no ASCII letters (Greek, Arabic…) would slugify to "unnamed" and collide with
        # every other such label; a stable hash keeps them apart and URL-safe.
        slug = "c-" + hashlib.sha1(label.encode()).hexdigest()[:12]
    return slug


def concept_get_or_create(*, kind: str, label: str, uri: str = "") -> Concept:
    """The concept of this kind with this URI, else with this label's slug; created if neither exists.

    A concept found by label that has no URI yet adopts the given one. Two different URIs with the
    same label (two places called Antioch) are different concepts: the second gets a numbered slug.
    """
    if not _KIND_RE.match(kind):
        raise ValueError(f"Concept kind {kind!r} must be lower-case letters, digits and underscores.")
    label = " ".join((label or "").split())[:255]
    uri = (uri or "").strip()
    if not label and not uri:
        raise ValueError(f"A {kind} concept needs a label or a URI.")
    if not label:
        label = uri.rstrip("/").rsplit("/", 1)[-1].replace("_", " ")[:255] or uri[:255]
    # One row per call: a single save is atomic on its own.
    if uri:
        concept = Concept.objects.filter(kind=kind, uri=uri).first()
        if concept is not None:
            return concept
    slug = _concept_slug(label)
    concept = Concept.objects.filter(kind=kind, slug=slug).first()
    if concept is not None:
        if not uri:
            return concept
        if not concept.uri:
            concept.uri = uri
            concept.full_clean(validate_unique=False)
            concept.save(update_fields=["uri"])
            return concept
        base, n = slug[:245], 2
        while Concept.objects.filter(kind=kind, slug=f"{base}-{n}").exists():
            n += 1
        slug = f"{base}-{n}"
    concept = Concept(kind=kind, label=label, slug=slug, uri=uri)
    concept.full_clean(validate_unique=False)
    concept.save()
    return concept


# --- Items and specimens -------------------------------------------------------------------------


def item_upsert(
    *,
    uri: str = "",
    reference: str = "",
    title: str = "",
    fields: Mapping[str, Any] | None = None,
    concepts: Sequence[Concept] = (),
    attributes: Mapping[str, Any] | None = None,
    source: Source | None = None,
    create: bool = True,
) -> tuple[Item | None, bool]:
    """Find the catalogue item by URI (else by reference) and create it if allowed; return (item, created).

    An existing item is never overwritten: imports only fill its blank fields, add attribute keys
    it lacks and add concepts of kinds it has none of, so curators' edits and the first record's
    type data survive later specimens of the same type. The item's search columns are refreshed
    whenever something changed.
    """
    uri, reference, title = (uri or "").strip(), " ".join((reference or "").split()), " ".join((title or "").split())
    fields = dict(fields or {})
    unknown = set(fields) - _ITEM_FIELDS
    if unknown:
        raise ValueError(f"item_upsert does not set {sorted(unknown)}")
    # One query for both ways of finding the item: by URI first, else by reference (among items
    # without a URI when a URI is given: one with another URI is a different type).
    lookup = Q(uri=uri) if uri else Q(pk__in=[])
    if reference:
        lookup |= Q(reference=reference, uri="") if uri else Q(reference=reference)
    found = sorted(Item.objects.filter(lookup), key=lambda row: (not (uri and row.uri == uri), row.pk))
    item = found[0] if found else None
    created = item is None
    if created:
        if not create or not (uri or reference):
            return None, False
        item = Item(
            uri=uri,
            reference=reference[:255],
            title=(title or reference or uri)[:500],
            source=source,
            attributes=dict(attributes or {}),
            **{key: value for key, value in fields.items() if not _blank(value)},
        )
        changed = True
    else:
        updates = {"uri": uri, "reference": reference[:255], "title": title[:500], "source": source, **fields}
        changed = _item_fill_blanks(item, updates, attributes or {})
    if changed:
        _clean(item, exclude=["search_vector", "search_text", "source"])
    with transaction.atomic(savepoint=False):
        if changed:
            item.save()
        if concepts:
            have = set() if created else set(item.concepts.values_list("kind", flat=True))
            new = [concept for concept in concepts if concept.kind not in have]
            if new:
                # One INSERT (the related manager's add() first reads the existing links).
                Item.concepts.through.objects.bulk_create(
                    [Item.concepts.through(item_id=item.pk, concept_id=concept.pk) for concept in new],
                    ignore_conflicts=True,
                )
                changed = True
        if changed:
            item_refresh_search(item_ids=[item.pk])
    return item, created


def _item_fill_blanks(item: Item, updates: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    """Fill the item's blank fields and add the attribute keys it lacks; return whether anything changed."""
    changed = False
    for field, value in updates.items():
        # source_id, not source: reading the relation would cost a query per call.
        current = getattr(item, "source_id" if field == "source" else field)
        if not _blank(value) and _blank(current):
            setattr(item, field, value)
            changed = True
    for key, value in attributes.items():
        if key not in item.attributes and not _blank(value):
            item.attributes[key] = value
            changed = True
    return changed


def _clean(instance, *, exclude: list[str]) -> None:
    # Field validation only: uniqueness is enforced by the database and checked by the lookups above.
    instance.clean_fields(exclude=exclude)


def specimen_upsert(*, record_id: str, fields: Mapping[str, Any]) -> tuple[Specimen, bool]:
    """Create or update the specimen with this record id; return (specimen, created).

    Only the given fields are written (a source that lacks a column does not blank it out);
    ``attributes`` are merged key by key. ``is_public`` is left alone: publishing is a curator's call.
    """
    record_id = (record_id or "").strip()
    if not record_id:
        raise ValueError("A specimen needs a record id.")
    unknown = set(fields) - _SPECIMEN_FIELDS
    if unknown:
        raise ValueError(f"specimen_upsert does not set {sorted(unknown)}")
    # One row per call (record_id is unique, so a concurrent twin fails instead of duplicating).
    specimen = Specimen.objects.filter(record_id=record_id).first()
    created = specimen is None
    if created:
        specimen = Specimen(record_id=record_id)
    changed = created
    for field, value in fields.items():
        if field == "attributes":
            value = {**(specimen.attributes or {}), **value}
        elif field in ("item", "source"):
            if getattr(specimen, f"{field}_id") != (value.pk if value is not None else None):
                setattr(specimen, field, value)
                changed = True
            continue
        elif isinstance(value, str):
            value = value[: Specimen._meta.get_field(field).max_length or None]
        if getattr(specimen, field) != value:
            setattr(specimen, field, value)
            changed = True
    if changed:  # an unchanged re-import writes nothing
        _clean(specimen, exclude=["item", "source"])
        specimen.save()
    return specimen, created


# --- Images --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedImage:
    """A verified catalogue photo, re-encoded without metadata, its thumbnail and its IIIF tiles."""

    content: bytes
    extension: str
    width: int
    height: int
    thumbnail: bytes
    tiles: dict[str, bytes]


def image_prepare(*, data: bytes) -> PreparedImage:
    """Verify that ``data`` decodes as a photo, and re-encode it upright without EXIF/GPS, plus a thumbnail
    and the static IIIF tiles (``collection.linked_data.tiles``) cut from the same decoded pixels.

    JPEG stays JPEG; other formats become PNG (lossless, alpha kept). Raises ImageFileError.
    """
    if not data:
        raise ImageFileError("the file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; for an import it is an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as probe:
                probe.verify()
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as opened:
                source_format = opened.format
                width, height = opened.size
                limit = Image.MAX_IMAGE_PIXELS
                if limit and width * height > limit:
                    raise ImageFileError(f"{width}×{height} pixels is more than the limit of {limit} pixels")
                opened.seek(0)
                opened.load()
                icc = opened.info.get("icc_profile")
                image = ImageOps.exif_transpose(opened) or opened
                image.load()
    except ImageFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageFileError(f"too many pixels ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageFileError("not an image Pillow can read (JPEG, PNG, WebP, TIFF, GIF or BMP)") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ImageFileError(f"damaged image ({exc})") from exc

    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        image = image.convert("RGBA")
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    clean = image.copy()
    clean.info = {}  # nothing from the original (EXIF, GPS, XMP, comments) reaches the encoder
    buffer = io.BytesIO()
    if source_format in ("JPEG", "MPO") and not has_alpha:
        clean.save(buffer, format="JPEG", quality=JPEG_QUALITY, icc_profile=icc)
        extension = ".jpg"
    else:
        clean.save(buffer, format="PNG", icc_profile=icc)
        extension = ".png"
    return PreparedImage(
        content=buffer.getvalue(),
        extension=extension,
        width=clean.width,
        height=clean.height,
        thumbnail=_thumbnail_jpeg(clean),
        # A JPEG photo is its own full-size IIIF image; only other formats need a JPEG copy.
        tiles=iiif_tiles.tiles_make(clean, skip_full=extension == ".jpg"),
    )


def _thumbnail_jpeg(image: Image.Image) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    if thumb.mode == "RGBA":
        flat = Image.new("RGB", thumb.size, (255, 255, 255))
        flat.paste(thumb, mask=thumb.getchannel("A"))
        thumb = flat
    elif thumb.mode != "RGB":
        thumb = thumb.convert("RGB")
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _read_image_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageFileError(f"{size / 2**20:.0f} MB is larger than the limit of {MAX_IMAGE_BYTES // 2**20} MB")
        return path.read_bytes()
    except OSError as exc:
        raise ImageFileError(f"cannot read the file ({exc.strerror or exc})") from exc


def _remote_url_update(image: SpecimenImage, remote_url: str | None) -> None:
    """Record the source's own URL of an unchanged image when it is new."""
    if remote_url and image.remote_url != remote_url:
        image.remote_url = remote_url
        _clean(image, exclude=["specimen"])
        image.save(update_fields=["remote_url"])


def specimen_image_attach(
    *,
    specimen: Specimen,
    side: str,
    path: Path | None = None,
    remote_url: str | None = None,
    sort_order: int = 0,
    existing: SpecimenImage | None | object = _LOOK_UP,
) -> tuple[SpecimenImage, str]:
    """Attach a photo (a local file, and/or the source's own URL) to one side of a specimen.

    Returns (image, outcome) where outcome is ``added``, ``replaced``, ``unchanged`` or ``linked``
    (a remote URL only; remote files are never downloaded). The same side is replaced only when the
    file's sha256 changed. A replaced photo loses its cut-out and embeddings (they described the old
    pixels); old files are deleted after the transaction commits. Raises ImageFileError.
    A caller that already loaded this side's row (or knows there is none) passes it as ``existing``.
    """
    if side not in Side.values:
        raise ValueError(f"side must be one of {Side.values}, not {side!r}")
    if path is None and remote_url is None:
        raise ValueError("specimen_image_attach needs a path or a remote_url")
    if existing is _LOOK_UP:
        existing = SpecimenImage.objects.filter(specimen=specimen, side=side, sort_order=sort_order).first()
    if path is None:
        if existing is None:
            row = SpecimenImage(specimen=specimen, side=side, sort_order=sort_order, remote_url=remote_url)
            _clean(row, exclude=["specimen"])
            row.save()
            return row, "linked"
        _remote_url_update(existing, remote_url)
        return existing, "unchanged"

    data = _read_image_file(path)
    sha256 = hashlib.sha256(data).hexdigest()
    if existing is not None and existing.sha256 == sha256 and existing.image:
        _remote_url_update(existing, remote_url)
        return existing, "unchanged"

    prepared = image_prepare(data=data)  # raises before anything is written
    had_file = existing is not None and bool(existing.image)
    row = existing or SpecimenImage(specimen=specimen, side=side, sort_order=sort_order)
    old_files = [f.name for f in (row.image, row.thumbnail, row.cutout) if f] if existing else []
    old_files += specimen_image_tile_names(image=row) if existing else []
    row.sha256 = sha256
    row.width, row.height = prepared.width, prepared.height
    if remote_url is not None:
        row.remote_url = remote_url
    row.cutout = ""  # the ML pipeline makes a new one from the new pixels
    _clean(row, exclude=["specimen", "image", "thumbnail"])
    stem = get_valid_filename(f"{specimen.record_id}.{side}")
    written: list[str] = []
    try:
        written.append(_store_file(row.image, f"{stem}{prepared.extension}", prepared.content))
        written.append(_store_file(row.thumbnail, f"{stem}.jpg", prepared.thumbnail))
        row.tiles = _store_tiles(
            sha256=sha256, files=prepared.tiles, written=written, full_from_image=prepared.extension == ".jpg"
        )
        with transaction.atomic(savepoint=False):
            row.save()
            if existing is not None:
                ImageEmbedding.objects.filter(image=row).delete()
    except Exception:
        _delete_files(written)
        raise
    if old_files:
        transaction.on_commit(lambda: _delete_files([name for name in old_files if name not in written]))
    return row, "replaced" if had_file else "added"


def _store_file(field_file, filename: str, content: bytes) -> str:
    """``field_file.save(filename, save=False)``; a file half-written when the disk filled up is removed.

    The storage writes in place and leaves a partial file when a write fails, under the free name it
    chose; that name is worked out first the same way, so it can be deleted on failure.
    """
    storage = field_file.storage
    target = storage.get_available_name(
        field_file.field.generate_filename(field_file.instance, filename), max_length=field_file.field.max_length
    )
    try:
        field_file.save(filename, ContentFile(content), save=False)
    except OSError:
        with contextlib.suppress(OSError):
            storage.delete(target)
        raise
    return field_file.name


def _store_tiles(*, sha256: str, files: Mapping[str, bytes], written: list[str], full_from_image: bool) -> dict:
    """Write an image's tiles into a new folder of the media storage; return the ``tiles`` field's value.

    The folder is new for every set of pixels (a random part after the hash), so a replaced photo's
    tiles never mix with its successor's and can be deleted after the commit. Names written are
    appended to ``written`` as they are stored, for the caller's clean-up on failure.
    """
    from django.core.files.storage import default_storage

    folder = f"iiif/{sha256[:2]}/{sha256[:16]}-{secrets.token_hex(4)}"
    for name, content in files.items():
        stored = default_storage.save(f"{folder}/{name}", ContentFile(content))
        written.append(stored)
        if stored != f"{folder}/{name}":  # the storage renamed it: the folder is not ours alone
            raise OSError(f"tile folder {folder} already had {name}")
    return {"folder": folder, "tile": iiif_tiles.TILE_SIZE, "full_from_image": full_from_image}


def specimen_image_tile_names(*, image: SpecimenImage) -> list[str]:
    """The storage names of an image's IIIF tiles (none when it has no tiles)."""
    folder = (image.tiles or {}).get("folder")
    if not folder or not image.width or not image.height:
        return []
    skip_full = (image.tiles or {}).get("full_from_image", False)
    plan = iiif_tiles.tile_plan(image.width, image.height, image.tiles.get("tile", iiif_tiles.TILE_SIZE))
    return [f"{folder}/{f.name}" for f in plan if not (skip_full and f.region == "full" and f.size == "max")]


def specimen_image_tiles_make(*, image_id: int) -> bool:
    """Cut the IIIF tiles of a stored catalogue image that has none; return whether it made them.

    Images stored before tiles existed, and images that were not stored through
    ``specimen_image_attach`` (approved identifications), get their tiles here
    (``manage.py iiif_tiles``). Idempotent: an image with tiles, or without a file, is left alone.
    Raises ImageFileError for a file that cannot be decoded.
    """
    image = SpecimenImage.objects.filter(pk=image_id).first()
    if image is None or not image.image or (image.tiles or {}).get("folder"):
        return False
    with image.image.open("rb") as fh:
        data = fh.read()
    prepared = image_prepare(data=data)
    # The stored file serves as the full-size image only when it is that JPEG, at that size.
    full_from_image = prepared.extension == ".jpg" and (image.width, image.height) == (prepared.width, prepared.height)
    files = prepared.tiles
    if prepared.extension == ".jpg" and not full_from_image:
        with Image.open(io.BytesIO(prepared.content)) as decoded:
            files = iiif_tiles.tiles_make(decoded)
    written: list[str] = []
    try:
        tiles = _store_tiles(
            sha256=image.sha256 or hashlib.sha256(data).hexdigest(),
            files=files,
            written=written,
            full_from_image=full_from_image,
        )
        updated = SpecimenImage.objects.filter(pk=image.pk, tiles=image.tiles).update(
            tiles=tiles, width=prepared.width, height=prepared.height
        )
    except Exception:
        _delete_files(written)
        raise
    if not updated:  # another process made them first: keep theirs
        _delete_files(written)
    return bool(updated)


def specimen_image_files_delete(*, names: Sequence[str]) -> None:
    """Delete stored media files by name (an importer's clean-up after a record was rolled back)."""
    _delete_files(names)


def _delete_files(names: Sequence[str]) -> None:
    from django.core.files.storage import default_storage

    for name in names:
        if name:
            with contextlib.suppress(OSError):  # a file already gone is what we wanted
                default_storage.delete(name)
