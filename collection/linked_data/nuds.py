"""NUDS out: a specimen as a physical NUDS record, a type as a conceptual one.

The physical record is the shape ``collection.importers.nuds`` reads (the ANS's Numishare
records), so ``export_nuds`` then ``import_nuds`` gives back the same rows: every field the
importer fills is written where it looks for it. Public records leave out what the catalogue keeps
private (findspot, provenance); ``private=True`` (``export_nuds --private``) keeps them, for moving
a catalogue between installations.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement, register_namespace, tostring

from django.utils.text import get_valid_filename

from collection.linked_data.iiif import has_service
from collection.linked_data.links import Links
from collection.models import ConceptKind, Item, Side, Source, Specimen

NUDS = "http://nomisma.org/nuds"
XLINK = "http://www.w3.org/1999/xlink"
METS = "http://www.loc.gov/METS/"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
HREF = f"{{{XLINK}}}href"
ROLE = f"{{{XLINK}}}role"
for _prefix, _uri in (("", NUDS), ("xlink", XLINK), ("mets", METS)):
    register_namespace(_prefix, _uri)

# Concept kind → where typeDesc keeps it (the importer's ROLE_KINDS, read the other way).
AUTHORITY_ROLES = {
    ConceptKind.AUTHORITY.value: ("persname", "authority"),
    "issuer": ("persname", "issuer"),
    ConceptKind.STATE.value: ("corpname", "state"),
}
GEOGRAPHIC_ROLES = {ConceptKind.MINT.value: "productionPlace", ConceptKind.REGION.value: "region"}
# The sides' texts, read from the specimen's attributes or the item's fields of these names.
SIDE_TEXTS = ("obverse_legend", "obverse_description", "reverse_legend", "reverse_description")
# physDesc's measurements, in the schema's order: element, Specimen field, unit.
MEASUREMENTS = (("weight", "weight_g", "g"), ("diameter", "diameter_mm", "mm"))


def _n(tag: str) -> str:
    return f"{{{NUDS}}}{tag}"


def _add(parent: Element, tag: str, text: str = "", **attrs: str) -> Element:
    element = SubElement(parent, tag if tag.startswith("{") else _n(tag), {k: v for k, v in attrs.items() if v})
    if text:
        element.text = text
    return element


def _linked(parent: Element, tag: str, text: str, uri: str, **attrs: str) -> Element:
    if uri:
        attrs = {HREF: uri, f"{{{XLINK}}}type": "simple", **attrs}
    return _add(parent, tag, text, **attrs)


def standard_year(year: int) -> str:
    """A year as NUDS's ``standardDate`` writes it (xsd:gYear): 383 → '0383', 44 BC → '-0044'."""
    return f"-{-year:04d}" if year < 0 else f"{year:04d}"


def _date(type_desc: Element, date_from: int | None, date_to: int | None) -> None:
    if date_from is None and date_to is None:
        return
    if date_from == date_to or date_from is None or date_to is None:
        year = date_from if date_from is not None else date_to
        _add(type_desc, "date", str(year), standardDate=standard_year(year))
        return
    date_range = _add(type_desc, "dateRange")
    _add(date_range, "fromDate", str(date_from), standardDate=standard_year(date_from))
    _add(date_range, "toDate", str(date_to), standardDate=standard_year(date_to))


def _control(root: Element, record_id: str, source: Source | None, image_rights: str = "") -> None:
    control = _add(root, "control")
    _add(control, "recordId", record_id)
    _add(control, "publicationStatus", "approved")
    _add(control, "maintenanceStatus", "derived")
    if source is not None:
        _add(_add(control, "maintenanceAgency"), "agencyName", source.name)
    event = _add(_add(control, "maintenanceHistory"), "maintenanceEvent")
    _add(event, "eventType", "derived")
    now = datetime.now(UTC).replace(microsecond=0)
    _add(event, "eventDateTime", now.strftime("%d %B %Y %H:%M:%S UTC"), standardDateTime=now.isoformat())
    _add(event, "agentType", "machine")
    _add(event, "agent", "Obverse")
    if source is not None or image_rights:
        rights = _add(control, "rightsStmt")
        if source is not None:
            _add(rights, "copyrightHolder", source.name)
            if source.licence or source.licence_url:
                _linked(rights, "license", source.licence, source.licence_url, **{"for": "data"})
        if image_rights:
            _add(rights, "license", image_rights, **{"for": "images"})
    declaration = _add(control, "semanticDeclaration")
    _add(declaration, "prefix", "nmo")
    _add(declaration, "namespace", "http://nomisma.org/ontology#")


def _terms(parent: Element, concepts: list[tuple[str, str, str]], kind: str, tag: str) -> None:
    for _, label, uri in (c for c in concepts if c[0] == kind):
        _linked(parent, tag, label, uri)


def _authority(type_desc: Element, concepts: list[tuple[str, str, str]]) -> None:
    people = [c for c in concepts if c[0] in AUTHORITY_ROLES]
    if people:
        authority = _add(type_desc, "authority")
        for kind, label, uri in people:
            tag, role = AUTHORITY_ROLES[kind]
            _linked(authority, tag, label, uri, **{ROLE: role})


def _geographic(type_desc: Element, concepts: list[tuple[str, str, str]]) -> None:
    places = [c for c in concepts if c[0] in GEOGRAPHIC_ROLES]
    if places:
        geographic = _add(type_desc, "geographic")
        for kind, label, uri in places:
            _linked(geographic, "geogname", label, uri, **{ROLE: GEOGRAPHIC_ROLES[kind]})


def _side(type_desc: Element, side: str, texts: dict[str, str], portraits: list[tuple[str, str, str]]) -> None:
    """One side's legend, description and portraits; no element for a side with none of them."""
    legend, description = texts.get(f"{side}_legend", ""), texts.get(f"{side}_description", "")
    if not (legend or description or portraits):
        return
    element = _add(type_desc, side)
    if legend:
        _add(element, "legend", legend)
    if description:
        _add(_add(element, "type"), "description", description, **{XML_LANG: "en"})
    for _, label, uri in portraits:
        _linked(element, "persname", label, uri, **{ROLE: "portrait"})


def _type_desc(
    desc: Element, *, concepts: list[tuple[str, str, str]], item: Item | None, texts: dict[str, str]
) -> None:
    """typeDesc from (kind, label, uri) concepts, the item's dates and manufacture, and the sides' texts."""
    type_desc = _add(desc, "typeDesc")
    # In the schema's order: objectType, date, denomination, manufacture, material, authority…
    _terms(type_desc, concepts, ConceptKind.OBJECT_TYPE.value, "objectType")
    if item is not None:
        _date(type_desc, item.date_from, item.date_to)
    _terms(type_desc, concepts, ConceptKind.DENOMINATION.value, "denomination")
    manufacture = (item.attributes or {}).get("manufacture") if item is not None else None
    if manufacture:
        _add(type_desc, "manufacture", str(manufacture))
    _terms(type_desc, concepts, ConceptKind.MATERIAL.value, "material")
    _authority(type_desc, concepts)
    _geographic(type_desc, concepts)
    # Portrait terms do not keep the side they came from (the importer reads both): the obverse gets them.
    _side(type_desc, "obverse", texts, [c for c in concepts if c[0] == ConceptKind.PORTRAIT])
    _side(type_desc, "reverse", texts, [])


def _subjects(desc: Element, concepts: list[tuple[str, str, str]]) -> None:
    categories = [c for c in concepts if c[0] == ConceptKind.CATEGORY]
    if categories:
        subjects = _add(desc, "subjectSet")
        for _, label, uri in categories:
            _linked(subjects, "subject", label, uri, localType="category")


def _item_concepts(item: Item) -> list[tuple[str, str, str]]:
    return sorted(((c.kind, c.label, c.uri) for c in item.concepts.all()), key=lambda c: (c[0], c[1], c[2]))


def _bytes(root: Element) -> bytes:
    return tostring(root, encoding="UTF-8", xml_declaration=True)


def specimen_nuds(specimen: Specimen, *, item: Item | None, links: Links, private: bool = False) -> bytes:
    """The specimen as a physical NUDS record (UTF-8 XML bytes).

    ``item`` is its type where it may be shown (else None: the record then carries the specimen's
    own terms and readings). Images: ``archive`` is the source's own file where the image came with
    one (so a re-import keeps that link), else the file here; ``iiif`` and ``thumbnail`` are ours.
    """
    attributes = dict(specimen.attributes or {})
    root = Element(_n("nuds"), {"recordType": "physical"})
    source = specimen.source or (item.source if item is not None else None)
    _control(root, specimen.record_id, source, specimen.image_rights)
    desc = _add(root, "descMeta")
    _add(desc, "title", specimen.title or specimen.record_id, **{XML_LANG: "en"})
    if item is not None:
        concepts = _item_concepts(item)
    else:
        concepts = [(t.get("kind", ""), t.get("label", ""), t.get("uri", "")) for t in attributes.get("concepts", [])]
    _subjects(desc, concepts)
    notes = attributes.get("notes") or []
    if notes:
        note_set = _add(desc, "descriptionSet")
        for note in notes:
            _add(note_set, "description", str(note), **{XML_LANG: "en"})
    # The specimen's own readings where it has them (the importer keeps them), else the type's.
    texts = {key: attributes.get(key) or (getattr(item, key) if item is not None else "") for key in SIDE_TEXTS}
    _type_desc(desc, concepts=concepts, item=item, texts=texts)
    _phys_desc(desc, specimen, attributes)
    if private and specimen.findspot:
        findspot = _add(_add(desc, "findspotDesc"), "findspot")
        _add(_add(findspot, "fallsWithin"), "geogname", specimen.findspot)
    _ref_desc(desc, item, attributes.get("citations") or [])
    _admin_desc(desc, specimen, attributes, private=private)
    _dig_rep(root, specimen, links)
    return _bytes(root)


def _phys_desc(desc: Element, specimen: Specimen, attributes: dict) -> None:
    phys = _add(desc, "physDesc")
    if specimen.die_axis is not None:
        _add(phys, "axis", str(specimen.die_axis))
    measured = [(tag, getattr(specimen, field), unit) for tag, field, unit in MEASUREMENTS]
    measured = [(tag, value, unit) for tag, value, unit in measured if value is not None]
    if measured:
        measurements = _add(phys, "measurementsSet")
        for tag, value, unit in measured:
            _add(measurements, tag, str(value.normalize()), units=unit)
    if attributes.get("series"):
        _add(phys, "series", str(attributes["series"]))


def _ref_desc(desc: Element, item: Item | None, citations: list) -> None:
    """The type's URIs as linked references; plain citations, the type's reference first where it has no URI."""
    references = []
    if item is not None and item.uri:
        references.append((item.reference, item.uri, "nmo:hasTypeSeriesItem"))
        references += [("", uri, "nmo:hasTypeSeriesItem") for uri in (item.attributes or {}).get("other_uris", [])]
    if item is not None and not item.uri and item.reference and item.reference not in citations:
        citations = [item.reference, *citations]
    if not (references or citations):
        return
    ref_desc = _add(desc, "refDesc")
    for text, uri, arcrole in references:
        _linked(ref_desc, "reference", text, uri, **{f"{{{XLINK}}}arcrole": arcrole})
    for citation in citations:
        _add(ref_desc, "reference", str(citation))


def _admin_desc(desc: Element, specimen: Specimen, attributes: dict, *, private: bool) -> None:
    admin = _add(desc, "adminDesc")
    _add(admin, "identifier", specimen.record_id)
    for key in ("lot", "department"):
        if attributes.get(key):
            _add(admin, key, str(attributes[key]))
    if specimen.holding_collection:
        _linked(admin, "collection", specimen.holding_collection, attributes.get("collection_uri", ""))
    if private and specimen.provenance:
        _add(_add(_add(admin, "provenance"), "chronList"), "chronItem", specimen.provenance)
    for acknowledgment in attributes.get("acknowledgments") or []:
        _add(admin, "acknowledgment", str(acknowledgment))


def _dig_rep(root: Element, specimen: Specimen, links: Links) -> None:
    groups = []
    for image in specimen.images.all():
        if image.side not in (Side.OBVERSE, Side.REVERSE) or image.sort_order != 0:
            continue
        files = []
        archive = image.remote_url or (links.url(image.image.url) if image.image else "")
        if archive:
            files.append(("archive", archive, "image/jpeg" if archive.lower().endswith((".jpg", ".jpeg")) else ""))
        if has_service(image):
            files.append(("iiif", links.image_service(image.pk), ""))
        if image.thumbnail:
            files.append(("thumbnail", links.url(image.thumbnail.url), "image/jpeg"))
        if files:
            groups.append((image.side, files))
    if not groups:
        return
    file_sec = SubElement(_add(root, "digRep"), f"{{{METS}}}fileSec")
    for side, files in groups:
        group = SubElement(file_sec, f"{{{METS}}}fileGrp", {"USE": side})
        for use, url, mimetype in files:
            element = SubElement(group, f"{{{METS}}}file", {"USE": use, **({"MIMETYPE": mimetype} if mimetype else {})})
            SubElement(element, f"{{{METS}}}FLocat", {"LOCTYPE": "URL", HREF: url})


def item_nuds(item: Item, *, links: Links) -> bytes:
    """The type as a conceptual NUDS record, as type corpora (OCRE, CRRO) publish theirs."""
    root = Element(_n("nuds"), {"recordType": "conceptual"})
    _control(root, f"item-{item.pk}", item.source)
    control = root.find(_n("control"))
    if item.uri:
        _add(control, "otherRecordId", item.uri, semantic="skos:exactMatch")
    desc = _add(root, "descMeta")
    _add(desc, "title", item.title or item.reference or f"Item {item.pk}", **{XML_LANG: "en"})
    concepts = _item_concepts(item)
    _subjects(desc, concepts)
    if item.description:
        _add(_add(desc, "descriptionSet"), "description", item.description, **{XML_LANG: "en"})
    texts = {key: getattr(item, key) for key in SIDE_TEXTS}
    _type_desc(desc, concepts=concepts, item=item, texts=texts)
    if item.uri or item.reference:
        _linked(_add(desc, "refDesc"), "reference", item.reference, item.uri)
    return _bytes(root)


def catalogue_nuds_export(*, folder: Path, links: Links, private: bool = False) -> int:
    """Write one NUDS file per specimen into ``folder`` (``<record_id>.xml``); return how many.

    Public by default: public specimens, linked to their type when it is published, without
    findspot or provenance. ``private`` writes every specimen with every field, for moving a
    catalogue to another installation (``import_nuds`` reads the folder back to the same rows).
    """
    from django.db.models import Prefetch

    from collection.models import ItemStatus, SpecimenImage

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = SpecimenImage.objects.order_by("sort_order", "side", "pk")
    specimens = (
        Specimen.objects.select_related("source", "item", "item__source")
        .prefetch_related(Prefetch("images", queryset=images), "item__concepts")
        .order_by("record_id")
    )
    if not private:
        specimens = specimens.filter(is_public=True)
    written = 0
    for specimen in specimens.iterator(chunk_size=500):
        item = specimen.item
        if item is not None and not private and item.status != ItemStatus.PUBLISHED:
            item = None
        name = get_valid_filename(f"{specimen.record_id}.xml")
        (folder / name).write_bytes(specimen_nuds(specimen, item=item, links=links, private=private))
        written += 1
    return written
