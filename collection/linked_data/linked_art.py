"""Linked Art JSON-LD for a specimen: the museum world's common profile of CIDOC-CRM.

A ``HumanMadeObject`` classified as a coin (Getty AAT), with its title and accession number, weight
and diameter, material and production (mint, dates), its images (IIIF) and manifest, its type as
a Nomisma-linked classification, and the holding collection as current owner. Only public facts.
"""

from __future__ import annotations

from typing import Any

from collection.linked_data import iiif
from collection.linked_data.links import Links
from collection.models import Concept, ConceptKind, Item, Specimen, SpecimenImage

CONTEXT = "https://linked.art/ns/v1/linked-art.json"
CONTENT_TYPE = f'application/ld+json;profile="{CONTEXT}"'
AAT = "http://vocab.getty.edu/aat/"


def _aat(number: str, label: str, kind: str = "Type") -> dict[str, str]:
    return {"id": f"{AAT}{number}", "type": kind, "_label": label}


COIN = _aat("300037222", "coins (money)")
PRIMARY_NAME = _aat("300404670", "primary name")
ACCESSION_NUMBER = _aat("300312355", "accession number")
WEIGHT = _aat("300056240", "weight")
DIAMETER = _aat("300055624", "diameter")
GRAMS = _aat("300379225", "grams", "MeasurementUnit")
MILLIMETRES = _aat("300379097", "millimetres", "MeasurementUnit")
DIGITAL_IMAGE = _aat("300215302", "digital images")
WEB_PAGE = _aat("300264578", "Web pages (documents)")


def _timespan(item: Item) -> dict[str, Any] | None:
    """The production's timespan, from the first day of the first year to the last of the last.

    Years BC are written with a minus sign and the historical year (44 BC is -0044), as NUDS and
    Nomisma write them, not with astronomical numbering.
    """
    if item.date_from is None and item.date_to is None:
        return None
    start = item.date_from if item.date_from is not None else item.date_to
    end = item.date_to if item.date_to is not None else item.date_from

    def year(value: int) -> str:
        return f"-{-value:04d}" if value < 0 else f"{value:04d}"

    return {
        "type": "TimeSpan",
        "_label": item.date_display,
        "begin_of_the_begin": f"{year(start)}-01-01T00:00:00Z",
        "end_of_the_end": f"{year(end)}-12-31T23:59:59Z",
    }


def specimen_object(specimen: Specimen, *, item: Item | None, links: Links) -> dict[str, Any]:
    """The Linked Art record of one specimen, as a JSON-serialisable dict."""
    title = specimen.title or (item.title if item is not None else "") or specimen.record_id
    record: dict[str, Any] = {
        "@context": CONTEXT,
        "id": links.linked_art(specimen.pk),
        "type": "HumanMadeObject",
        "_label": title,
        "classified_as": [COIN],
        "identified_by": [
            {"type": "Name", "classified_as": [PRIMARY_NAME], "content": title},
            {"type": "Identifier", "classified_as": [ACCESSION_NUMBER], "content": specimen.record_id},
        ],
        "equivalent": [{"id": links.specimen(specimen.pk), "type": "HumanMadeObject", "_label": title}],
    }
    dimensions = _dimensions(specimen)
    if dimensions:
        record["dimension"] = dimensions
    if item is not None:
        _add_type_facts(record, item, links)
    images = [image for image in specimen.images.all() if iiif.has_service(image)]
    if images:
        record["representation"] = [_representation(image, links) for image in images]
    record["subject_of"] = _subject_of(specimen, links, with_manifest=bool(images))
    if specimen.holding_collection:
        record["current_owner"] = [_owner(specimen)]
    record["member_of"] = [{"id": links.dataset(), "type": "Set", "_label": "The published collection"}]
    return record


def _dimensions(specimen: Specimen) -> list[dict[str, Any]]:
    dimensions = []
    for value, kind, unit in ((specimen.weight_g, WEIGHT, GRAMS), (specimen.diameter_mm, DIAMETER, MILLIMETRES)):
        if value is not None:
            dimensions.append({"type": "Dimension", "classified_as": [kind], "value": float(value), "unit": unit})
    return dimensions


def _references(concepts: list[Concept], kind: str, la_type: str) -> list[dict[str, str]]:
    """The terms of one kind as Linked Art references; a term without a URI has nothing to point at."""
    return [{"id": c.uri, "type": la_type, "_label": c.label} for c in concepts if c.kind == kind and c.uri]


def _add_type_facts(record: dict[str, Any], item: Item, links: Links) -> None:
    """What the specimen has from its type: material, production (mint, authority, dates), the type itself."""
    concepts = list(item.concepts.all())
    materials = _references(concepts, ConceptKind.MATERIAL, "Material")
    if materials:
        record["made_of"] = materials
    production: dict[str, Any] = {"type": "Production"}
    mints = _references(concepts, ConceptKind.MINT, "Place")
    if mints:
        production["took_place_at"] = mints
    authorities = _references(concepts, ConceptKind.AUTHORITY, "Person")
    if authorities:
        production["influenced_by"] = authorities
    timespan = _timespan(item)
    if timespan:
        production["timespan"] = timespan
    if len(production) > 1:
        record["produced_by"] = production
    # The coin type: a classification by its corpus URI (OCRE, CRRO, RPC) where it has one.
    record["classified_as"].append(
        {"id": item.uri or links.item(item.pk), "type": "Type", "_label": item.reference or item.title}
    )


def _representation(image: SpecimenImage, links: Links) -> dict[str, Any]:
    """One image served here through IIIF: its full-size JPEG and its image service."""
    return {
        "type": "VisualItem",
        "_label": image.get_side_display(),
        "digitally_shown_by": [
            {
                "type": "DigitalObject",
                "classified_as": [DIGITAL_IMAGE],
                "format": "image/jpeg",
                "access_point": [{"id": iiif.full_url(image, links), "type": "DigitalObject"}],
                "digitally_available_via": [
                    {
                        "type": "DigitalService",
                        "access_point": [{"id": links.image_service(image.pk), "type": "DigitalObject"}],
                        "conforms_to": [{"id": "http://iiif.io/api/image/3/context.json", "type": "InformationObject"}],
                    }
                ],
            }
        ],
    }


def _subject_of(specimen: Specimen, links: Links, *, with_manifest: bool) -> list[dict[str, Any]]:
    """The documents about the specimen: its web page and, where it has IIIF images, its manifest."""
    subject_of = [
        {
            "type": "LinguisticObject",
            "digitally_carried_by": [
                {
                    "type": "DigitalObject",
                    "classified_as": [WEB_PAGE],
                    "format": "text/html",
                    "access_point": [{"id": links.specimen(specimen.pk), "type": "DigitalObject"}],
                }
            ],
        }
    ]
    if with_manifest:
        subject_of.append(
            {
                "type": "LinguisticObject",
                "digitally_carried_by": [
                    {
                        "type": "DigitalObject",
                        "format": iiif.MANIFEST_CONTENT_TYPE,
                        "access_point": [{"id": links.manifest(specimen.pk), "type": "DigitalObject"}],
                        "conforms_to": [
                            {"id": "http://iiif.io/api/presentation/3/context.json", "type": "InformationObject"}
                        ],
                    }
                ],
            }
        )
    return subject_of


def _owner(specimen: Specimen) -> dict[str, Any]:
    """The holding collection as a group, matched to its URI where the record gives one."""
    owner: dict[str, Any] = {"type": "Group", "_label": specimen.holding_collection}
    collection_uri = (specimen.attributes or {}).get("collection_uri")
    if collection_uri:
        owner["equivalent"] = [{"id": collection_uri, "type": "Group", "_label": specimen.holding_collection}]
    return owner
