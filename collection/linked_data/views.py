"""Linked-data endpoints: IIIF image service, manifests and collections; NUDS; Nomisma RDF; VoID and
the dump; Linked Art. Thin views: visibility from ``collection.selectors``, documents from this package.

They are DRF views only so the OpenAPI schema documents them (tag "linked data") and an Accept
header that none of a view's formats satisfies gets 406; each builds its document itself and
returns it with CORS open to any origin, since viewers and aggregators run on other sites.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.decorators import api_view, permission_classes, renderer_classes
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer

from collection import selectors
from collection.linked_data import iiif, linked_art, nomisma, nuds
from collection.linked_data.links import RDF_FORMATS, Links
from collection.models import Item, ItemStatus, SpecimenImage

TAG = "linked data"
CACHE_SECONDS = 3600  # documents change when the catalogue does; tiles when their image is replaced


class _DocumentRenderer(BaseRenderer):
    """Passes a document the view built through; an error (DRF's ``{"detail": …}``) goes out as JSON."""

    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, bytes | str):
            return data
        response = (renderer_context or {}).get("response")
        if response is not None:  # a 404 or 406 is not a tile or a Turtle file: say what it is
            response["Content-Type"] = "application/json"
        return json.dumps(data).encode()


def _renderer(media_type: str, fmt: str, charset: str | None = "utf-8") -> type[BaseRenderer]:
    return type(
        f"{fmt.title()}Renderer", (_DocumentRenderer,), {"media_type": media_type, "format": fmt, "charset": charset}
    )


TURTLE = _renderer("text/turtle", "ttl")
JSONLD = _renderer("application/ld+json", "jsonld")
RDFXML = _renderer("application/rdf+xml", "rdf")
NUDS_XML = _renderer("application/xml", "xml")
JPEG = _renderer("image/jpeg", "jpg", charset=None)
RDF_RENDERERS = [TURTLE, JSONLD, RDFXML]


def _cors(response: HttpResponse, *, max_age: int = CACHE_SECONDS) -> HttpResponse:
    """Open to every origin, and cacheable for a while. Not "public": a curator also sees records that are
    not public through these views, and Django's ``Vary: Cookie`` keeps a shared cache from mixing them."""
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = f"max-age={max_age}"
    return response


def _document(body: str | bytes, content_type: str) -> HttpResponse:
    return _cors(HttpResponse(body, content_type=content_type))


def _specimen(request: HttpRequest, pk: int):
    """The specimen if this user may see it, with its type only where that is published (as the page does)."""
    qs = selectors.specimen_queryset(user=request.user).prefetch_related("images", "item__concepts")
    specimen = get_object_or_404(qs, pk=pk)
    item = specimen.item
    visible = item is not None and (
        item.status == ItemStatus.PUBLISHED or selectors.item_queryset(user=request.user).filter(pk=item.pk).exists()
    )
    return specimen, (item if visible else None)


def _item(request: HttpRequest, pk: int) -> Item:
    return get_object_or_404(selectors.item_queryset(user=request.user).prefetch_related("concepts"), pk=pk)


def _rdf(graph, fmt: str) -> HttpResponse:
    return _document(graph.serialize(format=nomisma.SERIALISATIONS[fmt]), RDF_FORMATS[fmt])


FORMAT_PARAMETER = OpenApiParameter(
    "fmt",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    enum=["xml", *RDF_FORMATS],
    description="xml: NUDS; ttl, jsonld, rdf: Nomisma RDF",
)
DOCUMENT_RESPONSES = {
    (200, "application/xml"): OpenApiResponse(OpenApiTypes.STR, description="NUDS XML"),
    (200, "text/turtle"): OpenApiResponse(OpenApiTypes.STR, description="Nomisma RDF, Turtle"),
    (200, "application/ld+json"): OpenApiResponse(OpenApiTypes.OBJECT, description="Nomisma RDF, JSON-LD"),
    (200, "application/rdf+xml"): OpenApiResponse(OpenApiTypes.STR, description="Nomisma RDF, RDF/XML"),
    404: OpenApiResponse(description="No such public record"),
}


@extend_schema(
    tags=[TAG],
    summary="A specimen as NUDS or Nomisma RDF",
    description=(
        "`.xml`: the physical NUDS record (the shape `import_nuds` reads). `.ttl`, `.jsonld`, `.rdf`: the "
        "specimen as an `nmo:NumismaticObject` (type series item, weight, diameter, axis, collection, "
        "`foaf:depiction` per side). The specimen page answers `Accept: text/turtle` (and the other RDF "
        "types) with a 303 to these. Findspot and provenance are never included."
    ),
    parameters=[FORMAT_PARAMETER],
    responses=DOCUMENT_RESPONSES,
)
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([NUDS_XML, *RDF_RENDERERS])
def specimen_document(request, pk: int, fmt: str):
    specimen, item = _specimen(request, pk)
    links = Links.for_request(request)
    if fmt == "xml":
        return _document(nuds.specimen_nuds(specimen, item=item, links=links), "application/xml")
    graph = nomisma.new_graph()
    nomisma.add_specimen(graph, specimen, item=item, links=links)
    return _rdf(graph, fmt)


@extend_schema(
    tags=[TAG],
    summary="An item (type) as NUDS or Nomisma RDF",
    description=(
        "`.xml`: the conceptual NUDS record of the type. `.ttl`, `.jsonld`, `.rdf`: the type as an "
        "`nmo:TypeSeriesItem` (`skos:exactMatch` its corpus URI; authority, mint, denomination, material, "
        "dates, legends) with the public specimens of it."
    ),
    parameters=[FORMAT_PARAMETER],
    responses=DOCUMENT_RESPONSES,
)
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([NUDS_XML, *RDF_RENDERERS])
def item_document(request, pk: int, fmt: str):
    item = _item(request, pk)
    links = Links.for_request(request)
    if fmt == "xml":
        return _document(nuds.item_nuds(item, links=links), "application/xml")
    graph = nomisma.new_graph()
    nomisma.add_item(graph, item, links=links)
    for specimen in nomisma.public_specimens().filter(item=item):
        nomisma.add_specimen(graph, specimen, item=item, links=links)
    return _rdf(graph, fmt)


@extend_schema(
    tags=[TAG],
    summary="A specimen as Linked Art JSON-LD",
    responses={
        (200, "application/ld+json"): OpenApiTypes.OBJECT,
        404: OpenApiResponse(description="No such public record"),
    },
)
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([JSONLD])
def specimen_linked_art(request, pk: int):
    specimen, item = _specimen(request, pk)
    document = linked_art.specimen_object(specimen, item=item, links=Links.for_request(request))
    return _document(json.dumps(document, ensure_ascii=False), linked_art.CONTENT_TYPE)


@extend_schema(
    tags=[TAG],
    summary="IIIF Presentation 3 manifest of a specimen",
    description="One canvas per side (obverse first), labels, metadata, rights, `seeAlso` the NUDS and RDF records.",
    responses={
        (200, "application/ld+json"): OpenApiTypes.OBJECT,
        404: OpenApiResponse(description="No public specimen with images here"),
    },
)
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([JSONLD])
def iiif_manifest(request, pk: int):
    specimen, item = _specimen(request, pk)
    manifest = iiif.specimen_manifest(specimen, item=item, links=Links.for_request(request))
    if manifest is None:
        raise Http404("This specimen has no images served here.")
    return _document(iiif.as_json(manifest), iiif.MANIFEST_CONTENT_TYPE)


@extend_schema(
    tags=[TAG],
    summary="IIIF Presentation 3 collection of a type",
    description="The manifests of the type's public specimens that have images.",
    responses={(200, "application/ld+json"): OpenApiTypes.OBJECT, 404: OpenApiResponse(description="No such item")},
)
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([JSONLD])
def iiif_item_collection(request, pk: int):
    item = _item(request, pk)
    specimens = (
        selectors.specimen_queryset(user=request.user)
        .filter(item=item)
        .prefetch_related("images")
        .order_by("record_id")
    )
    collection = iiif.item_collection(item, specimens=specimens, links=Links.for_request(request))
    return _document(iiif.as_json(collection), iiif.MANIFEST_CONTENT_TYPE)


def _image(request: HttpRequest, pk: int) -> SpecimenImage:
    specimens = selectors.specimen_queryset(user=request.user)
    image = get_object_or_404(SpecimenImage.objects.filter(specimen__in=specimens), pk=pk)
    if not iiif.has_service(image):
        raise Http404("This image has no IIIF tiles yet (manage.py iiif_tiles makes them).")
    return image


@extend_schema(
    tags=[TAG],
    summary="IIIF Image API 3 service of a catalogue image (level 0)",
    description=(
        "`info.json`: the image's size and the static tiles and sizes that exist (made when the image was stored)."
    ),
    responses={
        (200, "application/ld+json"): OpenApiTypes.OBJECT,
        404: OpenApiResponse(description="No such public image with tiles"),
    },
)
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([JSONLD])
def iiif_image_info(request, pk: int):
    image = _image(request, pk)
    info = iiif.image_info(image, links=Links.for_request(request))
    return _document(json.dumps(info), iiif.IMAGE_INFO_CONTENT_TYPE)


@extend_schema(exclude=True)
@api_view(["GET"])
@permission_classes([AllowAny])
def iiif_image_base(request, pk: int):
    """The service's base URI redirects to its description, as the Image API asks."""
    _image(request, pk)
    return _cors(HttpResponseRedirect(f"{Links.for_request(request).image_service(pk)}/info.json", status=303))


@extend_schema(
    tags=[TAG],
    summary="A tile or size of a catalogue image (IIIF Image API 3, level 0)",
    description=(
        "Only the regions and sizes listed in `info.json` exist: `full/max`, `full/{w},{h}` for each listed "
        "size, and `{x},{y},{w},{h}/{w},{h}` for each tile; rotation `0`, quality `default`, format `jpg`."
    ),
    responses={
        (200, "image/jpeg"): OpenApiTypes.BINARY,
        404: OpenApiResponse(description="Not a file of this level 0 service"),
    },
)
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([JPEG])
def iiif_image_file(request, pk: int, region: str, size: str, rotation: str, filename: str):
    image = _image(request, pk)
    if rotation != "0" or filename != "default.jpg":
        raise Http404("Level 0: rotation 0, quality default, format jpg only.")
    name = iiif.image_tile_name(image, region=region, size=size)
    if name is None:
        raise Http404("No such region and size; info.json lists those that exist.")
    try:
        handle = default_storage.open(name, "rb")
    except (FileNotFoundError, OSError) as exc:
        raise Http404("The tile file is missing.") from exc
    return _cors(FileResponse(handle, content_type="image/jpeg"), max_age=CACHE_SECONDS * 24)


VOID_RESPONSES = {
    (200, "text/turtle"): OpenApiTypes.STR,
    (200, "application/ld+json"): OpenApiTypes.OBJECT,
    (200, "application/rdf+xml"): OpenApiTypes.STR,
}
VOID_DESCRIPTION = "Title, description, publisher, licence, URI space, the dump's address and object counts."


def _void(request, fmt: str) -> HttpResponse:
    graph = nomisma.new_graph()
    counts = {
        "NumismaticObject": nomisma.public_specimens().count(),
        "TypeSeriesItem": nomisma.public_items().count(),
    }
    nomisma.dataset_description(graph, links=Links.for_request(request), counts=counts)
    return _rdf(graph, fmt)


@extend_schema(
    tags=[TAG],
    summary="VoID description of the published dataset (for Nomisma.org), by content negotiation",
    description=f"{VOID_DESCRIPTION} This address is the dataset's URI; the Accept header picks the serialisation.",
    responses=VOID_RESPONSES,
)
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes(RDF_RENDERERS)
def void(request):
    return _void(request, request.accepted_renderer.format)


@extend_schema(
    tags=[TAG],
    summary="VoID description of the published dataset, in one serialisation",
    description=VOID_DESCRIPTION,
    parameters=[OpenApiParameter("fmt", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(RDF_FORMATS))],
    responses=VOID_RESPONSES,
)
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes(RDF_RENDERERS)
def void_document(request, fmt: str):
    return _void(request, fmt)


@extend_schema(
    tags=[TAG],
    summary="The whole dataset as RDF/XML (the dump Nomisma.org harvests)",
    description="Written by `manage.py export_rdf` (run it after imports, or nightly); 404 until it has run once.",
    responses={(200, "application/rdf+xml"): OpenApiTypes.STR, 404: OpenApiResponse(description="No dump written yet")},
)
@api_view(["GET"])
@permission_classes([AllowAny])
@renderer_classes([RDFXML])
def rdf_dump(request):
    path = settings.OBVERSE_LINKED_DATA_DIR / nomisma.DUMP_NAME
    if not path.is_file():
        raise Http404("No dump yet: run manage.py export_rdf.")
    return _cors(FileResponse(path.open("rb"), content_type="application/rdf+xml"))


@require_GET
def iiif_viewer(request: HttpRequest, pk: int) -> HttpResponse:
    """Mirador, served from our static files, opening the specimen's manifest.

    Mirador's styling library (Emotion, in MUI) injects <style> elements, so this one page allows
    inline style; scripts stay ours only (no inline script), as on every page.
    """
    specimen, _ = _specimen(request, pk)
    if not any(iiif.has_service(image) for image in specimen.images.all()):
        raise Http404("This specimen has no images served here.")
    manifest_url = Links.for_request(request).manifest(specimen.pk)
    response = render(request, "collection/iiif_viewer.html", {"specimen": specimen, "manifest_url": manifest_url})
    response["Content-Security-Policy"] = viewer_policy()
    return response


def viewer_policy() -> str:
    """The site's policy with inline style allowed (Mirador's injected <style> elements) and data: images."""
    directives = {name: list(sources) for name, sources in settings.OBVERSE_CONTENT_SECURITY_POLICY.items()}
    directives["style-src"] = [*directives.get("style-src", ["'self'"]), "'unsafe-inline'"]
    directives["img-src"] = [*directives.get("img-src", ["'self'"]), "data:"]
    return "; ".join(" ".join([name, *sources]) for name, sources in directives.items())
