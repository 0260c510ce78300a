"""Nomisma linked data out: specimens and types as RDF in the Nomisma ontology (``nmo:``), the
dataset's VoID description, and the full dump that Nomisma.org harvests from partner collections.

Follows Nomisma's "How to contribute data": each coin a ``nmo:NumismaticObject`` at its own URI
(its page here) with ``nmo:hasTypeSeriesItem`` (the OCRE/CRRO/RPC type), weight, diameter, axis,
collection, ``foaf:depiction``/``foaf:thumbnail`` per side (IIIF services declared as Numishare
does), and ``void:inDataset`` pointing at the VoID ``void:Dataset`` whose ``void:dataDump`` is
the dump. Findspots are private in this catalogue and are never published. Built with rdflib.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from rdflib import RDF, RDFS, XSD, BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCTERMS, FOAF, SKOS, VOID

from collection.linked_data import iiif
from collection.linked_data.iiif import has_service
from collection.linked_data.links import Links
from collection.linked_data.nuds import standard_year
from collection.models import Concept, ConceptKind, Item, ItemStatus, Side, Specimen, SpecimenImage

NMO = Namespace("http://nomisma.org/ontology#")
NM = Namespace("http://nomisma.org/id/")
EDM = Namespace("http://www.europeana.eu/schemas/edm/")
SVCS = Namespace("http://rdfs.org/sioc/services#")
DOAP = Namespace("http://usefulinc.com/ns/doap#")
PREFIXES = {
    "nmo": NMO,
    "nm": NM,
    "dcterms": DCTERMS,
    "foaf": FOAF,
    "skos": SKOS,
    "void": VOID,
    "edm": EDM,
    "svcs": SVCS,
    "doap": DOAP,
}
DUMP_NAME = "nomisma.rdf"  # RDF/XML, the form Nomisma.org's partners publish their dumps in
# rdflib's names for the three serialisations served and dumped.
SERIALISATIONS = {"ttl": "turtle", "jsonld": "json-ld", "rdf": "xml"}
# Concept kind → the Nomisma property a type description uses for it.
KIND_PROPERTIES = {
    ConceptKind.AUTHORITY.value: NMO.hasAuthority,
    "issuer": NMO.hasIssuer,
    ConceptKind.STATE.value: NMO.hasAuthority,
    ConceptKind.MINT.value: NMO.hasMint,
    ConceptKind.REGION.value: NMO.hasRegion,
    ConceptKind.MATERIAL.value: NMO.hasMaterial,
    ConceptKind.DENOMINATION.value: NMO.hasDenomination,
    ConceptKind.OBJECT_TYPE.value: NMO.representsObjectType,
}


def new_graph() -> Graph:
    graph = Graph()
    for prefix, namespace in PREFIXES.items():
        graph.bind(prefix, namespace)
    return graph


def _decimal(value: Decimal) -> Literal:
    return Literal(str(value.normalize()), datatype=XSD.decimal)


def _integer(value: int) -> Literal:
    return Literal(value, datatype=XSD.integer)


# A specimen's measurements: its field, the Nomisma property and how the value is written.
MEASUREMENTS = (
    ("weight_g", NMO.hasWeight, _decimal),
    ("diameter_mm", NMO.hasDiameter, _decimal),
    ("die_axis", NMO.hasAxis, _integer),
)


def _concept(concept: Concept, links: Links) -> URIRef:
    """A term's Nomisma (or other) URI; our own concept page for a term that has none."""
    return URIRef(concept.uri) if concept.uri else URIRef(links.concept(concept.kind, concept.slug))


def type_uri(item: Item, links: Links) -> URIRef:
    """What a specimen's ``nmo:hasTypeSeriesItem`` names: the type corpus's URI, else our item."""
    return URIRef(item.uri) if item.uri else URIRef(links.item(item.pk))


def add_item(graph: Graph, item: Item, *, links: Links) -> URIRef:
    """Describe a type (``nmo:TypeSeriesItem``) at its page's URI, matched to its corpus URI."""
    node = URIRef(links.item(item.pk))
    graph.add((node, RDF.type, NMO.TypeSeriesItem))
    graph.add((node, SKOS.prefLabel, Literal(item.reference or item.title, lang="en")))
    if item.title and item.reference:
        graph.add((node, SKOS.definition, Literal(item.title, lang="en")))
    if item.uri:
        graph.add((node, SKOS.exactMatch, URIRef(item.uri)))
    for concept in item.concepts.all():
        prop = KIND_PROPERTIES.get(concept.kind)
        if prop is not None:
            graph.add((node, prop, _concept(concept, links)))
    if item.date_from is not None:
        graph.add((node, NMO.hasStartDate, Literal(standard_year(item.date_from), datatype=XSD.gYear)))
    if item.date_to is not None:
        graph.add((node, NMO.hasEndDate, Literal(standard_year(item.date_to), datatype=XSD.gYear)))
    for side, prop in ((Side.OBVERSE, NMO.hasObverse), (Side.REVERSE, NMO.hasReverse)):
        legend, description = getattr(item, f"{side}_legend"), getattr(item, f"{side}_description")
        portraits = [c for c in item.concepts.all() if c.kind == ConceptKind.PORTRAIT] if side == Side.OBVERSE else []
        if not (legend or description or portraits):
            continue
        face = BNode()
        graph.add((node, prop, face))
        if legend:
            graph.add((face, NMO.hasLegend, Literal(legend)))
        if description:
            graph.add((face, DCTERMS.description, Literal(description, lang="en")))
        for concept in portraits:
            graph.add((face, NMO.hasPortrait, _concept(concept, links)))
    graph.add((node, VOID.inDataset, URIRef(links.dataset())))
    return node


def _image_url(image: SpecimenImage, links: Links, *, thumbnail: bool = False) -> str:
    """The image's address: through our IIIF service where it has one, else the file or the source's link."""
    if has_service(image):
        return iiif.thumbnail_url(image, links) if thumbnail else iiif.full_url(image, links)
    if thumbnail and image.thumbnail:
        return links.url(image.thumbnail.url)
    if image.image:
        return links.url(image.image.url)
    return image.remote_url


def add_specimen(graph: Graph, specimen: Specimen, *, item: Item | None, links: Links) -> URIRef:
    """Describe a specimen (``nmo:NumismaticObject``) at its page's URI. ``item``: its type, if public."""
    node = URIRef(links.specimen(specimen.pk))
    graph.add((node, RDF.type, NMO.NumismaticObject))
    graph.add((node, DCTERMS.title, Literal(specimen.title or specimen.record_id, lang="en")))
    graph.add((node, DCTERMS.identifier, Literal(specimen.record_id)))
    if item is not None:
        graph.add((node, NMO.hasTypeSeriesItem, type_uri(item, links)))
        for uri in (item.attributes or {}).get("other_uris", []):
            graph.add((node, NMO.hasTypeSeriesItem, URIRef(uri)))
    for field, prop, literal in MEASUREMENTS:
        value = getattr(specimen, field)
        if value is not None:
            graph.add((node, prop, literal(value)))
    collection_uri = (specimen.attributes or {}).get("collection_uri")
    if collection_uri:
        graph.add((node, NMO.hasCollection, URIRef(collection_uri)))
    elif specimen.holding_collection:
        graph.add((node, DCTERMS.provenance, Literal(specimen.holding_collection)))  # a name without a URI
    _add_depictions(graph, node, specimen, links)
    graph.add((node, VOID.inDataset, URIRef(links.dataset())))
    return node


def _add_depictions(graph: Graph, node: URIRef, specimen: Specimen, links: Links) -> None:
    """The manifest, and each side's first image (``foaf:depiction``, ``foaf:thumbnail``, its IIIF service)."""
    manifest = None
    images = [i for i in specimen.images.all() if i.side in (Side.OBVERSE, Side.REVERSE) and i.sort_order == 0]
    if any(has_service(image) for image in specimen.images.all()):
        manifest = URIRef(links.manifest(specimen.pk))
        graph.add((node, RDFS.seeAlso, manifest))
    for image in images:
        full, thumb = _image_url(image, links), _image_url(image, links, thumbnail=True)
        if not full:
            continue
        face = BNode()
        graph.add((node, NMO.hasObverse if image.side == Side.OBVERSE else NMO.hasReverse, face))
        graph.add((face, FOAF.depiction, URIRef(full)))
        if thumb and thumb != full:
            graph.add((face, FOAF.thumbnail, URIRef(thumb)))
        if has_service(image):
            _add_image_service(graph, image, URIRef(full), manifest, links)


def _add_image_service(graph: Graph, image: SpecimenImage, full: URIRef, manifest: URIRef, links: Links) -> None:
    """Numishare's way of telling aggregators that a depiction is a IIIF image."""
    service = URIRef(links.image_service(image.pk))
    graph.add((full, RDF.type, EDM.WebResource))
    graph.add((full, SVCS.has_service, service))
    graph.add((full, DCTERMS.isReferencedBy, manifest))
    graph.add((service, RDF.type, SVCS.Service))
    graph.add((service, DCTERMS.conformsTo, URIRef("http://iiif.io/api/image")))
    graph.add((service, DOAP.implements, URIRef("http://iiif.io/api/image/3/level0.json")))


def dataset_description(graph: Graph, *, links: Links, counts: dict[str, int] | None = None) -> URIRef:
    """The VoID ``void:Dataset``: title, description, publisher and licence (all four required by
    Nomisma), the URI space, the dump's address and, when known, how many objects it holds."""
    node = URIRef(links.dataset())
    graph.add((node, RDF.type, VOID.Dataset))
    graph.add((node, DCTERMS.title, Literal(settings.OBVERSE_DATASET_TITLE, lang="en")))
    graph.add((node, DCTERMS.description, Literal(settings.OBVERSE_DATASET_DESCRIPTION, lang="en")))
    publisher = settings.OBVERSE_DATASET_PUBLISHER
    graph.add((node, DCTERMS.publisher, URIRef(publisher) if publisher.startswith("http") else Literal(publisher)))
    graph.add((node, DCTERMS.license, URIRef(settings.OBVERSE_DATASET_LICENCE)))
    graph.add((node, FOAF.homepage, URIRef(links.url("/"))))
    graph.add((node, VOID.uriSpace, Literal(links.url("/"))))
    graph.add((node, VOID.dataDump, URIRef(links.dump())))
    for label, count in (counts or {}).items():
        part = BNode()
        graph.add((node, VOID.classPartition, part))
        graph.add((part, VOID["class"], NMO[label]))
        graph.add((part, VOID.entities, Literal(count, datatype=XSD.integer)))
    return node


def public_specimens() -> QuerySet[Specimen]:
    """Specimens that are published: public ones, with what their descriptions read, in few queries."""
    images = SpecimenImage.objects.order_by("sort_order", "side", "pk")
    return (
        Specimen.objects.filter(is_public=True)
        .select_related("source", "item", "item__source")
        .prefetch_related(Prefetch("images", queryset=images))
        .order_by("record_id")
    )


def public_items() -> QuerySet[Item]:
    return Item.objects.filter(status=ItemStatus.PUBLISHED).prefetch_related("concepts").order_by("pk")


def visible_item(specimen: Specimen) -> Item | None:
    """A specimen's type as the public sees it: only a published one is linked."""
    item = specimen.item
    return item if item is not None and item.status == ItemStatus.PUBLISHED else None


def dump_graph(
    *, links: Links, specimens: Iterable[Specimen] | None = None, items: Iterable[Item] | None = None
) -> Graph:
    """The whole published dataset: the VoID description, every published type and public specimen."""
    graph = new_graph()
    specimens = list(public_specimens() if specimens is None else specimens)
    items = list(public_items() if items is None else items)
    for item in items:
        add_item(graph, item, links=links)
    for specimen in specimens:
        add_specimen(graph, specimen, item=visible_item(specimen), links=links)
    dataset_description(graph, links=links, counts={"NumismaticObject": len(specimens), "TypeSeriesItem": len(items)})
    return graph


def format_for(path: Path, fmt: str | None = None) -> str:
    """The rdflib serialisation for a file: ``fmt`` (ttl, jsonld, rdf) if given, else from its suffix."""
    fmt = fmt or {".ttl": "ttl", ".jsonld": "jsonld", ".json": "jsonld", ".rdf": "rdf", ".xml": "rdf"}.get(
        Path(path).suffix.lower()
    )
    if fmt not in SERIALISATIONS:
        raise ValueError(f"say the format of {path}: --format ttl, jsonld or rdf (or name it .ttl, .jsonld, .rdf)")
    return SERIALISATIONS[fmt]


def dataset_export(*, path: Path, links: Links, fmt: str | None = None) -> dict[str, int]:
    """Write the dump (``dump_graph``) to ``path``, replacing it only once the new one is whole.

    The file may be served while it is rewritten (``/linked-data/nomisma.rdf``), hence the
    temporary file and the rename. Returns the counts: specimens, items, triples.
    """
    path = Path(path)
    serialisation = format_for(path, fmt)
    specimens, items = list(public_specimens()), list(public_items())
    graph = dump_graph(links=links, specimens=specimens, items=items)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    graph.serialize(destination=str(partial), format=serialisation, encoding="utf-8")
    partial.replace(path)
    return {"specimens": len(specimens), "items": len(items), "triples": len(graph)}
