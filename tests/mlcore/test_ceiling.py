"""What a photo can tell: design keys, tied types and the expected recall of a perfect design recogniser."""

from __future__ import annotations

import pytest

from mlcore.ceiling import DesignIndex, ceiling, ceilings_by_kind, expected_recall
from mlcore.dataset import design_key
from tests.catalogues import CATALOGUE


class TestDesignKey:
    def test_only_the_legends_letters_and_the_descriptions_words_count(self):
        assert design_key("Hadrian", "HADRIANVS-AVG [COS III] P·P", "Bust,  laureate right") == design_key(
            "Hadrian", "hadrianvs avg cos iii pp", "bust, laureate RIGHT"
        )
        assert design_key("Hadrian", "HADRIANVS AVG", "Bust right") != design_key(
            "Hadrian", "HADRIANVS AVG", "Head right"
        )

    def test_a_side_with_no_legend_and_no_description_has_no_design(self):
        assert design_key("Hadrian", "", " ") == ""


class TestCeiling:
    def test_tied_types_are_those_that_show_every_photographed_design(self):
        index = DesignIndex(CATALOGUE)
        assert index.tied(CATALOGUE[0], ("obverse",)) == {"A", "B", "C"}
        assert index.tied(CATALOGUE[0], ("reverse",)) == {"A", "C"}
        assert index.tied(CATALOGUE[0], ("obverse", "reverse")) == {"A", "C"}
        assert index.tied(CATALOGUE[4], ("obverse",)) == {"D"}

    def test_a_perfect_model_guesses_among_the_tied_types(self):
        assert expected_recall(3, 1) == pytest.approx(1 / 3)
        assert expected_recall(3, 8) == 1.0 and expected_recall(1, 1) == 1.0
        index = DesignIndex(CATALOGUE)
        queries = [(CATALOGUE[0], ("obverse",)), (CATALOGUE[4], ("obverse",))]
        assert ceiling(index, queries, ks=(1, 2)) == {
            "recall_at_1": round((1 / 3 + 1) / 2, 4),
            "recall_at_2": round((2 / 3 + 1) / 2, 4),
        }

    def test_ceilings_are_reported_per_kind_of_query(self):
        index = DesignIndex(CATALOGUE)
        queries = [(CATALOGUE[2], ("obverse",)), (CATALOGUE[2], ("reverse",)), (CATALOGUE[2], ("obverse", "reverse"))]
        kinds = ceilings_by_kind(index, queries, ks=(1,))
        assert kinds == {
            "obverse": {"recall_at_1": round(1 / 3, 4)},
            "reverse": {"recall_at_1": 1.0},  # only B shows Fortuna
            "single": {"recall_at_1": round((1 / 3 + 1) / 2, 4)},
            "pair": {"recall_at_1": 1.0},
        }

    def test_a_candidate_shows_the_design_when_any_of_its_specimens_does(self):
        index = DesignIndex(CATALOGUE)
        assert index.design_hit(CATALOGUE[0], ("obverse",), "B")  # B shows Hadrian's obverse: a design hit
        assert not index.design_hit(CATALOGUE[0], ("obverse", "reverse"), "B")  # but not Felicitas
        assert not index.design_hit(CATALOGUE[0], ("obverse",), "D")


def test_the_dev_sets_records_carry_designs_for_both_sides(ans_dir):
    from mlcore.dataset import load_ans_layout

    records = load_ans_layout(ans_dir, limit=50)
    assert sum(len(record.designs) == 2 for record in records) >= 45
    assert all("|" in key for record in records for key in record.designs.values())
