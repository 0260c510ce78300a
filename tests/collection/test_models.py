"""The catalogue's own small rules: dates as numismatists write them, labels as pages show them."""

from __future__ import annotations

import pytest

from collection.models import Concept, Item, format_date_range


class TestFormatDateRange:
    @pytest.mark.parametrize(
        ("date_from", "date_to", "text"),
        [
            (337, 340, "337–340"),
            (306, 306, "306"),
            (-44, -44, "44 BC"),
            (-27, 14, "27 BC–AD 14"),
            (-3, 1, "3 BC–AD 1"),
            (-148, -121, "148–121 BC"),
            (None, 235, "235"),
            (-44, None, "44 BC"),
            (None, None, ""),
        ],
    )
    def test_years_read_as_numismatists_write_them(self, date_from, date_to, text):
        assert format_date_range(date_from, date_to) == text


class TestItemDateNote:
    def test_the_date_is_not_repeated_under_a_title_that_says_it(self):
        assert (
            Item(title="Billon AE3 of Constantius II, Constantinople, 337–340", date_from=337, date_to=340).date_note
            == ""
        )
        assert Item(title="Follis of Constantine I", date_from=306, date_to=306).date_note == "306"
        assert Item(title="Undated").date_note == ""


class TestConceptLabel:
    def test_a_category_path_reads_as_a_hierarchy_with_the_same_slug(self):
        raw = "Roman--Imperial--Antonines"
        assert Concept.clean_label(raw) == "Roman › Imperial › Antonines"
        assert Concept.make_slug(Concept.clean_label(raw)) == Concept.make_slug(raw) == "roman-imperial-antonines"
        assert Concept.clean_label("  Antoninus   Pius ") == "Antoninus Pius"
