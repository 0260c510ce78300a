"""The curators' admin: searchable changelists, filters, autocomplete, image previews, search refresh."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from collection.models import Item, ItemStatus, Side, SpecimenImage
from collection.roles import ensure_role_groups
from tests.factories import make_concept, make_image, make_item, make_source, make_specimen
from tests.samples import jpeg_with_gps


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


def _has_no_metadata(path: str) -> bool:
    data = Path(path).read_bytes()
    with Image.open(path) as image:
        return b"Exif" not in data and b"PhoneMaker" not in data and not image.getexif() and "exif" not in image.info


@pytest.mark.django_db
class TestPhotosUploadedInTheAdmin:
    """A photo a curator uploads in the admin is published: it is stored re-encoded, without EXIF or GPS."""

    def _form(self, rows, **fields) -> dict:
        return {"specimen": rows["specimen"].pk, "side": Side.REVERSE, "sort_order": "0", "remote_url": "", **fields}

    def test_a_photo_added_on_its_own_page_loses_its_exif(self, curator_client, rows):
        photo = SimpleUploadedFile("phone.jpg", jpeg_with_gps(), content_type="image/jpeg")
        response = curator_client.post(reverse("admin:collection_specimenimage_add"), self._form(rows, image=photo))
        assert response.status_code == 302, response.content.decode()[:2000]
        assert _has_no_metadata(SpecimenImage.objects.get(side=Side.REVERSE).image.path)

    def test_a_photo_added_in_the_specimens_inline_loses_its_exif(self, curator_client, rows):
        specimen, image = rows["specimen"], rows["image"]
        data = {
            "record_id": specimen.record_id,
            "item": specimen.item_id,
            "title": specimen.title,
            "is_public": "on",
            "attributes": "{}",
            "images-TOTAL_FORMS": "2",
            "images-INITIAL_FORMS": "1",
            "images-MIN_NUM_FORMS": "0",
            "images-MAX_NUM_FORMS": "1000",
            "images-0-id": image.pk,
            "images-0-specimen": specimen.pk,
            "images-0-side": image.side,
            "images-0-sort_order": "0",
            "images-1-specimen": specimen.pk,
            "images-1-side": Side.REVERSE,
            "images-1-sort_order": "0",
            "images-1-image": SimpleUploadedFile("phone.jpg", jpeg_with_gps(), content_type="image/jpeg"),
        }
        response = curator_client.post(reverse("admin:collection_specimen_change", args=[specimen.pk]), data)
        assert response.status_code == 302, response.content.decode()[:3000]
        assert _has_no_metadata(SpecimenImage.objects.get(side=Side.REVERSE).image.path)

    def test_a_file_that_is_no_photo_is_refused_with_the_reason(self, curator_client, rows):
        junk = SimpleUploadedFile("scan.jpg", b"%PDF-1.4 not a photo", content_type="image/jpeg")
        response = curator_client.post(reverse("admin:collection_specimenimage_add"), self._form(rows, image=junk))
        assert response.status_code == 200 and not SpecimenImage.objects.filter(side=Side.REVERSE).exists()

    def test_derived_files_cannot_be_uploaded_by_hand(self, curator_client, rows):
        response = curator_client.get(reverse("admin:collection_specimenimage_change", args=[rows["image"].pk]))
        form = response.context["adminform"].form
        assert "cutout" not in form.fields and "thumbnail" not in form.fields


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
