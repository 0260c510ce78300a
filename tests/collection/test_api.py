"""Read-only catalogue API v1: items, specimens, concepts, facets, search, and the OpenAPI schema."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from collection.models import Item, ItemStatus, Side
from collection.search import item_refresh_search
from tests.factories import make_concept, make_image, make_item, make_source, make_specimen


def c_uri(slug: str) -> str:
    return f"http://nomisma.org/id/{slug}"


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def catalogue(db) -> dict:
    source = make_source(name="ANS", credit="Metadata © American Numismatic Society, ODbL")
    c = {
        "constantius": make_concept("authority", "Constantius II", uri="http://nomisma.org/id/constantius_ii"),
        "cnp": make_concept("mint", "Constantinople", uri="http://nomisma.org/id/constantinople"),
        "rome": make_concept("mint", "Rome", uri="http://nomisma.org/id/rome"),
    }
    c["item"] = make_item(
        reference="RIC VIII Constantinople 37",
        title="Billon AE3",
        uri="http://numismatics.org/ocre/id/ric.8.cnp.37",
        date_from=337,
        date_to=340,
        obverse_legend="[DV] CONSTANTI-NVS PT AVGG",
        source=source,
        concepts=[c["constantius"], c["cnp"]],
    )
    c["rome_item"] = make_item(reference="RIC VI Rome 1", title="Follis", concepts=[c["rome"]])
    c["draft"] = make_item(reference="DRAFT", title="Draft", status=ItemStatus.DRAFT, concepts=[c["rome"]])
    c["specimen"] = make_specimen(
        c["item"], record_id="1944.100.23777", weight_g=Decimal("1.45"), findspot="secret field", provenance="secret"
    )
    make_image(c["specimen"], Side.OBVERSE)
    c["hidden"] = make_specimen(c["item"], record_id="HIDDEN.1", is_public=False)
    c["of_draft"] = make_specimen(c["draft"], record_id="OF.DRAFT")
    item_refresh_search(item_ids=Item.objects.values_list("pk", flat=True))
    return c


@pytest.mark.django_db
class TestItemsEndpoint:
    url = reverse("item-list")

    def test_it_lists_published_items_with_concepts_dates_and_links(self, api, catalogue):
        response = api.get(self.url)
        assert response.status_code == 200
        body = response.json()
        assert body["count"] == 2
        item = next(row for row in body["results"] if row["id"] == catalogue["item"].pk)
        assert item["reference"] == "RIC VIII Constantinople 37"
        assert item["uri"] == "http://numismatics.org/ocre/id/ric.8.cnp.37"
        assert item["status"] == "published"
        assert (item["date_from"], item["date_to"]) == (337, 340)
        assert item["obverse_legend"] == "[DV] CONSTANTI-NVS PT AVGG"
        assert {
            "kind": "mint",
            "slug": "constantinople",
            "label": "Constantinople",
            "uri": "http://nomisma.org/id/constantinople",
        } in item["concepts"]
        assert item["url"].endswith(reverse("item-detail", args=[catalogue["item"].pk]))
        assert item["page_url"].endswith(catalogue["item"].get_absolute_url())

    def test_it_finds_an_item_by_exact_type_uri(self, api, catalogue):
        body = api.get(self.url, {"uri": catalogue["item"].uri}).json()
        assert [row["id"] for row in body["results"]] == [catalogue["item"].pk]
        assert api.get(self.url, {"uri": "http://numismatics.org/ocre/id/ric.8"}).json()["count"] == 0

    def test_it_takes_the_same_filters_as_the_collection_page(self, api, catalogue):
        body = api.get(self.url, {"mint": "rome"}).json()
        assert [row["id"] for row in body["results"]] == [catalogue["rome_item"].pk]
        body = api.get(self.url, {"q": "CONSTANTI", "date_from": 330}).json()
        assert [row["id"] for row in body["results"]] == [catalogue["item"].pk]

    def test_invalid_filters_answer_400_naming_the_filter(self, api, catalogue):
        response = api.get(self.url, {"date_to": "later"})
        assert response.status_code == 400
        assert "date_to" in response.json()

    def test_drafts_are_hidden_from_the_public(self, api, catalogue):
        response = api.get(reverse("item-detail", args=[catalogue["draft"].pk]))
        assert response.status_code == 404
        assert catalogue["draft"].title not in response.content.decode()
        assert catalogue["draft"].pk not in [row["id"] for row in api.get(self.url).json()["results"]]

    def test_curators_see_drafts(self, api, catalogue, curator):
        api.force_authenticate(curator)
        body = api.get(self.url, {"status": "draft"}).json()
        assert [row["id"] for row in body["results"]] == [catalogue["draft"].pk]

    def test_detail_lists_public_specimens_with_images(self, api, catalogue):
        body = api.get(reverse("item-detail", args=[catalogue["item"].pk])).json()
        assert [s["record_id"] for s in body["specimens"]] == ["1944.100.23777"]
        assert body["specimens"][0]["images"][0]["side"] == "obverse"
        assert body["specimens"][0]["images"][0]["url"].startswith("http://testserver/media/")

    def test_it_is_read_only(self, api, catalogue, admin_user):
        api.force_authenticate(admin_user)
        before = list(Item.objects.order_by("pk").values_list("pk", "title"))
        assert api.post(self.url, {"title": "New"}).status_code == 405
        assert api.delete(reverse("item-detail", args=[catalogue["item"].pk])).status_code == 405
        assert list(Item.objects.order_by("pk").values_list("pk", "title")) == before

    def test_clients_choose_the_page_size(self, api, catalogue):
        body = api.get(self.url, {"page_size": 1}).json()
        assert len(body["results"]) == 1
        assert body["next"]

    def test_query_count_is_pinned(self, api, catalogue, django_assert_num_queries):
        for n in range(10):
            make_item(title=f"More {n}", concepts=[catalogue["rome"], catalogue["constantius"]])
        with django_assert_num_queries(3):  # count, page with source, concepts
            api.get(self.url)


@pytest.mark.django_db
class TestSpecimensEndpoint:
    url = reverse("specimen-list")

    def test_it_lists_public_specimens_without_findspot_or_provenance(self, api, catalogue):
        body = api.get(self.url).json()
        record_ids = {row["record_id"] for row in body["results"]}
        assert record_ids == {"1944.100.23777", "OF.DRAFT"}
        for row in body["results"]:
            assert "findspot" not in row
            assert "provenance" not in row
        assert "secret" not in api.get(self.url).content.decode()

    def test_it_links_only_to_published_items(self, api, catalogue):
        rows = {row["record_id"]: row for row in api.get(self.url).json()["results"]}
        assert rows["1944.100.23777"]["item"]["uri"] == catalogue["item"].uri
        assert rows["OF.DRAFT"]["item"] is None

    def test_it_filters_by_item_uri(self, api, catalogue):
        body = api.get(self.url, {"item_uri": catalogue["item"].uri}).json()
        assert [row["record_id"] for row in body["results"]] == ["1944.100.23777"]

    def test_hidden_specimens_are_not_found(self, api, catalogue):
        response = api.get(reverse("specimen-detail", args=[catalogue["hidden"].pk]))
        assert response.status_code == 404
        assert catalogue["hidden"].record_id not in response.content.decode()

    def test_query_count_is_pinned(self, api, catalogue, django_assert_num_queries):
        for n in range(10):
            make_image(make_specimen(catalogue["item"], record_id=f"MORE.{n}"))
        with django_assert_num_queries(3):  # count, page with item and source, images
            api.get(self.url)


@pytest.mark.django_db
class TestConceptsEndpoint:
    def test_it_lists_concepts_filtered_by_kind(self, api, catalogue):
        body = api.get(reverse("concept-list"), {"kind": "mint"}).json()
        assert [row["slug"] for row in body["results"]] == ["constantinople", "rome"]
        assert body["results"][1]["uri"] == "http://nomisma.org/id/rome"
        assert body["results"][1]["page_url"].endswith(catalogue["rome"].get_absolute_url())

    def test_query_count_is_pinned(self, api, catalogue, django_assert_num_queries):
        with django_assert_num_queries(2):
            api.get(reverse("concept-list"))


@pytest.mark.django_db
class TestFacetsEndpoint:
    def test_it_counts_concepts_for_the_current_filter(self, api, catalogue):
        body = api.get(reverse("api-facets"), {"q": "constanti"}).json()
        assert body["count"] == 1
        assert (body["earliest"], body["latest"]) == (337, 340)
        facets = {f["kind"]: {v["slug"]: v["count"] for v in f["values"]} for f in body["facets"]}
        assert facets["mint"] == {"constantinople": 1}
        assert facets["authority"] == {"constantius-ii": 1}

    def test_a_selected_kind_keeps_its_alternatives(self, api, catalogue):
        body = api.get(reverse("api-facets"), {"mint": "rome"}).json()
        mint = next(f for f in body["facets"] if f["kind"] == "mint")
        assert {v["slug"]: (v["count"], v["selected"]) for v in mint["values"]} == {
            "rome": (1, True),
            "constantinople": (1, False),
        }
        assert body["count"] == 1

    def test_invalid_filters_answer_400_naming_the_filter(self, api, catalogue):
        response = api.get(reverse("api-facets"), {"mint": "no spaces allowed"})
        assert response.status_code == 400
        assert "mint" in response.json()


@pytest.mark.django_db
class TestSearchEndpoint:
    def test_it_ranks_matching_items(self, api, catalogue):
        body = api.get(reverse("api-search"), {"q": "stantin"}).json()
        assert [row["id"] for row in body["results"]] == [catalogue["item"].pk]

    def test_it_requires_a_query(self, api, catalogue):
        response = api.get(reverse("api-search"))
        assert response.status_code == 400
        assert "q" in response.json()


@pytest.mark.django_db
class TestSchema:
    def test_it_generates_without_errors_or_warnings_that_matter(self):
        GENERATOR_STATS.reset()
        schema = SchemaGenerator().get_schema(request=None, public=True)
        # Enum *naming* collisions (several models have a "status") only affect generated names.
        messages = [m for m in GENERATOR_STATS._warn_cache if "enum naming encountered" not in m]
        assert messages == []
        assert not GENERATOR_STATS._error_cache
        params = {p["name"]: p for p in schema["paths"]["/api/v1/items/"]["get"]["parameters"]}
        assert {"q", "uri", "mint", "authority", "date_from", "date_to", "sort", "page"} <= set(params)
        assert params["mint"]["schema"]["type"] == "array"
        facet_params = {p["name"] for p in schema["paths"]["/api/v1/facets/"]["get"]["parameters"]}
        assert {"q", "mint"} <= facet_params
        specimen_fields = schema["components"]["schemas"]["Specimen"]["properties"]
        assert "findspot" not in specimen_fields
        assert "provenance" not in specimen_fields

    def test_the_schema_and_docs_pages_are_served(self, client, db):
        assert client.get(reverse("api-schema")).status_code == 200
        assert client.get(reverse("api-schema"), {"format": "json"})["Content-Type"].startswith("application/")
        docs = client.get(reverse("api-docs"))
        assert docs.status_code == 200
        html = docs.content.decode()
        assert "js/apidocs.js" in html  # rendered by our own script…
        assert "cdn." not in html  # …so the page works without internet access
        assert 'data-schema-url="/api/schema/"' in html
