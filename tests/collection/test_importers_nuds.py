"""Tests for the NUDS XML importer, on a real subset of the ANS records and on malformed files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from collection.importers.base import RecordError
from collection.importers.nuds import import_nuds_paths, nuds_parse
from collection.models import Concept, Item, Source, Specimen, SpecimenImage
from tests.samples import ANS_SMALL as SMALL
from tests.samples import ANS_SUBSET as SUBSET
from tests.samples import BILLION_LAUGHS, MINIMAL, copy_records, external_entity


@pytest.fixture
def subset(ans_dir: Path, tmp_path: Path) -> Path:
    return copy_records(ans_dir, tmp_path, SUBSET)


@pytest.fixture
def small(ans_dir: Path, tmp_path: Path) -> Path:
    return copy_records(ans_dir, tmp_path, SMALL)


def counts() -> tuple[int, int, int, int]:
    return Item.objects.count(), Specimen.objects.count(), SpecimenImage.objects.count(), Concept.objects.count()


class TestNudsParse:
    def test_it_reads_dates_legends_and_measurements(self):
        record = nuds_parse(MINIMAL.format(record_id="T.1", axis="0", weight="3,91").encode())
        assert record.item_fields["date_from"] == record.item_fields["date_to"] == -44
        assert record.item_fields["obverse_legend"] == "CAESAR DICT"
        assert record.specimen_fields["die_axis"] == 12  # 0 o'clock is 12 o'clock
        assert str(record.specimen_fields["weight_g"]) == "3.910"
        assert record.type_uri == "http://numismatics.org/crro/id/rrc.480.1"
        assert ("authority", "Caesar", "http://nomisma.org/id/julius_caesar") in record.concepts

    def test_it_reports_a_bad_number(self):
        with pytest.raises(RecordError, match="bad number in weight"):
            nuds_parse(MINIMAL.format(record_id="T.2", axis="6", weight="heavy").encode())

    def test_it_refuses_entity_expansion(self):
        with pytest.raises(RecordError, match="forbidden XML"):
            nuds_parse(BILLION_LAUGHS.encode())

    def test_it_refuses_the_wrong_namespace(self):
        data = MINIMAL.format(record_id="T.3", axis="6", weight="1").replace("http://nomisma.org/nuds", "urn:other")
        with pytest.raises(RecordError, match="not a NUDS record"):
            nuds_parse(data.encode())


@pytest.mark.django_db
class TestImportNudsPaths:
    def test_it_imports_the_real_subset(self, subset):
        result = import_nuds_paths([subset / "nuds"])
        assert result.failed == []
        assert result.created == len(SUBSET) and result.updated == 0
        assert result.images_added == 2 * len(SUBSET)
        assert Specimen.objects.count() == len(SUBSET)
        assert SpecimenImage.objects.exclude(image="").count() == 2 * len(SUBSET)

        # One item per type URI, shared by the coins of that type.
        item = Item.objects.get(uri="http://numismatics.org/ocre/id/ric.8.cnp.37")
        assert item.specimens.count() == 3
        assert item.reference == "RIC VIII Constantinople 37"
        assert item.title == "Billon AE3 of Constantius II, Constantinople, 337–340"
        assert (item.date_from, item.date_to) == (337, 340)
        assert {c.kind for c in item.concepts.all()} >= {"authority", "mint", "material", "denomination", "state"}
        assert "constantinople" in item.search_text
        assert Item.objects.get(uri__contains="ric.1(2).gai.63").attributes["other_uris"] == [
            "https://rpc.ashmus.ox.ac.uk/type/67192"
        ]
        assert Item.objects.count() == len(SUBSET) - 2 - 1 - 2  # 12 records, 7 types, 2 untyped

        untyped = Specimen.objects.get(record_id="1946.35.79")
        assert untyped.item is None
        assert untyped.attributes["obverse_legend"].startswith("[IMP] CAES")

        dated = Specimen.objects.get(record_id="0000.999.3156").item
        assert dated.date_from is not None and dated.date_from == dated.date_to

        specimen = Specimen.objects.get(record_id="1944.100.53310")
        assert str(specimen.weight_g) == "12.260" and str(specimen.diameter_mm) == "25.20"
        assert specimen.die_axis == 12
        assert specimen.holding_collection == "American Numismatic Society"
        assert specimen.image_rights == "Public Domain Mark"
        obverse = specimen.images.get(side="obverse")
        assert obverse.remote_url.startswith("https://numismatics.org/collectionimages/")
        assert obverse.thumbnail and obverse.width == 300 and not obverse.cutout

        source = Source.objects.get()
        assert source.name == "American Numismatic Society" and source.licence == "ODbL"
        assert source.credit == "Metadata © American Numismatic Society, ODbL"
        assert specimen.source == source

    def test_it_matches_concepts_by_uri_across_records(self, small):
        import_nuds_paths([small / "nuds"])
        severus = Concept.objects.get(kind="authority", uri="http://nomisma.org/id/severus_alexander")
        assert severus.items.count() == 3  # the items of 648b, 643g and 644d
        assert Concept.objects.filter(kind="authority", label="Severus Alexander").count() == 1
        for kind, uri in Concept.objects.exclude(uri="").values_list("kind", "uri"):
            assert Concept.objects.filter(kind=kind, uri=uri).count() == 1

    def test_it_updates_on_reimport_without_duplicates(self, small):
        import_nuds_paths([small / "nuds"])
        before = counts()
        names = set(SpecimenImage.objects.values_list("image", flat=True))
        again = import_nuds_paths([small / "nuds"])
        assert again.created == 0 and again.updated == len(SMALL) and again.failed == []
        assert again.images_added == 0 and again.images_unchanged == 2 * len(SMALL)
        assert counts() == before
        assert set(SpecimenImage.objects.values_list("image", flat=True)) == names

    def test_one_bad_record_does_not_stop_the_others(self, small, tmp_path):
        (small / "nuds" / "broken.xml").write_text("<nuds xmlns='http://nomisma.org/nuds'><control>")
        (small / "nuds" / "laughs.xml").write_text(BILLION_LAUGHS)
        (small / "nuds" / "other.xml").write_text("<record xmlns='urn:other'><recordId>X</recordId></record>")
        result = import_nuds_paths([small / "nuds"])
        reasons = {Path(key).name: reason for key, reason in result.failed}
        assert "malformed XML" in reasons["broken.xml"]
        assert "forbidden XML" in reasons["laughs.xml"]
        assert "not a NUDS record" in reasons["other.xml"]
        assert result.created == len(SMALL)
        assert "broken.xml: malformed XML" in result.summary()

    def test_it_never_reads_an_external_entity(self, small, tmp_path):
        secret = tmp_path / "secret.txt"
        secret.write_text("TOP-SECRET-CONTENT")
        (small / "nuds" / "xxe.xml").write_text(external_entity(secret))
        result = import_nuds_paths([small / "nuds" / "xxe.xml"])
        assert len(result.failed) == 1 and "forbidden XML" in result.failed[0][1]
        assert not Specimen.objects.filter(title__contains="TOP-SECRET").exists()
        assert Specimen.objects.count() == 0

    def test_a_missing_image_fails_only_its_record(self, small):
        (small / "images" / "1944.100.53310.rev.jpg").unlink()
        result = import_nuds_paths([small / "nuds"])
        assert [key for key, _ in result.failed] == ["1944.100.53310"]
        assert "missing image" in result.failed[0][1] and "1944.100.53310.rev" in result.failed[0][1]
        assert not Specimen.objects.filter(record_id="1944.100.53310").exists()  # nothing half-imported
        assert not Item.objects.filter(uri="http://numismatics.org/ocre/id/ric.4.sa.643g").exists()
        assert result.created == len(SMALL) - 1

    def test_an_unreadable_image_fails_only_its_record(self, small, settings):
        (small / "images" / "1944.100.53311.rev.jpg").write_bytes(b"\x00garbage, not a jpeg" * 50)
        result = import_nuds_paths([small / "nuds"])
        assert [key for key, _ in result.failed] == ["1944.100.53311"]
        assert "unreadable image" in result.failed[0][1]
        assert not Specimen.objects.filter(record_id="1944.100.53311").exists()
        stored = {p.name for p in Path(settings.MEDIA_ROOT).rglob("1944.100.53311*")}
        assert stored == set()  # the files of the rolled-back record were removed too
        assert result.created == len(SMALL) - 1

    def test_without_an_images_folder_it_keeps_remote_links(self, small):
        shutil.rmtree(small / "images")
        result = import_nuds_paths([small / "nuds" / "1944.100.53310.xml"])
        assert result.failed == [] and result.images_linked == 2
        assert any("no images folder" in note for note in result.notes)
        assert set(SpecimenImage.objects.values_list("image", flat=True)) == {""}

    def test_the_command_reports_and_exits_nonzero_on_failure(self, small, capsys):
        (small / "nuds" / "broken.xml").write_text("<nuds")
        with pytest.raises(CommandError) as excinfo:
            call_command("import_nuds", str(small / "nuds"), "--images", str(small / "images"), "--no-progress")
        assert excinfo.value.returncode == 1
        out = capsys.readouterr().out
        assert f"{len(SMALL)} created" in out and "broken.xml" in out
