"""The benchmarks' figures: recalls per regime and per side, design recall@1 and the ceilings beside them."""

from __future__ import annotations

from bench.figures import QueryRow, identification_figures
from tests.catalogues import CATALOGUE

A1, A2, B1, C1, D1 = CATALOGUE


def test_figures_per_regime_with_design_recall_and_ceilings():
    rows = [
        # good: the obverse of a1 answered with B first (a design hit: B shows Hadrian), A second
        QueryRow(A1, ("obverse",), ["B", "A"], ["obverse"], "good"),
        # good: the pair of b1 answered right
        QueryRow(B1, ("obverse", "reverse"), ["B"], ["obverse", "reverse"], "good"),
        # poor: the reverse of d1 answered with A first (no design hit), D not in the candidates
        QueryRow(D1, ("reverse",), ["A", "C"], ["obverse"], "poor"),
    ]
    figures = identification_figures(rows, CATALOGUE)
    assert set(figures) == {"all", "good", "poor"}
    good, poor, every = figures["good"], figures["poor"], figures["all"]
    assert (good["queries"], good["pair_queries"], poor["queries"], poor["pair_queries"]) == (1, 1, 1, 0)
    assert (good["recall_at_1"], good["recall_at_8"], good["design_recall_at_1"]) == (0.0, 1.0, 1.0)
    assert (good["recall_at_1_pair"], good["design_recall_at_1_pair"]) == (1.0, 1.0)
    assert (poor["recall_at_8"], poor["design_recall_at_1"], poor["side_accuracy_single"]) == (0.0, 0.0, 0.0)
    assert every["recall_at_8"] == 0.5 and every["by_side"]["obverse"]["recall_at_8"] == 1.0
    assert every["ceiling"]["obverse"]["recall_at_1"] == round(1 / 3, 4)  # A, B and C share Hadrian's obverse
    assert every["ceiling"]["pair"]["recall_at_1"] == 1.0 and every["ceiling"]["reverse"]["recall_at_1"] == 1.0


def test_one_regime_is_not_repeated():
    figures = identification_figures([QueryRow(A1, ("obverse",), ["A"], ["obverse"], "poor")], CATALOGUE)
    assert set(figures) == {"all"} and figures["all"]["recall_at_1"] == 1.0
