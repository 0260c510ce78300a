"""``benchmark_identification``'s account of the misses (the command itself runs in test_end_to_end)."""

from __future__ import annotations

from bench.management.commands.benchmark_identification import _misses
from mlcore.dataset import CatalogueRecord


def record(type_id: str, authority: str, denomination: str, mint: str = "Rome") -> CatalogueRecord:
    labels = {"authority": authority, "denomination": denomination, "mint": mint, "material": "Silver"}
    return CatalogueRecord(f"r-{type_id}", type_id, {}, labels)


LABELLED = [
    record("A1", "Hadrian", "Denarius"),
    record("A2", "Hadrian", "Denarius"),  # differs from A1 in a detail only
    record("B1", "Hadrian", "Sestertius"),
    record("C1", "Trajan", "Aureus", mint="Antioch"),
]


def row(type_id: str, candidates: list[str], *, predicted: str = "obverse") -> dict:
    rank = candidates.index(type_id) + 1 if type_id in candidates else None
    return {
        "type_id": type_id,
        "candidates": candidates,
        "rank": rank,
        "sides": [{"predicted": predicted, "true": "obverse"}],
    }


def test_misses_say_how_close_the_wrong_first_candidate_was():
    rows = [
        row("A1", ["A1", "B1"]),  # a hit: not counted
        row("A1", ["A2", "A1"]),  # same ruler and denomination: a detail told them apart
        row("A1", ["B1", "C1"]),  # same ruler, another denomination; the true type not listed
        row("A1", ["C1"], predicted="reverse"),  # searched on the wrong side
    ]
    misses = _misses(rows, LABELLED)
    assert misses["missed_at_1"] == 3
    shares = misses["first_candidate_shares"]
    assert shares["authority"] == round(2 / 3, 4)
    assert shares["authority+denomination"] == round(1 / 3, 4)
    assert shares["mint"] == round(2 / 3, 4) and shares["material"] == 1.0
    assert misses["wrong_side"] == round(1 / 3, 4)
    assert misses["true_type_ranked_2_to_8"] == 1 and misses["true_type_not_in_candidates"] == 2


def test_no_miss_is_said_plainly():
    assert _misses([row("A1", ["A1"])], LABELLED) == {"missed_at_1": 0}
