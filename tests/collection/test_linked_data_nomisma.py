"""Nomisma linked data out: RDF per record by content negotiation, VoID, and the dump queried with SPARQL.

Everything is parsed back with rdflib, in each of the three serialisations served.
"""

from __future__ import annotations

import json
import shutil
from decimal import Decimal

import pytest
from django.core.management import call_command
from rdflib import RDF, Graph, Literal, URIRef
from rdflib import namespace as ns
from rdflib.namespace import DCTERMS, FOAF, VOID

from collection.importers.nuds import import_nuds_paths
from collection.linked_data.nomisma import NMO
from collection.models import ItemStatus, Specimen
from tests.factories import make_concept, make_image, make_item, make_specimen

BASE = "https://coins.example.org"
# The SPARQL question a numismatist asks of a partner's data: the coins of one RIC type, and their weights.
WEIGHTS_OF_TYPE = """
PREFIX nmo: <http://nomisma.org/ontology#>
PREFIX dcterms: <http://purl.org/dc/terms/>
SELECT ?coin ?id ?weight WHERE {
  ?coin a nmo:NumismaticObject ;
        nmo:hasTypeSeriesItem ?type ;
        dcterms:identifier ?id .
  OPTIONAL { ?coin nmo:hasWeight ?weight }
} ORDER BY ?id
"""


@pytest.fixture
def dev_records(db, ans_dir, tmp_path):
    """Every 10th ANS record (209 coins) imported without photos: their image links are the ANS's."""
    folder = tmp_path / "nuds"
    folder.mkdir()
    for path in sorted((ans_dir / "nuds").glob("*.xml"))[::10]:
        shutil.copy(path, folder)
    result = import_nuds_paths([folder])
    assert not result.failed
    return folder


def _graph(response, fmt: str) -> Graph:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return Graph().parse(data=body, format=fmt)


@pytest.mark.django_db
class TestRecords:
    def test_a_specimen_in_every_serialisation(self, client):
        item = make_item(uri="http://numismatics.org/ocre/id/ric.9.med.8B", reference="RIC IX Mediolanum 8B")
        specimen = make_specimen(
            item,
            title="Solidus. X.1",
            weight_g=Decimal("4.440"),
            diameter_mm=Decimal("21.50"),
            die_axis=6,
            holding_collection="American Numismatic Society",
            attributes={"collection_uri": "http://nomisma.org/id/ans"},
            findspot="A private field",
        )
        for suffix, fmt, media_type in (
            ("ttl", "turtle", "text/turtle"),
            ("jsonld", "json-ld", "application/ld+json"),
            ("rdf", "xml", "application/rdf+xml"),
        ):
            response = client.get(f"/specimens/{specimen.pk}.{suffix}")
            assert response.status_code == 200
            assert response["Content-Type"].startswith(media_type)
            assert response["Access-Control-Allow-Origin"] == "*"
            graph = _graph(response, fmt)
            coin = URIRef(f"http://testserver/specimens/{specimen.pk}/")
            assert (coin, RDF.type, NMO.NumismaticObject) in graph
            assert (coin, NMO.hasTypeSeriesItem, URIRef(item.uri)) in graph
            assert graph.value(coin, NMO.hasWeight) == Literal("4.44", datatype=ns.XSD.decimal)
            assert graph.value(coin, NMO.hasDiameter) == Literal("21.5", datatype=ns.XSD.decimal)
            assert graph.value(coin, NMO.hasAxis) == Literal(6, datatype=ns.XSD.integer)
            assert graph.value(coin, NMO.hasCollection) == URIRef("http://nomisma.org/id/ans")
            assert graph.value(coin, DCTERMS.identifier) == Literal(specimen.record_id)
            assert graph.value(coin, VOID.inDataset) == URIRef("http://testserver/linked-data/void")
            assert "A private field" not in graph.serialize(format="nt")

    def test_depictions_are_per_side_and_say_they_are_iiif(self, client):
        specimen = make_specimen(make_item())
        image = make_image(specimen)
        call_command("iiif_tiles", "--no-progress")
        graph = _graph(client.get(f"/specimens/{specimen.pk}.ttl"), "turtle")
        coin = URIRef(f"http://testserver/specimens/{specimen.pk}/")
        obverse = graph.value(coin, NMO.hasObverse)
        depiction = graph.value(obverse, FOAF.depiction)
        assert str(depiction) == f"http://testserver/iiif/images/{image.pk}/full/max/0/default.jpg"
        assert str(graph.value(obverse, FOAF.thumbnail)).endswith("/full/64,64/0/default.jpg")
        service = graph.value(depiction, URIRef("http://rdfs.org/sioc/services#has_service"))
        assert str(service) == f"http://testserver/iiif/images/{image.pk}"
        assert client.get(str(depiction).removeprefix("http://testserver")).status_code == 200

    def test_the_page_answers_rdf_with_a_303_and_html_with_the_page(self, client):
        specimen = make_specimen(make_item())
        response = client.get(f"/specimens/{specimen.pk}/", HTTP_ACCEPT="text/turtle")
        assert response.status_code == 303 and response["Location"] == f"/specimens/{specimen.pk}.ttl"
        assert "Accept" in response["Vary"]
        response = client.get(f"/items/{specimen.item_id}/", HTTP_ACCEPT="application/rdf+xml;q=1, text/html;q=0.5")
        assert response.status_code == 303 and response["Location"] == f"/items/{specimen.item_id}.rdf"
        page = client.get(f"/specimens/{specimen.pk}/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
        assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
        assert "Accept" in page["Vary"]

    def test_an_item_is_a_type_series_item_with_its_specimens(self, client):
        mint = make_concept("mint", "Mediolanum", uri="http://nomisma.org/id/mediolanum")
        item = make_item(uri="http://numismatics.org/ocre/id/ric.9.med.8B", date_from=-44, date_to=14, concepts=[mint])
        specimen = make_specimen(item)
        make_specimen(item, is_public=False)
        graph = _graph(client.get(f"/items/{item.pk}.jsonld"), "json-ld")
        node = URIRef(f"http://testserver/items/{item.pk}/")
        assert (node, RDF.type, NMO.TypeSeriesItem) in graph
        assert (node, NMO.hasMint, URIRef(mint.uri)) in graph
        assert graph.value(node, NMO.hasStartDate) == Literal("-0044", datatype=ns.XSD.gYear)
        coins = set(graph.subjects(RDF.type, NMO.NumismaticObject))
        assert coins == {URIRef(f"http://testserver/specimens/{specimen.pk}/")}

    def test_an_unpublished_type_is_not_named(self, client):
        specimen = make_specimen(make_item(status=ItemStatus.DRAFT))
        graph = _graph(client.get(f"/specimens/{specimen.pk}.ttl"), "turtle")
        assert not list(graph.objects(None, NMO.hasTypeSeriesItem))
        assert client.get(f"/items/{specimen.item_id}.ttl").status_code == 404

    def test_an_accept_header_no_format_satisfies_is_refused(self, client):
        specimen = make_specimen(make_item())
        assert client.get(f"/specimens/{specimen.pk}.ttl", HTTP_ACCEPT="image/png").status_code == 406


@pytest.mark.django_db
class TestVoid:
    def test_it_has_what_nomisma_requires(self, client, settings):
        settings.OBVERSE_DATASET_PUBLISHER = "Test Coin Cabinet"
        make_specimen(make_item())
        graph = _graph(client.get("/linked-data/void"), "turtle")
        dataset = URIRef("http://testserver/linked-data/void")
        assert (dataset, RDF.type, VOID.Dataset) in graph
        for prop in (DCTERMS.title, DCTERMS.description, DCTERMS.publisher, DCTERMS.license, VOID.dataDump):
            assert graph.value(dataset, prop) is not None, prop
        assert str(graph.value(dataset, DCTERMS.publisher)) == "Test Coin Cabinet"
        assert str(graph.value(dataset, VOID.dataDump)) == "http://testserver/linked-data/nomisma.rdf"
        json.loads(client.get("/linked-data/void.jsonld").content)


@pytest.mark.django_db
class TestDump:
    def test_sparql_finds_the_specimens_of_a_ric_type_with_their_weights(self, dev_records, tmp_path, settings, client):
        settings.OBVERSE_LINKED_DATA_DIR = tmp_path / "ld"
        assert client.get("/linked-data/nomisma.rdf").status_code == 404  # until the dump is written
        call_command("export_rdf", "--base-url", BASE)
        response = client.get("/linked-data/nomisma.rdf")
        assert response.status_code == 200 and response["Content-Type"] == "application/rdf+xml"
        graph = _graph(response, "xml")
        public = Specimen.objects.filter(is_public=True)
        assert len(set(graph.subjects(RDF.type, NMO.NumismaticObject))) == public.count() == 209
        # The type with the most specimens in the sample, asked of the dump by its corpus URI.
        counts: dict[str, list[Specimen]] = {}
        for specimen in public.select_related("item"):
            if specimen.item and specimen.item.uri:
                counts.setdefault(specimen.item.uri, []).append(specimen)
        type_uri, expected = max(counts.items(), key=lambda pair: (len(pair[1]), pair[0]))
        rows = graph.query(WEIGHTS_OF_TYPE, initBindings={"type": URIRef(type_uri)})
        found = {str(row.id): (Decimal(str(row.weight)) if row.weight is not None else None) for row in rows}
        assert found == {s.record_id: (s.weight_g.normalize() if s.weight_g is not None else None) for s in expected}
        assert all(str(row.coin).startswith(f"{BASE}/specimens/") for row in rows)
        # ANS links stay the depictions where no photo is stored here.
        depictions = {str(o) for o in graph.objects(None, FOAF.depiction)}
        assert depictions and all(url.startswith("https://numismatics.org/") for url in depictions)

    def test_the_dump_holds_only_what_is_published(self, tmp_path):
        shown = make_specimen(make_item())
        make_specimen(make_item(), is_public=False)
        draft = make_item(status=ItemStatus.DRAFT)
        out = tmp_path / "dump.ttl"
        call_command("export_rdf", str(out), "--base-url", BASE)
        graph = Graph().parse(out, format="turtle")
        assert set(graph.subjects(RDF.type, NMO.NumismaticObject)) == {URIRef(f"{BASE}/specimens/{shown.pk}/")}
        assert URIRef(f"{BASE}/items/{draft.pk}/") not in set(graph.subjects())
        assert (URIRef(f"{BASE}/linked-data/void"), RDF.type, VOID.Dataset) in graph


@pytest.mark.django_db
def test_the_dump_costs_the_same_queries_for_more_specimens(tmp_path):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_for_dump() -> int:
        with CaptureQueriesContext(connection) as captured:
            call_command("export_rdf", str(tmp_path / "dump.ttl"), "--base-url", BASE)
        return len(captured)

    mint = make_concept("mint", "Roma", uri="http://nomisma.org/id/rome")
    for _ in range(2):
        make_image(make_specimen(make_item(concepts=[mint])))
    few = queries_for_dump()
    for _ in range(6):
        make_image(make_specimen(make_item(concepts=[mint])))
    assert queries_for_dump() == few
