"""The curators' admin: searchable changelists, filters, autocomplete, image previews, search refresh."""

from __future__ import annotations

import pytest
from django.urls import reverse

from collection.models import Item, ItemStatus, Side
from collection.roles import ensure_role_groups
from tests.factories import make_concept, make_image, make_item, make_source, make_specimen


@pytest.fixture
def curator_client(client, curator):
    ensure_role_groups()  # gives the curator group its catalogue permissions
    client.force_login(curator)
    return client


@pytest.fixture
def rows(db) -> dict:
    mint = make_concept("mint", "Antioch", uri="http://nomisma.org/id/antioch")
    item = make_item(
        reference="RIC VIII Antioch 1", title="Follis", obverse_legend="FL IVL CONSTANTIVS", concepts=[mint]
    )
    bare = make_item(reference="RIC VIII Rome 2", title="No mint yet")
    specimen = make_specimen(item, record_id="1944.100.5", findspot="private field")
    image = make_image(specimen, Side.OBVERSE)
    return {"mint": mint, "item": item, "bare": bare, "specimen": specimen, "image": image}


@pytest.mark.django_db
class TestItemAdmin:
    def test_curators_search_items_by_legend(self, curator_client, rows):
        response = curator_client.get(reverse("admin:collection_item_changelist"), {"q": "CONSTANTIVS"})
        assert response.status_code == 200
        assert list(response.context["cl"].result_list) == [rows["item"]]

    def test_the_concept_kind_filter_finds_items_missing_a_kind(self, curator_client, rows):
        url = reverse("admin:collection_item_changelist")
        assert list(curator_client.get(url, {"concept_kind": "-mint"}).context["cl"].result_list) == [rows["bare"]]
        assert list(curator_client.get(url, {"concept_kind": "mint"}).context["cl"].result_list) == [rows["item"]]

    def test_the_change_form_picks_concepts_by_autocomplete(self, curator_client, rows):
        response = curator_client.get(reverse("admin:collection_item_change", args=[rows["item"].pk]))
        assert response.status_code == 200
        assert "admin-autocomplete" in response.content.decode()
        assert rows["item"].get_absolute_url() in response.content.decode()

    def test_saving_an_item_refreshes_its_search_columns(self, curator_client, rows):
        item = rows["bare"]
        data = {
            "reference": item.reference,
            "uri": item.uri,
            "title": "Renamed follis",
            "status": ItemStatus.PUBLISHED,
            "source": "",
            "concepts": [rows["mint"].pk],
            "date_from": "",
            "date_to": "",
            "obverse_legend": "",
            "obverse_description": "",
            "reverse_legend": "",
            "reverse_description": "",
            "description": "",
            "attributes": "{}",
            "specimens-TOTAL_FORMS": "0",
            "specimens-INITIAL_FORMS": "0",
            "specimens-MIN_NUM_FORMS": "0",
            "specimens-MAX_NUM_FORMS": "1000",
        }
        response = curator_client.post(reverse("admin:collection_item_change", args=[item.pk]), data)
        assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
        item.refresh_from_db()
        assert "renamed follis" in item.search_text
        assert "antioch" in item.search_text  # concept labels, saved after the item itself

    def test_the_publish_action_publishes_drafts(self, curator_client, rows):
        draft = make_item(title="Draft", status=ItemStatus.DRAFT)
        curator_client.post(
            reverse("admin:collection_item_changelist"), {"action": "publish", "_selected_action": [draft.pk]}
        )
        draft.refresh_from_db()
        assert draft.status == ItemStatus.PUBLISHED


@pytest.mark.django_db
class TestSpecimenAdmin:
    def test_curators_search_specimens_by_record_id(self, curator_client, rows):
        make_specimen(None, record_id="OTHER.1")
        response = curator_client.get(reverse("admin:collection_specimen_changelist"), {"q": "1944.100.5"})
        assert list(response.context["cl"].result_list) == [rows["specimen"]]

    def test_the_change_form_shows_image_previews_and_private_fields(self, curator_client, rows):
        response = curator_client.get(reverse("admin:collection_specimen_change", args=[rows["specimen"].pk]))
        html = response.content.decode()
        assert response.status_code == 200
        assert rows["image"].image.url in html  # inline thumbnail preview
        assert "private field" in html  # curators do edit the findspot here
        assert "Private (never public)" in html


@pytest.mark.django_db
class TestSpecimenImageAdmin:
    def test_checksum_is_read_only_and_embeddings_are_summarised(self, curator_client, rows):
        response = curator_client.get(reverse("admin:collection_specimenimage_change", args=[rows["image"].pk]))
        form = response.context["adminform"].form
        assert "sha256" not in form.fields  # shown, not editable
        html = response.content.decode()
        assert rows["image"].sha256 in html
        assert "Not indexed yet" in html
        assert "vector" not in form.fields


@pytest.mark.django_db
class TestConceptAndSourceAdmin:
    def test_concepts_are_searchable_by_uri_and_filterable_by_kind(self, curator_client, rows):
        make_concept("authority", "Antiochus")
        url = reverse("admin:collection_concept_changelist")
        assert list(curator_client.get(url, {"q": "nomisma.org/id/antioch"}).context["cl"].result_list) == [
            rows["mint"]
        ]
        assert len(curator_client.get(url, {"kind__exact": "authority"}).context["cl"].result_list) == 1

    def test_sources_list_their_record_counts(self, curator_client, rows):
        source = make_source(name="Museum X")
        rows["item"].source = source
        rows["item"].save()
        response = curator_client.get(reverse("admin:collection_source_changelist"))
        listed = list(response.context["cl"].result_list)
        assert listed == [source]
        assert listed[0]._items == 1

    def test_volunteers_cannot_open_the_admin(self, client, volunteer, rows):
        client.force_login(volunteer)
        response = client.get(reverse("admin:collection_item_changelist"))
        assert response.status_code == 302
        assert Item.objects.count() == 2
