"""Public pages: home, item list (search, facets, sorting, pagination), item, specimen and concept pages."""

from __future__ import annotations

from decimal import Decimal
from html import unescape

import pytest
from django.urls import reverse

from collection.models import Item, ItemStatus, Side
from collection.search import item_refresh_search
from tests.factories import make_concept, make_image, make_item, make_source, make_specimen

SECRET_FINDSPOT = "Field behind the old mill, plot 17"
SECRET_PROVENANCE = "Bought from the estate of Mr X in 1962"


@pytest.fixture
def catalogue(db) -> dict:
    ans = make_source(
        name="American Numismatic Society", licence="ODbL", credit="Metadata © American Numismatic Society, ODbL"
    )
    demo = make_source(name="Demo", credit="Invented", is_synthetic=True)
    c = {
        "ans": ans,
        "constantius": make_concept("authority", "Constantius II", uri="http://nomisma.org/id/constantius_ii"),
        "cnp": make_concept("mint", "Constantinople", uri="http://nomisma.org/id/constantinople"),
        "rome": make_concept("mint", "Rome", uri="http://nomisma.org/id/rome"),
        "billon": make_concept("material", "Billon"),
    }
    c["item"] = make_item(
        reference="RIC VIII Constantinople 37",
        title="Billon AE3 of Constantius II",
        uri="http://numismatics.org/ocre/id/ric.8.cnp.37",
        date_from=337,
        date_to=340,
        obverse_legend="[DV] CONSTANTI-NVS PT AVGG",
        obverse_description="Bust veiled draped cuirassed right",
        reverse_description="Emperor in quadriga",
        source=ans,
        concepts=[c["constantius"], c["cnp"], c["billon"]],
    )
    c["specimen"] = make_specimen(
        c["item"],
        record_id="1944.100.23777",
        weight_g=Decimal("1.450"),
        diameter_mm=Decimal("14.5"),
        die_axis=6,
        source=ans,
        findspot=SECRET_FINDSPOT,
        provenance=SECRET_PROVENANCE,
    )
    make_image(c["specimen"], Side.OBVERSE)
    make_image(c["specimen"], Side.REVERSE)
    c["specimen2"] = make_specimen(c["item"], record_id="1944.100.1", weight_g=Decimal("1.650"), source=ans)
    c["hidden_specimen"] = make_specimen(c["item"], record_id="PRIVATE.1", weight_g=Decimal("9.000"), is_public=False)
    c["rome_item"] = make_item(reference="RIC VI Rome 1", title="Follis of Rome", concepts=[c["rome"]], source=ans)
    c["demo_item"] = make_item(reference="DEMO 1", title="Coin of Fictus", source=demo, concepts=[c["rome"]])
    c["draft"] = make_item(reference="DRAFT 1", title="Draft Constantius type", status=ItemStatus.DRAFT)
    item_refresh_search(item_ids=Item.objects.values_list("pk", flat=True))
    return c


def _text(response) -> str:
    return unescape(response.content.decode())


@pytest.mark.django_db
class TestHome:
    def test_it_shows_figures_search_and_recent_published_items(self, client, catalogue):
        response = client.get(reverse("collection:home"))
        assert response.status_code == 200
        figures = response.context["figures"]
        assert figures["items"] == 3  # published only
        assert figures["specimens"] == 2  # public only
        assert figures["images"] == 2
        assert ("Mints", "mint", 2) in figures["concepts"]
        recent = response.context["recent"]
        assert catalogue["draft"] not in recent
        assert recent[0] == catalogue["demo_item"]
        html = _text(response)
        assert 'name="q"' in html
        assert "Synthetic demo data" in html

    def test_it_links_to_identify_api_docs_and_login(self, client, catalogue):
        html = _text(client.get("/"))
        assert 'href="/identify/"' in html
        assert f'href="{reverse("api-docs")}"' in html
        assert reverse("login") in html


@pytest.mark.django_db
class TestItemList:
    url = reverse("collection:item_list")

    def test_it_lists_only_published_items(self, client, catalogue):
        response = client.get(self.url)
        items = list(response.context["page"].object_list)
        assert catalogue["item"] in items
        assert catalogue["draft"] not in items

    def test_a_partial_legend_finds_the_type(self, client, catalogue):
        response = client.get(self.url, {"q": "CONSTANTI"})
        assert list(response.context["page"].object_list) == [catalogue["item"]]
        assert "RIC VIII Constantinople 37" in _text(response)

    def test_facets_show_counts_that_respect_other_filters(self, client, catalogue):
        response = client.get(self.url, {"q": "constanti"})
        facets = {f.kind: f for f in response.context["facets"]}
        assert {v.slug: v.count for v in facets["mint"].values} == {"constantinople": 1}
        response = client.get(self.url, {"mint": "rome"})
        facets = {f.kind: f for f in response.context["facets"]}
        assert {v.slug: v.count for v in facets["mint"].values} == {"rome": 2, "constantinople": 1}
        assert "authority" not in facets  # no item of Rome has an authority, so the facet is left out
        assert len(response.context["page"].object_list) == 2

    def test_facet_links_toggle_their_value_and_keep_the_rest_of_the_state(self, client, catalogue):
        response = client.get(self.url, {"q": "coin", "mint": "rome", "page": "1"})
        mint = next(f for f in response.context["facets"] if f.kind == "mint")
        rome = next(v for v in mint.values if v.slug == "rome")
        assert rome.selected
        assert rome.toggle_url == "?q=coin"
        html = _text(response)
        assert "Mint: Rome" in html  # the active filter chip

    def test_an_unknown_concept_in_the_url_is_shown_as_a_removable_filter(self, client, catalogue):
        response = client.get(self.url, {"q": "coin", "mint": "atlantis"})
        assert response.context["page"].paginator.count == 0
        assert {"label": "Mint: atlantis", "remove_url": "?q=coin"} in response.context["chips"]

    def test_it_paginates_and_keeps_filters_in_page_links(self, client, catalogue):
        rome = catalogue["rome"]
        extra = [make_item(reference=f"RIC Z {n:03}", title=f"Extra {n}", concepts=[rome]) for n in range(30)]
        item_refresh_search(item_ids=[i.pk for i in extra])
        response = client.get(self.url, {"mint": "rome", "sort": "reference"})
        page = response.context["page"]
        assert page.paginator.count == 32
        assert len(page.object_list) == 24
        assert "?mint=rome&amp;sort=reference&amp;page=2" in response.content.decode()
        second = client.get(self.url, {"mint": "rome", "sort": "reference", "page": 2})
        assert len(second.context["page"].object_list) == 8

    def test_sorting_by_date_is_offered_and_applied(self, client, catalogue):
        response = client.get(self.url, {"sort": "-date"})
        assert list(response.context["page"].object_list)[0] == catalogue["item"]
        assert '<option value="-date" selected>' in response.content.decode()

    def test_invalid_filters_answer_400_with_a_message(self, client, catalogue):
        response = client.get(self.url, {"date_from": "soon"})
        assert response.status_code == 400
        assert "date_from" in _text(response)

    def test_curators_see_drafts_and_can_filter_by_status(self, client, catalogue, curator):
        client.force_login(curator)
        response = client.get(self.url, {"status": "draft"})
        assert list(response.context["page"].object_list) == [catalogue["draft"]]

    def test_query_count_is_pinned(self, client, catalogue, django_assert_num_queries):
        for n in range(10):
            item = make_item(title=f"Extra {n}", concepts=[catalogue["rome"], catalogue["billon"]])
            make_image(make_specimen(item))
        item_refresh_search(item_ids=Item.objects.values_list("pk", flat=True))
        # count, page, concepts, specimens, images, facets (one query: no concept filter), date summary
        with django_assert_num_queries(7):
            client.get(self.url, {"q": "extra"})
        # each active concept filter adds one facet query
        with django_assert_num_queries(8):
            client.get(self.url, {"mint": "rome"})


@pytest.mark.django_db
class TestItemDetail:
    def test_it_shows_metadata_uris_legends_and_public_specimens(self, client, catalogue):
        item = catalogue["item"]
        response = client.get(item.get_absolute_url())
        html = _text(response)
        assert item.uri in html
        assert "http://nomisma.org/id/constantius_ii" in html
        assert catalogue["constantius"].get_absolute_url() in html
        assert "[DV] CONSTANTI-NVS PT AVGG" in html
        assert "337–340" in html
        assert "1944.100.23777" in html
        assert "PRIVATE.1" not in html
        assert "data-zoom" in html

    def test_it_summarises_weights_of_public_specimens(self, client, catalogue):
        response = client.get(catalogue["item"].get_absolute_url())
        weight = response.context["measurements"]["weight_g"]
        assert (weight.count, weight.mean, weight.minimum, weight.maximum) == (
            2,
            Decimal("1.55"),
            Decimal("1.450"),
            Decimal("1.650"),
        )
        assert "1.45–1.65 g" in _text(response)

    def test_the_measurements_table_is_left_out_when_no_specimen_was_measured(self, client):
        item = make_item(reference="UNMEASURED 1")
        make_specimen(item, record_id="UNMEASURED.1", weight_g=None, diameter_mm=None)
        html = _text(client.get(item.get_absolute_url()))
        assert "UNMEASURED.1" in html and "Measurements" not in html

    def test_it_never_shows_findspot_or_provenance(self, client, catalogue):
        html = _text(client.get(catalogue["item"].get_absolute_url()))
        assert SECRET_FINDSPOT not in html
        assert SECRET_PROVENANCE not in html

    def test_it_credits_the_source(self, client, catalogue):
        html = _text(client.get(catalogue["item"].get_absolute_url()))
        assert "Metadata © American Numismatic Society, ODbL" in html
        assert "Synthetic demo data" not in html.split("<main", 1)[1].split("</main>", 1)[0]

    def test_synthetic_items_carry_a_banner(self, client, catalogue):
        html = _text(client.get(catalogue["demo_item"].get_absolute_url()))
        assert "banner-synthetic" in html

    def test_drafts_are_not_found_by_the_public_but_shown_to_curators(self, client, catalogue, curator):
        url = catalogue["draft"].get_absolute_url()
        assert client.get(url).status_code == 404
        client.force_login(curator)
        response = client.get(url)
        assert response.status_code == 200
        assert "not shown to the public" in _text(response)

    def test_query_count_is_pinned(self, client, catalogue, django_assert_num_queries):
        for n in range(5):
            make_image(make_specimen(catalogue["item"], record_id=f"MORE.{n}"))
        # item + source, concepts, specimens, images
        with django_assert_num_queries(4):
            client.get(catalogue["item"].get_absolute_url())


@pytest.mark.django_db
class TestSpecimenDetail:
    def test_it_shows_measurements_images_type_and_credit(self, client, catalogue):
        specimen = catalogue["specimen"]
        response = client.get(specimen.get_absolute_url())
        html = _text(response)
        assert response.status_code == 200
        assert "1.45 g" in html
        assert "14.5 mm" in html
        assert catalogue["item"].get_absolute_url() in html
        assert len(response.context["images"]) == 2
        assert "Metadata © American Numismatic Society, ODbL" in html

    def test_it_never_shows_findspot_or_provenance(self, client, catalogue):
        html = _text(client.get(catalogue["specimen"].get_absolute_url()))
        assert SECRET_FINDSPOT not in html
        assert SECRET_PROVENANCE not in html

    def test_non_public_specimens_are_not_found(self, client, catalogue):
        response = client.get(catalogue["hidden_specimen"].get_absolute_url())
        assert response.status_code == 404
        html = _text(response)
        assert "Not found" in html and catalogue["hidden_specimen"].record_id not in html

    def test_a_specimen_of_a_draft_type_does_not_link_to_it(self, client, catalogue):
        specimen = make_specimen(catalogue["draft"], record_id="OF.DRAFT")
        response = client.get(specimen.get_absolute_url())
        assert response.context["item"] is None
        assert catalogue["draft"].get_absolute_url() not in _text(response)


@pytest.mark.django_db
class TestConceptDetail:
    def test_it_lists_published_items_of_the_concept_with_its_uri(self, client, catalogue):
        rome = catalogue["rome"]
        make_item(title="Rome draft", status=ItemStatus.DRAFT, concepts=[rome])
        response = client.get(rome.get_absolute_url())
        assert set(response.context["page"].object_list) == {catalogue["rome_item"], catalogue["demo_item"]}
        html = _text(response)
        assert rome.uri in html
        assert f"{reverse('collection:item_list')}?mint=rome" in html

    def test_an_unknown_concept_is_not_found(self, client, catalogue):
        response = client.get(reverse("collection:concept_detail", args=["mint", "atlantis"]))
        assert response.status_code == 404
        assert "Not found" in _text(response)

    def test_query_count_is_pinned(self, client, catalogue, django_assert_num_queries):
        for n in range(8):
            make_image(make_specimen(make_item(title=f"Rome {n}", concepts=[catalogue["rome"]])))
        # concept, count, page, concepts, specimens, images
        with django_assert_num_queries(6):
            client.get(catalogue["rome"].get_absolute_url())


@pytest.mark.django_db
def test_login_page_renders_with_the_site_layout(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert "site-header" in response.content.decode()


@pytest.mark.django_db
class TestCuratorLinks:
    def test_curators_see_history_and_edit_links_the_public_does_not(self, client, curator):
        from tests.factories import make_item as _make_item
        from tests.factories import make_specimen as _make_specimen

        item = _make_item()
        specimen = _make_specimen(item)
        assert "History of this item" not in client.get(item.get_absolute_url()).content.decode()
        client.force_login(curator)
        assert f"/review/history/item/{item.pk}/" in client.get(item.get_absolute_url()).content.decode()
        assert f"/review/history/specimen/{specimen.pk}/" in client.get(specimen.get_absolute_url()).content.decode()
