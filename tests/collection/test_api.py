"""Read-only catalogue API v1: items, specimens, concepts, facets, search, and the OpenAPI schema."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command
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
        assert "date_to" in response.json()["errors"]

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
        assert "mint" in response.json()["errors"]


@pytest.mark.django_db
class TestSearchEndpoint:
    def test_it_ranks_matching_items(self, api, catalogue):
        body = api.get(reverse("api-search"), {"q": "stantin"}).json()
        assert [row["id"] for row in body["results"]] == [catalogue["item"].pk]

    def test_it_requires_a_query(self, api, catalogue):
        response = api.get(reverse("api-search"))
        assert response.status_code == 400
        assert "q" in response.json()["errors"]


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

    def test_it_validates_with_no_warning(self, tmp_path):
        # The management command CI would run: OpenAPI-valid, and not one drf-spectacular warning.
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))

    def test_every_operation_documents_its_errors_in_the_one_error_shape(self):
        schema = SchemaGenerator().get_schema(request=None, public=True)
        errors = {"$ref": "#/components/schemas/Errors"}
        api_v1 = {path: operations for path, operations in schema["paths"].items() if path.startswith("/api/v1/")}
        for path, operations in api_v1.items():
            for method, operation in operations.items():
                responses = operation["responses"]
                assert "403" in responses, (method, path)  # a refused token, anywhere
                if "{" in path or any(p["name"] == "page" for p in operation.get("parameters", [])):
                    assert "404" in responses, (method, path)
                if "requestBody" in operation:
                    assert {"400", "413", "415"} <= set(responses), (method, path)
                for code, response in responses.items():
                    if code >= "400":
                        assert response["content"]["application/json"]["schema"] == errors, (method, path, code)
                        assert response["description"], (method, path, code)
        created = schema["paths"]["/api/v1/submissions/"]["post"]["responses"]
        assert created["429"]["headers"]["Retry-After"]
        params = {p["name"]: p["schema"] for p in schema["paths"]["/api/v1/items/"]["get"]["parameters"]}
        assert (params["page_size"]["minimum"], params["page_size"]["maximum"]) == (1, 200)
        assert params["date_from"]["type"] == "integer"

    def test_operation_ids_of_v1_are_stable(self):
        # Generated clients name their methods after them: renaming one is a change of contract.
        schema = SchemaGenerator().get_schema(request=None, public=True)
        paths = {path: ops for path, ops in schema["paths"].items() if path.startswith("/api/v1/")}
        ids = {operation["operationId"] for operations in paths.values() for operation in operations.values()}
        assert ids == {
            "v1_concepts_list", "v1_concepts_retrieve", "v1_facets_retrieve", "v1_items_list", "v1_items_retrieve",
            "v1_search_list", "v1_specimens_list", "v1_specimens_retrieve", "v1_submissions_create",
            "v1_submissions_retrieve", "v1_submissions_candidates_create", "v1_submissions_none_match_create",
            "v1_submissions_objects_create",
        }  # fmt: skip

    def test_the_schema_and_docs_pages_are_served(self, client, db):
        assert client.get(reverse("api-schema")).status_code == 200
        assert client.get(reverse("api-schema"), {"format": "json"})["Content-Type"].startswith("application/")
        docs = client.get(reverse("api-docs"))
        assert docs.status_code == 200
        html = docs.content.decode()
        assert "js/apidocs.js" in html  # rendered by our own script…
        assert "cdn." not in html  # …so the page works without internet access
        assert 'data-schema-url="/api/schema/"' in html


@pytest.mark.django_db
class TestParameters:
    """Query parameters are checked, never guessed at: a bad one is a 400 naming it, in the error shape."""

    @pytest.mark.parametrize("name", ["item-list", "api-search", "api-facets"])
    def test_a_percent_sign_in_a_filter_value_is_a_400_not_a_crash(self, api, catalogue, name):
        # django-filter %-formatted the slug's message again and raised TypeError (a 500).
        response = api.get(reverse(name), {"q": "rome", "mint": ["rome", "a%b", "%s%d"]})
        assert response.status_code == 400
        assert "'a%b' is not a valid slug." in response.json()["errors"]["mint"]

    @pytest.mark.parametrize(
        ("params", "name"),
        [
            ({"page": "0"}, "page"),
            ({"page": "last"}, "page"),
            ({"page": "1.0"}, "page"),
            ({"page_size": "0"}, "page_size"),
            ({"page_size": "201"}, "page_size"),
            ({"page_size": "abc"}, "page_size"),
            ({"page_size": " 7"}, "page_size"),
            ({"page": ["1", "2"]}, "page"),
            ({"page": ""}, "page"),
            ({"date_from": "1.5"}, "date_from"),
            ({"date_from": "1.0"}, "date_from"),
            ({"date_from": " 5"}, "date_from"),
            ({"mint": " rome"}, "mint"),
            ({"mint": "rome\n"}, "mint"),
            ({"date_to": str(2**31)}, "date_to"),
            ({"q": ["a", "b"]}, "q"),
            ({"sort": ["title", "date"]}, "sort"),
        ],
    )
    def test_a_bad_or_repeated_item_parameter_is_a_400_naming_it(self, api, catalogue, params, name):
        response = api.get(reverse("item-list"), params)
        assert response.status_code == 400
        assert list(response.json()["errors"]) == [name]

    @pytest.mark.parametrize(
        "params",
        [
            {"has_images": "maybe"},
            {"has_images": "1"},
            {"has_images": " true"},
            {"item": "1.5"},
            {"item": "0"},
            {"record_id": ["a", "b"]},
        ],
    )
    def test_a_bad_specimen_parameter_is_a_400(self, api, catalogue, params):
        response = api.get(reverse("specimen-list"), params)
        assert response.status_code == 400 and set(response.json()["errors"]) == set(params)

    def test_concept_parameters_may_repeat_and_may_be_empty(self, api, catalogue):
        body = api.get(reverse("item-list"), {"mint": ["rome", "constantinople", ""], "page_size": "200"}).json()
        assert body["count"] == 2

    def test_an_empty_filter_is_no_filter_as_the_collection_form_sends_it(self, api, catalogue):
        empty = {"q": "", "date_from": "", "date_to": "", "sort": "", "status": "", "mint": "", "uri": ""}
        body = api.get(reverse("item-list"), empty).json()
        assert body["count"] == 2
        assert api.get(reverse("specimen-list"), {"has_images": "", "item": ""}).json()["count"] == 2

    def test_a_page_past_the_last_is_a_404_in_the_error_shape(self, api, catalogue):
        response = api.get(reverse("item-list"), {"page": "3"})
        assert response.status_code == 404
        assert response.json() == {"errors": {"non_field_errors": ["Invalid page."]}}

    def test_search_refuses_blank_text(self, api, catalogue):
        response = api.get(reverse("api-search"), {"q": "   "})
        assert response.status_code == 400 and "q" in response.json()["errors"]


@pytest.mark.django_db
class TestErrors:
    """Every error under /api/ answers {"errors": {field: [reasons]}}, whatever raised it."""

    def test_an_unknown_id_is_a_404(self, api, catalogue):
        response = api.get(reverse("item-detail", args=[catalogue["draft"].pk]))
        assert response.status_code == 404
        assert response.json() == {"errors": {"non_field_errors": ["No Item matches the given query."]}}

    @pytest.mark.parametrize("debug", [False, True])  # make run has DEBUG on: the same answer there
    def test_a_url_no_view_matches_is_a_404_in_json_under_api_and_a_page_elsewhere(self, api, db, settings, debug):
        settings.DEBUG = debug
        for url in ("/api/v1/submissions/not-a-uuid/", "/api/v1/submissions/a%0Ab/", "/api/v1/items/1.5/", "/api/v2/"):
            response = api.get(url)
            assert response.status_code == 404 and response["Content-Type"] == "application/json", url
            assert response.json() == {"errors": {"non_field_errors": ["Not found."]}}
        assert api.get("/api/v1/items").status_code == 301  # APPEND_SLASH still redirects
        csrf_checked = APIClient(enforce_csrf_checks=True)
        assert csrf_checked.post("/api/v1/submissions/null/none-match/").status_code == 404  # not a CSRF page
        page = api.get("/no-such-page/")
        assert page.status_code == 404 and page["Content-Type"].startswith("text/html")

    def test_a_method_not_allowed_is_a_405_with_allow(self, api, db):
        response = api.get("/api/v1/submissions/")
        assert response.status_code == 405 and "POST" in response["Allow"]
        assert response.json() == {"errors": {"non_field_errors": ['Method "GET" not allowed.']}}

    def test_an_unknown_token_is_a_403(self, api, catalogue):
        response = api.get(reverse("item-list"), HTTP_AUTHORIZATION="Token not-a-token")
        assert response.status_code == 403
        assert response.json() == {"errors": {"non_field_errors": ["Invalid token."]}}

    def test_a_crash_is_a_500_in_the_error_shape(self, api, catalogue, monkeypatch):
        from collection.api.views import ItemViewSet

        def crash(*args, **kwargs):
            raise RuntimeError("boom")

        monkeypatch.setattr(ItemViewSet, "list", crash)
        api.raise_request_exception = False  # as in production: the handler answers, the error is logged
        response = api.get(reverse("item-list"))
        assert response.status_code == 500 and response["Content-Type"] == "application/json"
        assert list(response.json()["errors"]) == ["non_field_errors"]
