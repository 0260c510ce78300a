"""IIIF out: an Image API 3 level 0 service per catalogue image, a Presentation 3 manifest per
specimen (one canvas per side) and a collection per item (type).

Manifests and collections are built with ``iiif-prezi3``, whose pydantic models check them
against the Presentation 3 schema as they are built. Only images stored here (with a file, size
and tiles) become canvases; a specimen with none has no manifest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from iiif_prezi3 import Collection, KeyValueString, Manifest, ManifestRef, ServiceV3

from collection.linked_data import tiles as iiif_tiles
from collection.linked_data.links import Links
from collection.models import Item, Side, Source, Specimen, SpecimenImage

IMAGE_CONTEXT = "http://iiif.io/api/image/3/context.json"
PRESENTATION_CONTEXT = "http://iiif.io/api/presentation/3/context.json"
# The JSON-LD media type with the profile IIIF asks for; served with CORS (viewers live elsewhere).
MANIFEST_CONTENT_TYPE = f'application/ld+json;profile="{PRESENTATION_CONTEXT}"'
IMAGE_INFO_CONTENT_TYPE = f'application/ld+json;profile="{IMAGE_CONTEXT}"'
# Presentation 3 `rights` must be a Creative Commons or RightsStatements.org URI; these are the
# image licences our sources state as text (the ANS: "Public Domain Mark").
RIGHTS_URIS = {
    "public domain mark": "http://creativecommons.org/publicdomain/mark/1.0/",
    "cc0": "http://creativecommons.org/publicdomain/zero/1.0/",
    "cc-by-4.0": "http://creativecommons.org/licenses/by/4.0/",
    "cc by 4.0": "http://creativecommons.org/licenses/by/4.0/",
}


def _lang(text: str) -> dict[str, list[str]]:
    return {"en": [text]}


def _pair(label: str, value: str) -> KeyValueString:
    return KeyValueString(label=_lang(label), value=_lang(value))


def rights_uri(text: str) -> str | None:
    """The rights URI for an image-rights statement, where it names one (else None)."""
    text = (text or "").strip()
    if text.startswith(("http://creativecommons.org/", "http://rightsstatements.org/")):
        return text
    return RIGHTS_URIS.get(text.lower())


def has_service(image: SpecimenImage) -> bool:
    """Whether this image is served here as a IIIF image (a stored file, its size and its tiles)."""
    return bool(image.image and image.width and image.height and (image.tiles or {}).get("folder"))


def image_info(image: SpecimenImage, *, links: Links) -> dict[str, Any]:
    """The image service's ``info.json`` (Image API 3.0, level 0): the tiles and sizes that exist."""
    tile = image.tiles.get("tile", iiif_tiles.TILE_SIZE)
    return {
        "@context": IMAGE_CONTEXT,
        "id": links.image_service(image.pk),
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level0",
        "width": image.width,
        "height": image.height,
        "sizes": [{"width": w, "height": h} for w, h in iiif_tiles.sizes(image.width, image.height, tile)],
        "tiles": [{"width": tile, "scaleFactors": iiif_tiles.scale_factors(image.width, image.height, tile)}],
    }


def image_tile_name(image: SpecimenImage, *, region: str, size: str) -> str | None:
    """The storage name of the file that answers ``{region}/{size}/0/default.jpg``, or None."""
    tile = image.tiles.get("tile", iiif_tiles.TILE_SIZE)
    found = iiif_tiles.tile_lookup(image.width, image.height, region, size, tile)
    if found is None:
        return None
    if found.region == "full" and found.size == "max" and image.tiles.get("full_from_image"):
        return image.image.name
    return f"{image.tiles['folder']}/{found.name}"


def _service(image: SpecimenImage, links: Links) -> list[ServiceV3]:
    return [ServiceV3(id=links.image_service(image.pk), type="ImageService3", profile="level0")]


def full_url(image: SpecimenImage, links: Links) -> str:
    """The whole image at full size, through the image service."""
    return f"{links.image_service(image.pk)}/full/max/0/default.jpg"


def thumbnail_size(image: SpecimenImage) -> tuple[int, int]:
    """The smallest size the service lists: the whole image at its smallest level."""
    return iiif_tiles.sizes(image.width, image.height, image.tiles.get("tile", iiif_tiles.TILE_SIZE))[0]


def thumbnail_url(image: SpecimenImage, links: Links) -> str:
    width, height = thumbnail_size(image)
    return f"{links.image_service(image.pk)}/full/{width},{height}/0/default.jpg"


def _thumbnail(image: SpecimenImage, links: Links) -> dict[str, Any]:
    width, height = thumbnail_size(image)
    return {
        "id": thumbnail_url(image, links),
        "type": "Image",
        "format": "image/jpeg",
        "width": width,
        "height": height,
        "service": [_service_dict(image, links)],
    }


def _service_dict(image: SpecimenImage, links: Links) -> dict[str, str]:
    return {"id": links.image_service(image.pk), "type": "ImageService3", "profile": "level0"}


def _source_of(specimen: Specimen, item: Item | None) -> Source | None:
    return specimen.source or (item.source if item is not None else None)


def _metadata(specimen: Specimen, item: Item | None) -> list[KeyValueString]:
    """What a viewer's information panel shows: the record's public facts, in the page's words."""
    rows = [_pair("Record", specimen.record_id)]
    if item is not None:
        rows.append(_pair("Type", " ".join(filter(None, [item.reference or item.title, item.uri]))))
        if item.date_display:
            rows.append(_pair("Date", item.date_display))
        for concept in sorted(item.concepts.all(), key=lambda c: (c.kind, c.label)):
            rows.append(_pair(concept.kind_label, concept.label))
        for label, text in (
            ("Obverse legend", item.obverse_legend),
            ("Obverse", item.obverse_description),
            ("Reverse legend", item.reverse_legend),
            ("Reverse", item.reverse_description),
        ):
            if text:
                rows.append(_pair(label, text))
    for label, value, unit in (
        ("Weight", specimen.weight_g, " g"),
        ("Diameter", specimen.diameter_mm, " mm"),
        ("Die axis", specimen.die_axis, " h"),
    ):
        if value is not None:
            rows.append(_pair(label, f"{value.normalize() if hasattr(value, 'normalize') else value}{unit}"))
    if specimen.holding_collection:
        rows.append(_pair("Collection", specimen.holding_collection))
    if specimen.image_rights:
        rows.append(_pair("Image rights", specimen.image_rights))
    return rows


def specimen_manifest(specimen: Specimen, *, item: Item | None, links: Links) -> Manifest | None:
    """The Presentation 3 manifest of a specimen: a canvas per served image, obverse first.

    ``item`` is the specimen's type when the public may see it (else None). ``seeAlso`` points at
    the record in NUDS and in Nomisma RDF, ``homepage`` at its page, ``partOf`` at the type's
    collection; the source's credit is the required statement. None when no image is served here.
    """
    order = {Side.OBVERSE: 0, Side.REVERSE: 1}
    images = sorted(
        (image for image in specimen.images.all() if has_service(image)),
        key=lambda image: (order.get(image.side, 2), image.sort_order, image.pk),
    )
    if not images:
        return None
    manifest_id = links.manifest(specimen.pk)
    title = specimen.title or (item.title if item is not None else "") or specimen.record_id
    source = _source_of(specimen, item)
    manifest = Manifest(
        id=manifest_id,
        label=_lang(title),
        metadata=_metadata(specimen, item),
        homepage=[{"id": links.specimen(specimen.pk), "type": "Text", "label": _lang(title), "format": "text/html"}],
        seeAlso=[
            {
                "id": links.specimen_document(specimen.pk, "xml"),
                "type": "Dataset",
                "label": _lang("NUDS record"),
                "format": "application/xml",
                "profile": "http://nomisma.org/nuds",
            },
            {
                "id": links.specimen_document(specimen.pk, "ttl"),
                "type": "Dataset",
                "label": _lang("Nomisma RDF"),
                "format": "text/turtle",
                "profile": "http://nomisma.org/ontology#",
            },
            {
                "id": links.linked_art(specimen.pk),
                "type": "Dataset",
                "label": _lang("Linked Art"),
                "format": "application/ld+json",
                "profile": "https://linked.art/ns/v1/linked-art.json",
            },
        ],
        thumbnail=[_thumbnail(images[0], links)],
    )
    if item is not None:
        manifest.partOf = [{"id": links.item_collection(item.pk), "type": "Collection"}]
    if source is not None and (source.credit or source.name):
        manifest.requiredStatement = _pair("Attribution", source.credit or source.name)
    rights = rights_uri(specimen.image_rights)
    if rights:
        manifest.rights = rights
    for image in images:
        canvas_id = f"{manifest_id.removesuffix('/manifest.json')}/canvas/{image.pk}"
        side = image.get_side_display()
        canvas = manifest.make_canvas(
            id=canvas_id,
            label=_lang(side),
            width=image.width,
            height=image.height,
            thumbnail=[_thumbnail(image, links)],
        )
        canvas.add_image(
            image_url=full_url(image, links),
            anno_id=f"{canvas_id}/annotation",
            anno_page_id=f"{canvas_id}/page",
            format="image/jpeg",
            width=image.width,
            height=image.height,
            service=_service(image, links),
        )
    return manifest


def item_collection(item: Item, *, specimens: Iterable[Specimen], links: Links) -> Collection:
    """The IIIF collection of a type: the manifests of its public specimens that have images."""
    title = item.reference or item.title
    refs = [
        ManifestRef(
            id=links.manifest(specimen.pk),
            type="Manifest",
            label=_lang(specimen.title or specimen.record_id),
        )
        for specimen in specimens
        if any(has_service(image) for image in specimen.images.all())
    ]
    collection = Collection(
        id=links.item_collection(item.pk),
        label=_lang(title),
        summary=_lang(item.title) if item.title and item.title != title else None,
        homepage=[{"id": links.item(item.pk), "type": "Text", "label": _lang(title), "format": "text/html"}],
        seeAlso=[
            {
                "id": links.item_document(item.pk, "ttl"),
                "type": "Dataset",
                "format": "text/turtle",
                "profile": "http://nomisma.org/ontology#",
            }
        ],
        items=refs,
    )
    if item.source is not None and (item.source.credit or item.source.name):
        collection.requiredStatement = _pair("Attribution", item.source.credit or item.source.name)
    return collection


def as_json(resource: Manifest | Collection) -> str:
    """The document as JSON-LD text, with the Presentation 3 context."""
    return resource.jsonld()
