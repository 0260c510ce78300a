"""Tests for collection.services: the functions every importer writes the catalogue through."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from collection import services
from collection.models import Concept, ImageEmbedding, Item, Source, Specimen, SpecimenImage
from tests.factories import make_concept, make_item, make_specimen, png_bytes
from tests.samples import jpeg_with_gps


@pytest.mark.django_db
class TestConceptGetOrCreate:
    def test_it_matches_by_uri_whatever_the_label(self):
        first = services.concept_get_or_create(kind="mint", label="Rome", uri="http://nomisma.org/id/rome")
        second = services.concept_get_or_create(kind="mint", label="Roma", uri="http://nomisma.org/id/rome")
        assert first.pk == second.pk
        assert Concept.objects.filter(kind="mint").count() == 1

    def test_it_matches_by_label_slug_without_uri_and_adopts_a_uri(self):
        plain = services.concept_get_or_create(kind="material", label="Silver")
        again = services.concept_get_or_create(kind="material", label="  silver ")
        linked = services.concept_get_or_create(kind="material", label="Silver", uri="http://nomisma.org/id/ar")
        assert plain.pk == again.pk == linked.pk
        assert Concept.objects.get(pk=plain.pk).uri == "http://nomisma.org/id/ar"

    def test_it_keeps_same_label_with_different_uris_apart(self):
        syria = services.concept_get_or_create(
            kind="mint", label="Antioch", uri="http://nomisma.org/id/antiocheia_syria"
        )
        pisidia = services.concept_get_or_create(
            kind="mint", label="Antioch", uri="http://nomisma.org/id/antiochia_pisidia"
        )
        assert syria.pk != pisidia.pk
        assert {syria.slug, pisidia.slug} == {"antioch", "antioch-2"}

    def test_it_separates_kinds(self):
        person = services.concept_get_or_create(kind="authority", label="Tiberius")
        portrait = services.concept_get_or_create(kind="portrait", label="Tiberius")
        assert person.pk != portrait.pk

    def test_it_gives_non_ascii_labels_distinct_slugs(self):
        athens = services.concept_get_or_create(kind="mint", label="Ἀθῆναι")
        corinth = services.concept_get_or_create(kind="mint", label="Κόρινθος")
        assert athens.pk != corinth.pk
        assert athens.slug.startswith("c-") and athens.slug != corinth.slug

    def test_it_labels_a_uri_only_concept_from_the_uri(self):
        concept = services.concept_get_or_create(kind="denomination", label="", uri="http://nomisma.org/id/ae3")
        assert concept.label == "ae3"

    def test_it_rejects_a_bad_kind(self):
        with pytest.raises(ValueError, match="kind"):
            services.concept_get_or_create(kind="Not a kind", label="x")


@pytest.mark.django_db
class TestItemUpsert:
    def test_it_creates_an_item_with_concepts_and_search_text(self):
        mint = make_concept("mint", "Constantinople")
        item, created = services.item_upsert(
            uri="http://numismatics.org/ocre/id/ric.8.cnp.37",
            reference="RIC VIII Constantinople 37",
            title="Billon AE3 of Constantius II",
            fields={"obverse_legend": "DV CONSTANTINVS PT AVGG", "date_from": 337, "date_to": 340},
            concepts=[mint],
        )
        assert created
        item.refresh_from_db()
        assert list(item.concepts.all()) == [mint]
        assert "constantinvs" in item.search_text and "constantinople" in item.search_text
        assert item.date_display == "337–340"

    def test_it_matches_by_uri_and_fills_only_blank_fields(self):
        existing = make_item(uri="http://example.org/t/1", title="Curated title", obverse_legend="")
        item, created = services.item_upsert(
            uri="http://example.org/t/1",
            title="Imported title",
            fields={"obverse_legend": "IMP CAES", "reverse_legend": ""},
            attributes={"rarity": "R2"},
        )
        assert not created and item.pk == existing.pk
        item.refresh_from_db()
        assert item.title == "Curated title"
        assert item.obverse_legend == "IMP CAES"
        assert item.attributes == {"rarity": "R2"}

    def test_it_adds_concepts_only_of_kinds_the_item_lacks(self):
        rome, ostia = make_concept("mint", "Rome"), make_concept("mint", "Ostia")
        silver = make_concept("material", "Silver")
        item = make_item(concepts=[rome])
        services.item_upsert(uri=item.uri, concepts=[ostia, silver])
        assert set(item.concepts.all()) == {rome, silver}

    def test_it_matches_by_reference_when_there_is_no_uri(self):
        existing = make_item(uri="", reference="BMC 45")
        item, created = services.item_upsert(reference="BMC 45", title="x")
        assert not created and item.pk == existing.pk

    def test_it_does_not_create_when_told_not_to(self):
        item, created = services.item_upsert(reference="NNM.70", title="x", create=False)
        assert item is None and not created
        assert Item.objects.count() == 0

    def test_it_refuses_an_invalid_uri(self):
        with pytest.raises(services.ValidationError):
            services.item_upsert(uri="not a uri", title="x")


@pytest.mark.django_db
class TestSpecimenUpsert:
    def test_it_creates_then_updates_by_record_id(self):
        first, created = services.specimen_upsert(record_id="A.1", fields={"title": "One", "weight_g": Decimal("1.5")})
        again, created_again = services.specimen_upsert(record_id="A.1", fields={"title": "One, corrected"})
        assert created and not created_again and first.pk == again.pk
        again.refresh_from_db()
        assert again.title == "One, corrected"
        assert again.weight_g == Decimal("1.500")  # not given the second time: left alone
        assert Specimen.objects.count() == 1

    def test_it_merges_attributes_and_leaves_publication_alone(self):
        specimen = make_specimen(attributes={"lot": "1944.100"}, is_public=False)
        services.specimen_upsert(record_id=specimen.record_id, fields={"attributes": {"series": "RIC.4"}})
        specimen.refresh_from_db()
        assert specimen.attributes == {"lot": "1944.100", "series": "RIC.4"}
        assert specimen.is_public is False

    def test_it_rejects_an_unknown_field(self):
        with pytest.raises(ValueError, match="is_public"):
            services.specimen_upsert(record_id="A.2", fields={"is_public": False})


@pytest.mark.django_db
class TestSourceGetOrCreate:
    def test_it_fills_blanks_without_overwriting(self):
        Source.objects.create(name="Museum", credit="Our own credit")
        source = services.source_get_or_create(name="Museum", licence="ODbL", credit="Another credit")
        assert source.credit == "Our own credit" and source.licence == "ODbL"
        assert Source.objects.count() == 1


@pytest.mark.django_db
class TestSpecimenImageAttach:
    def write(self, tmp_path: Path, name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    def test_it_stores_a_clean_copy_and_a_thumbnail(self, tmp_path):
        specimen = make_specimen()
        path = self.write(tmp_path, "a.jpg", jpeg_with_gps(orientation=6))
        image, outcome = services.specimen_image_attach(specimen=specimen, side="obverse", path=path)
        assert outcome == "added"
        stored = Image.open(default_storage.open(image.image.name))
        assert stored.format == "JPEG"
        assert not stored.getexif()  # no orientation, maker or GPS left
        assert "exif" not in stored.info
        assert (image.width, image.height) == (300, 400)  # turned upright (orientation 6)
        thumb = Image.open(default_storage.open(image.thumbnail.name))
        assert max(thumb.size) == services.THUMBNAIL_SIZE
        assert len(image.sha256) == 64

    def test_it_keeps_an_unchanged_file_and_replaces_a_changed_one(self, tmp_path, django_capture_on_commit_callbacks):
        specimen = make_specimen()
        path = self.write(tmp_path, "a.png", png_bytes(color="#b08d57"))
        first, _ = services.specimen_image_attach(specimen=specimen, side="reverse", path=path)
        ImageEmbedding.objects.create(
            image=first, side="reverse", model_name="m", model_version="1", vector=[0.0] * 1280
        )
        old_name = first.image.name
        same, outcome = services.specimen_image_attach(specimen=specimen, side="reverse", path=path)
        assert outcome == "unchanged" and same.image.name == old_name
        path.write_bytes(png_bytes(color="#224466"))
        with django_capture_on_commit_callbacks(execute=True):
            replaced, outcome = services.specimen_image_attach(specimen=specimen, side="reverse", path=path)
        assert outcome == "replaced" and replaced.pk == first.pk
        assert SpecimenImage.objects.filter(specimen=specimen).count() == 1
        assert not default_storage.exists(old_name)
        assert not ImageEmbedding.objects.filter(image=replaced).exists()  # it described the old pixels

    def test_it_rejects_garbage_named_jpg(self, tmp_path):
        path = self.write(tmp_path, "bad.jpg", b"this is not a photo" * 20)
        with pytest.raises(services.ImageFileError, match="not an image"):
            services.specimen_image_attach(specimen=make_specimen(), side="obverse", path=path)
        assert SpecimenImage.objects.count() == 0

    def test_it_rejects_a_truncated_jpeg(self, tmp_path):
        path = self.write(tmp_path, "cut.jpg", jpeg_with_gps()[:300])
        with pytest.raises(services.ImageFileError):
            services.specimen_image_attach(specimen=make_specimen(), side="obverse", path=path)

    def test_it_guards_against_decompression_bombs(self, tmp_path, monkeypatch):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
        path = self.write(tmp_path, "big.png", png_bytes(size=(64, 64)))
        with pytest.raises(services.ImageFileError, match="pixels"):
            services.specimen_image_attach(specimen=make_specimen(), side="obverse", path=path)

    def test_it_links_a_remote_url_without_downloading(self, monkeypatch):
        import urllib.request

        monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not download"))
        url = "https://numismatics.org/collectionimages/1.obv.noscale.jpg"
        image, outcome = services.specimen_image_attach(specimen=make_specimen(), side="obverse", remote_url=url)
        assert outcome == "linked" and image.remote_url == url and not image.image
