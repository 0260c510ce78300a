"""Tests for the CSV importer: the ANS labels.csv layout, the generic layout and malformed files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from collection.importers.nuds import import_nuds_paths
from collection.importers.tabular import HeaderError, import_csv_file, layout_from_header
from collection.models import Concept, Item, Source, Specimen, SpecimenImage
from tests.factories import png_bytes
from tests.samples import GENERIC_HEADER, generic_row, write_csv

# Rows of the real labels.csv: two share a type (ric.4.sa.648b), one has no type.
ANS_RECORDS = {
    "1944.100.23777",
    "1944.100.53310",
    "1944.100.53311",
    "1944.100.53312",
    "1944.100.53313",
    "1944.100.53316",
}
ANS_ROWS = len(ANS_RECORDS)


@pytest.fixture
def generic(tmp_path: Path) -> Path:
    """A generic-layout CSV of three specimens of one type, with PNG images beside it."""
    (tmp_path / "img").mkdir()
    for n in (1, 2, 3):
        (tmp_path / "img" / f"{n}.obv.png").write_bytes(png_bytes(color="#a08040"))
        (tmp_path / "img" / f"{n}.rev.png").write_bytes(png_bytes(color="#806020"))
    return write_csv(tmp_path / "coins.csv", GENERIC_HEADER, [generic_row(n) for n in (1, 2, 3)])


@pytest.fixture
def ans_csv(ans_dir: Path, tmp_path: Path) -> Path:
    """Some rows of the real labels.csv, in tmp (image paths stay relative to ans_dir)."""
    with (ans_dir / "labels.csv").open(encoding="utf-8", newline="") as fh:
        header, *rows = list(csv.reader(fh))
    return write_csv(tmp_path / "labels.csv", header, [row for row in rows if row[0] in ANS_RECORDS])


class TestLayout:
    def test_it_names_an_unknown_column(self):
        with pytest.raises(HeaderError, match="unknown column 'weigth'"):
            layout_from_header(["record_id", "weigth"])

    def test_it_requires_record_id(self):
        with pytest.raises(HeaderError, match="record_id"):
            layout_from_header(["title"])

    def test_it_resolves_ans_aliases(self):
        layout = layout_from_header(["record_id", "type_id", "type_reference", "nuds"])
        assert layout.is_ans
        assert layout.columns == {"record_id": "record_id", "item_uri": "type_id", "item_reference": "type_reference"}

    def test_it_refuses_two_columns_for_one_field(self):
        with pytest.raises(HeaderError, match="both mean 'item_uri'"):
            layout_from_header(["record_id", "item_uri", "type_id"])


@pytest.mark.django_db
class TestImportCsvFile:
    def test_it_imports_the_ans_labels_layout(self, ans_csv, ans_dir):
        result = import_csv_file(ans_csv, images_dir=ans_dir)
        assert result.failed == []
        assert result.created == ANS_ROWS and result.images_added == 2 * ANS_ROWS
        specimen = Specimen.objects.get(record_id="1944.100.53310")
        assert specimen.source_url == "https://numismatics.org/collection/1944.100.53310"
        assert str(specimen.weight_g) == "12.260" and specimen.die_axis == 12
        item = specimen.item
        assert item.uri == "http://numismatics.org/ocre/id/ric.4.sa.643g"
        assert item.reference == "RIC IV Severus Alexander 643g"
        assert item.title == "Bronze Dupondius of Severus Alexander, Rome, 231–235"
        assert {c.kind for c in item.concepts.all()} == {
            "authority",
            "mint",
            "region",
            "material",
            "denomination",
            "category",
        }
        assert Item.objects.get(uri__endswith="ric.4.sa.648b").specimens.count() == 2
        assert Specimen.objects.get(record_id="1944.100.53316").item is None  # no type in the row
        assert Source.objects.get().credit == "Metadata © American Numismatic Society, ODbL"

    def test_it_matches_concepts_made_by_the_nuds_importer(self, ans_csv, ans_dir, tmp_path):
        nuds = tmp_path / "nuds"
        nuds.mkdir()
        (nuds / "1944.100.53310.xml").write_bytes((ans_dir / "nuds" / "1944.100.53310.xml").read_bytes())
        import_nuds_paths([nuds], images_dir=ans_dir / "images")
        before = Concept.objects.filter(uri="http://nomisma.org/id/severus_alexander").count()
        import_csv_file(ans_csv, images_dir=ans_dir)
        assert Concept.objects.filter(kind="authority", uri="http://nomisma.org/id/severus_alexander").count() == 1
        assert Concept.objects.filter(uri="http://nomisma.org/id/severus_alexander").count() == before
        assert Concept.objects.filter(kind="region", slug="latium").count() == 1  # no URI in the CSV: by label

    def test_it_imports_the_generic_layout(self, generic):
        result = import_csv_file(generic)
        assert result.failed == [] and result.created == 3
        item = Item.objects.get()
        assert item.title == "Denarius 1" and item.reference == "RRC 480/1"
        assert item.date_display == "44 BC"
        assert item.attributes == {"rarity": "R1"}
        portraits = Concept.objects.filter(kind="portrait").order_by("label")
        assert [(c.label, c.uri) for c in portraits] == [
            ("Julius Caesar", "http://nomisma.org/id/julius_caesar"),
            ("Venus", "http://nomisma.org/id/venus"),
        ]
        assert set(item.concepts.filter(kind="portrait")) == set(portraits)
        assert (
            SpecimenImage.objects.filter(specimen__record_id="MUS.2", side="reverse").get().image.name.endswith(".png")
        )
        assert Specimen.objects.get(record_id="MUS.1").source is None

    def test_it_updates_on_reimport_and_replaces_a_changed_image(self, generic):
        import_csv_file(generic)
        before = (Item.objects.count(), Specimen.objects.count(), SpecimenImage.objects.count())
        (generic.parent / "img" / "2.obv.png").write_bytes(png_bytes(color="#102030"))
        again = import_csv_file(generic)
        assert again.created == 0 and again.updated == 3 and again.failed == []
        assert again.images_replaced == 1 and again.images_unchanged == 5 and again.images_added == 0
        assert (Item.objects.count(), Specimen.objects.count(), SpecimenImage.objects.count()) == before

    def test_an_unknown_column_imports_nothing(self, tmp_path):
        path = write_csv(tmp_path / "x.csv", ["record_id", "colour"], [["A.1", "red"]])
        result = import_csv_file(path)
        assert len(result.failed) == 1 and "unknown column 'colour'" in result.failed[0][1]
        assert result.created == 0 and Specimen.objects.count() == 0

    def test_a_non_utf8_file_imports_nothing(self, tmp_path):
        path = write_csv(tmp_path / "x.csv", ["record_id", "title"], [["A.1", "Médaille"]], encoding="latin-1")
        result = import_csv_file(path)
        assert len(result.failed) == 1
        assert "not a UTF-8 file" in result.failed[0][1] and "line 2" in result.failed[0][1]
        assert Specimen.objects.count() == 0

    def test_bad_rows_fail_alone(self, generic):
        rows = [
            generic_row(1),
            generic_row(2, weight_g="3.9g"),
            generic_row(3, reverse_image="img/nope.png"),
            generic_row(4, obverse_image="img/1.obv.png", reverse_image="img/1.rev.png", axis="13"),
            generic_row(5, record_id="", obverse_image="", reverse_image=""),
        ]
        (generic.parent / "img" / "garbage.png").write_bytes(b"not a png at all" * 10)
        rows.append(generic_row(6, obverse_image="img/garbage.png", reverse_image=""))
        write_csv(generic, GENERIC_HEADER, rows)
        result = import_csv_file(generic)
        reasons = dict(result.failed)
        assert "bad number in weight_g" in reasons["MUS.2"]
        assert "missing image" in reasons["MUS.3"] and "img/nope.png" in reasons["MUS.3"]
        assert "bad number in axis" in reasons["MUS.4"]
        assert reasons["line 6"] == "record_id is empty"
        assert "unreadable image" in reasons["MUS.6"]
        assert result.created == 1
        assert list(Specimen.objects.values_list("record_id", flat=True)) == ["MUS.1"]

    def test_the_command_credits_a_named_source(self, generic, capsys):
        call_command("import_csv", str(generic), "--source", "Test Museum", "--no-progress")
        assert "3 created" in capsys.readouterr().out
        assert set(Specimen.objects.values_list("source__name", flat=True)) == {"Test Museum"}

    def test_the_command_exits_nonzero_on_a_bad_header(self, tmp_path, capsys):
        path = write_csv(tmp_path / "x.csv", ["record_id", "colour"], [["A.1", "red"]])
        with pytest.raises(CommandError):
            call_command("import_csv", str(path), "--no-progress")
        assert "colour" in capsys.readouterr().out


class TestParseYear:
    @pytest.mark.parametrize(
        ("text", "year"),
        [("8 BCE", -8), ("44 BC", -44), ("-0038", -38), ("AD 14", 14), ("14 CE", 14), ("337", 337), ("", None)],
    )
    def test_it_reads_the_ways_catalogues_write_years(self, text, year):
        from collection.importers.base import parse_year

        assert parse_year(text, name="date_from") == year

    def test_it_rejects_words(self):
        from collection.importers.base import RecordError, parse_year

        with pytest.raises(RecordError):
            parse_year("Augustan", name="date_from")


@pytest.mark.django_db
class TestIndexImportedImages:
    def test_imported_images_are_queued_for_indexing_after_commit(self, settings, monkeypatch):
        from django_q import tasks as q_tasks

        from collection.importers.base import ImportResult, index_imported_images
        from identification.models import IndexChunk

        queued = []
        monkeypatch.setattr(q_tasks, "async_task", lambda name, chunk, **kwargs: queued.append((name, chunk, kwargs)))
        settings.OBVERSE_INDEX_ON_IMPORT = True
        settings.OBVERSE_INDEX_CHUNK = 50
        result = ImportResult(image_ids=list(range(1, 61)))
        from django.test import TestCase

        with TestCase.captureOnCommitCallbacks(execute=True):
            assert index_imported_images(result) == 60
        chunks = [IndexChunk.objects.get(pk=chunk) for _, chunk, _ in queued]
        assert [len(chunk.image_ids) for chunk in chunks] == [50, 10] and chunks[0].job.total == 60
        assert {(name, kwargs["cluster"]) for name, _, kwargs in queued} == {
            ("identification.tasks.index_chunk", "bulk")
        }

    def test_nothing_is_queued_when_indexing_on_import_is_off(self, settings):
        from collection.importers.base import ImportResult, index_imported_images

        settings.OBVERSE_INDEX_ON_IMPORT = False
        assert index_imported_images(ImportResult(image_ids=[1, 2])) == 0
