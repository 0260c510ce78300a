"""Import NUDS XML records (the Numishare format of the ANS and other coin cabinets).

One file is one physical specimen (``recordType="physical"``). Its ``typeDesc`` describes the coin
type, which becomes (or matches) the catalogue Item named by the ``refDesc/reference`` link; its
Nomisma links become Concepts. Files are parsed with defusedxml: no DTDs, no entity expansion,
no external entities; and within bounds (file size, nesting depth, element count, text length) that
real records never approach, so a hostile file fails with a reason instead of eating memory.
Images are taken from a folder by name (``<record_id>.obv.jpg``…); the record's own image URLs
(``mets:fileGrp``) are kept as links and never downloaded.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from collection import services
from collection.importers.base import (
    ANS_NAME,
    ImageIndex,
    ImportResult,
    ImportRun,
    RecordError,
    ans_source_values,
    clean_text,
    item_title_from,
    licence_for,
    parse_axis,
    parse_decimal,
    parse_year,
)
from collection.models import ConceptKind, Side

logger = logging.getLogger(__name__)

NUDS = "http://nomisma.org/nuds"
XLINK = "http://www.w3.org/1999/xlink"
METS = "http://www.loc.gov/METS/"
NS = {"n": NUDS, "m": METS}
HREF = f"{{{XLINK}}}href"
ROLE = f"{{{XLINK}}}role"
# Bounds for one record. The 2,085 ANS records reach 7.4 kB, depth 7, 100 elements and 235
# characters of text in one element; these leave wide margins and still bound memory and time.
MAX_XML_BYTES = 5 * 2**20  # a NUDS record is a few kB; anything this large is not one
MAX_DEPTH = 100
MAX_ELEMENTS = 50_000
MAX_TEXT_CHARS = 100_000  # in one element: a legend or a description is a few hundred

# xlink:role of typeDesc/authority and typeDesc/geographic children → Concept kind.
ROLE_KINDS = {
    "authority": ConceptKind.AUTHORITY.value,
    "issuer": "issuer",
    "state": ConceptKind.STATE.value,
    "productionPlace": ConceptKind.MINT.value,
    "region": ConceptKind.REGION.value,
}
# Preferred mets:file USE for the remote link: the full-size file first.
REMOTE_USES = ("archive", "reference", "iiif", "thumbnail")


@dataclass
class NudsRecord:
    """The fields of one NUDS file that the catalogue keeps (parsed, not yet written)."""

    record_id: str
    title: str
    agency: str = ""
    data_licence: tuple[str, str] = ("", "")
    image_rights: str = ""
    type_uri: str = ""
    reference: str = ""
    concepts: list[tuple[str, str, str]] = field(default_factory=list)
    item_fields: dict[str, Any] = field(default_factory=dict)
    item_attributes: dict[str, Any] = field(default_factory=dict)
    specimen_fields: dict[str, Any] = field(default_factory=dict)
    specimen_attributes: dict[str, Any] = field(default_factory=dict)
    remote_images: dict[str, str] = field(default_factory=dict)


def _text(element: Element | None) -> str:
    return clean_text("".join(element.itertext())) if element is not None else ""


def _find(element: Element | None, path: str) -> Element | None:
    return element.find(path, NS) if element is not None else None


def _findall(element: Element | None, path: str) -> list[Element]:
    return element.findall(path, NS) if element is not None else []


def _description(side: Element | None) -> str:
    """The English type description of one side (or the first one in any language)."""
    descriptions = _findall(side, "n:type/n:description")
    for element in descriptions:
        if element.get("{http://www.w3.org/XML/1998/namespace}lang", "en").startswith("en"):
            return _text(element)
    return _text(descriptions[0]) if descriptions else ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def nuds_tree(data: bytes) -> Element:
    """The document's root element, parsed safely and within bounds, or RecordError saying why not.

    Parsing streams, so a file is refused at the first element past a bound, before the rest is read.
    """
    if len(data) > MAX_XML_BYTES:
        raise RecordError(f"file too large for a NUDS record ({len(data)} bytes; limit {MAX_XML_BYTES})")
    root: Element | None = None
    depth = elements = 0
    try:
        events = iterparse(
            io.BytesIO(data), events=("start", "end"), forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        for event, element in events:
            if event == "start":
                depth += 1
                elements += 1
                root = element if root is None else root
                if depth > MAX_DEPTH:
                    raise RecordError(f"elements nested too deeply (more than {MAX_DEPTH} levels)")
                if elements > MAX_ELEMENTS:
                    raise RecordError(f"too many elements for a NUDS record (more than {MAX_ELEMENTS})")
                continue
            depth -= 1
            for text in (element.text, element.tail):
                if text and len(text) > MAX_TEXT_CHARS:
                    raise RecordError(
                        f"text too long in <{_local(element.tag)}>: {len(text)} characters (limit {MAX_TEXT_CHARS})"
                    )
    except DefusedXmlException as exc:
        raise RecordError(
            f"forbidden XML construct ({type(exc).__name__}): DTDs, entities and external references are refused"
        ) from exc
    except ParseError as exc:
        raise RecordError(f"malformed XML: {exc}") from exc
    except (ValueError, LookupError) as exc:  # an encoding expat cannot read (UTF-7, UTF-32…)
        raise RecordError(f"malformed XML: unsupported encoding ({exc})") from exc
    if root is None:
        raise RecordError("malformed XML: no element found")
    return root


def nuds_parse(data: bytes) -> NudsRecord:
    """Parse one NUDS document safely; raise RecordError with a readable reason if it is not usable."""
    root = nuds_tree(data)
    if root.tag != f"{{{NUDS}}}nuds":
        raise RecordError(f"not a NUDS record: the root element is {root.tag!r}, expected {{{NUDS}}}nuds")
    if root.get("recordType") == "conceptual":
        raise RecordError("a conceptual NUDS record (a coin type), not a physical specimen: nothing to import")

    control = _find(root, "n:control")
    record_id = _text(_find(control, "n:recordId"))
    if not record_id:
        raise RecordError("no control/recordId in the record")
    desc = _find(root, "n:descMeta")
    type_desc = _find(desc, "n:typeDesc")
    record = NudsRecord(record_id=record_id, title=_text(_find(desc, "n:title")) or record_id)
    _read_rights(record, control)
    record.concepts = _concepts(desc, type_desc)
    _read_type(record, type_desc)
    citations = _read_references(record, desc)
    _read_specimen(record, desc, citations)
    record.remote_images = _remote_images(root)
    return record


def _read_rights(record: NudsRecord, control: Element | None) -> None:
    """The holding agency, the data licence and the image rights."""
    rights = _find(control, "n:rightsStmt")
    record.agency = _text(_find(control, "n:maintenanceAgency/n:agencyName")) or _text(
        _find(rights, "n:copyrightHolder")
    )
    for licence in _findall(rights, "n:license"):
        if licence.get("for") == "data":
            record.data_licence = licence_for(licence.get(HREF, ""), _text(licence))
        elif licence.get("for") == "images":
            record.image_rights = _text(licence)


def _concepts(desc: Element | None, type_desc: Element | None) -> list[tuple[str, str, str]]:
    """(kind, label, URI) of every vocabulary term the record names: object type, authority, mint, portrait…"""
    concepts = []
    for tag, kind in (
        ("objectType", ConceptKind.OBJECT_TYPE),
        ("denomination", ConceptKind.DENOMINATION),
        ("material", ConceptKind.MATERIAL),
    ):
        for element in _findall(type_desc, f"n:{tag}"):
            concepts.append((kind.value, _text(element), element.get(HREF, "")))
    for element in [*_findall(type_desc, "n:authority/*"), *_findall(type_desc, "n:geographic/n:geogname")]:
        kind = ROLE_KINDS.get(element.get(ROLE, ""))
        if kind and (_text(element) or element.get(HREF)):
            concepts.append((kind, _text(element), element.get(HREF, "")))
    for subject in _findall(desc, "n:subjectSet/n:subject"):
        if subject.get("localType") == "category" and _text(subject):
            concepts.append((ConceptKind.CATEGORY.value, _text(subject), subject.get(HREF, "")))
    for side_tag in ("obverse", "reverse"):
        for person in _findall(type_desc, f"n:{side_tag}/n:persname"):
            if person.get(ROLE) == "portrait" and (_text(person) or person.get(HREF)):
                concepts.append((ConceptKind.PORTRAIT.value, _text(person), person.get(HREF, "")))
    return concepts


def _read_type(record: NudsRecord, type_desc: Element | None) -> None:
    """The item's dates, legends and descriptions, and how it was made."""
    date_range = _find(type_desc, "n:dateRange")
    if date_range is not None:
        start, end = _find(date_range, "n:fromDate"), _find(date_range, "n:toDate")
    else:
        start = end = _find(type_desc, "n:date")
    obverse, reverse = _find(type_desc, "n:obverse"), _find(type_desc, "n:reverse")
    record.item_fields = {
        "date_from": _year(start, "fromDate"),
        "date_to": _year(end, "toDate"),
        "obverse_legend": _text(_find(obverse, "n:legend")),
        "obverse_description": _description(obverse),
        "reverse_legend": _text(_find(reverse, "n:legend")),
        "reverse_description": _description(reverse),
    }
    manufacture = _text(_find(type_desc, "n:manufacture"))
    if manufacture:
        record.item_attributes["manufacture"] = manufacture


def _read_references(record: NudsRecord, desc: Element | None) -> list[str]:
    """The type URI and reference; returns the citations that name no type.

    The first linked reference is the type (OCRE/RPC/CRRO); other links are parallel type URIs.
    """
    references = _findall(desc, "n:refDesc/n:reference")
    linked = [ref for ref in references if ref.get(HREF)]
    if linked:
        record.type_uri = linked[0].get(HREF, "").strip()
        record.reference = _text(linked[0])
        if len(linked) > 1:
            record.item_attributes["other_uris"] = [ref.get(HREF) for ref in linked[1:]]
    elif references:
        record.reference = _text(references[0])
    citations = [_text(ref) for ref in references if not ref.get(HREF)]
    return citations + [_text(c) for c in _findall(desc, "n:refDesc/n:citation")]


def _read_specimen(record: NudsRecord, desc: Element | None, citations: list[str]) -> None:
    """The physical object: measurements, holding collection, provenance, findspot, and what else it records."""
    phys = _find(desc, "n:physDesc")
    admin = _find(desc, "n:adminDesc")
    findspots = [_text(e) for e in _findall(desc, "n:findspotDesc/n:findspot/n:fallsWithin/n:geogname")]
    findspots += [_text(e) for e in _findall(desc, "n:findspotDesc/n:hoard")]
    record.specimen_fields = {
        "title": record.title,
        "weight_g": parse_decimal(
            _text(_find(phys, "n:measurementsSet/n:weight")), name="weight", places=3, maximum=Decimal(10**5)
        ),
        "diameter_mm": parse_decimal(
            _text(_find(phys, "n:measurementsSet/n:diameter")), name="diameter", places=2, maximum=Decimal(10**5)
        ),
        "die_axis": parse_axis(_text(_find(phys, "n:axis"))),
        "holding_collection": _text(_find(admin, "n:collection")),
        "provenance": "; ".join(_text(e) for e in _findall(admin, "n:provenance/n:chronList/n:chronItem") if _text(e)),
        "findspot": "; ".join(text for text in findspots if text),
        "image_rights": record.image_rights,
    }
    attributes = {
        "department": _text(_find(admin, "n:department")),
        "lot": _text(_find(admin, "n:lot")),
        "series": _text(_find(phys, "n:series")),
        "citations": [c for c in citations if c],
        "notes": [_text(e) for e in _findall(desc, "n:descriptionSet/n:description") if _text(e)],
        "acknowledgments": [_text(e) for e in _findall(admin, "n:acknowledgment") if _text(e)],
        # The holding collection's URI (Nomisma's nm:ans…), which linked data publishes as nmo:hasCollection.
        "collection_uri": (
            _find(admin, "n:collection").get(HREF, "").strip() if _find(admin, "n:collection") is not None else ""
        ),
        # The specimen's own readings, kept even when a type supplies the item's text.
        **{key: value for key, value in record.item_fields.items() if key.endswith(("legend", "description"))},
    }
    if not record.type_uri:
        attributes["concepts"] = [{"kind": kind, "label": label, "uri": uri} for kind, label, uri in record.concepts]
    record.specimen_attributes = {key: value for key, value in attributes.items() if value}


def _remote_images(root: Element) -> dict[str, str]:
    """Side → the URL of the record's own image of it (METS), the full-size file first."""
    remote = {}
    for group in root.iterfind(f".//{{{METS}}}fileGrp"):
        side = group.get("USE", "")
        if side not in (Side.OBVERSE, Side.REVERSE):
            continue
        urls = {f.get("USE", ""): _find(f, "m:FLocat") for f in group.iterfind(f"{{{METS}}}file")}
        for use in (*REMOTE_USES, *urls):
            locat = urls.get(use)
            if locat is not None and locat.get(HREF, "").startswith(("http://", "https://")):
                remote[side] = locat.get(HREF)
                break
    return remote


def _year(element: Element | None, name: str) -> int | None:
    if element is None:
        return None
    standard = element.get("standardDate")
    if standard:
        # ISO 8601 with astronomical years: '0231', '-0038', '0231-05-01'.
        sign, digits = ("-", standard[1:]) if standard.startswith("-") else ("", standard)
        return parse_year(sign + digits.split("-", 1)[0], name=name)
    text = _text(element)
    return parse_year(text, name=name) if text.lstrip("-").isdigit() else None


def nuds_files(paths: list[Path]) -> list[Path]:
    """The XML files named, with folders expanded to their ``*.xml`` files (sorted)."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        files.extend(sorted(path.glob("*.xml")) if path.is_dir() else [path])
    return files


def import_nuds_paths(
    paths: list[Path], *, images_dir: Path | None = None, progress: bool = False, limit: int | None = None
) -> ImportResult:
    """Import NUDS files (or folders of them) into the catalogue, one transaction per record.

    Images come from ``images_dir`` (default: the ``images`` folder beside each XML folder),
    found by record id and side. A record whose side has a remote image in its ``mets:fileGrp``
    expects that side's file whenever the images folder exists; a missing one fails the record.
    """
    with ImportRun(progress=progress) as run:
        _import_files(run, nuds_files(paths), images_dir=images_dir, limit=limit)
    return run.finish()


def _import_files(run: ImportRun, files: list[Path], *, images_dir: Path | None, limit: int | None) -> None:
    """Parse and write each file; a file that cannot be parsed is reported without a transaction."""
    if limit is not None:
        files = files[:limit]
    indexes: dict[Path, ImageIndex] = {}
    for path in run.iterate(files, total=len(files)):
        folder = Path(images_dir) if images_dir else path.parent.parent / "images"
        index = indexes.get(folder)
        if index is None:
            index = indexes[folder] = ImageIndex(folder)
            if not index.exists:
                run.result.notes.append(f"no images folder at {folder}: metadata and remote image links only")
        try:
            size = path.stat().st_size
            if size > MAX_XML_BYTES:
                raise RecordError(f"file too large for a NUDS record ({size} bytes; limit {MAX_XML_BYTES})")
            with path.open("rb") as fh:
                data = fh.read(MAX_XML_BYTES + 1)  # the file may have grown since stat()
            record = nuds_parse(data)
        except RecordError as exc:
            run.fail(str(path), str(exc))
            continue
        except OSError as exc:
            run.fail(str(path), f"cannot read the file ({exc.strerror or exc})")
            continue
        except Exception as exc:  # one hostile file must never stop the import; keep the traceback in the log
            logger.exception("unexpected error parsing %s", path)
            run.fail(str(path), f"unexpected error ({type(exc).__name__}: {exc})")
            continue
        run.record(record.record_id, lambda record=record, index=index: _write(run, record, index))


def _write(run: ImportRun, record: NudsRecord, index: ImageIndex) -> bool:
    """Write one parsed record (called inside the record's transaction); return whether it was new."""
    source = None
    if record.agency:
        licence, licence_url = record.data_licence
        values = ans_source_values() if record.agency == ANS_NAME else {}
        if licence and not values:
            values = {
                "licence": licence,
                "licence_url": licence_url,
                "credit": f"Metadata © {record.agency}, {licence}",
            }
        source = run.source(name=record.agency, **values)
    concepts = [run.concept(kind, label, uri) for kind, label, uri in record.concepts]
    item, _ = services.item_upsert(
        uri=record.type_uri,
        reference=record.reference,
        title=item_title_from(record.title, record.record_id),
        fields=record.item_fields,
        concepts=concepts,
        attributes=record.item_attributes,
        source=source,
        # Without a type URI the references are bibliography, not a type: link only to an existing item.
        create=bool(record.type_uri),
    )
    specimen, created = services.specimen_upsert(
        record_id=record.record_id,
        fields={**record.specimen_fields, "item": item, "source": source, "attributes": record.specimen_attributes},
    )
    images = run.existing_images(specimen, created=created)
    for side in (Side.OBVERSE, Side.REVERSE):
        path = index.find(record.record_id, side) if index.exists else None
        remote = record.remote_images.get(side)
        if path is None and remote and index.exists:
            code = "obv" if side == Side.OBVERSE else "rev"
            raise RecordError(f"missing image: no {record.record_id}.{code}.* in {index.folder}")
        if path is not None or remote:
            run.attach_image(specimen=specimen, side=side, path=path, remote_url=remote, existing=images.get(side))
    return created
