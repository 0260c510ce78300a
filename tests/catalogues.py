"""Hand-made catalogues for tests: small enough to check every figure by hand."""

from __future__ import annotations

from pathlib import Path

from mlcore.dataset import CatalogueRecord, design_key

BOTH = {"obverse": Path("o.jpg"), "reverse": Path("r.jpg")}
HADRIAN = design_key("Hadrian", "HADRIANVS AVG COS III P P", "Bust laureate right")


def coin(record_id: str, type_id: str, obverse: str, reverse: str) -> CatalogueRecord:
    return CatalogueRecord(record_id, type_id, dict(BOTH), {}, {"obverse": obverse, "reverse": reverse})


# Three types share Hadrian's obverse and differ on the reverse; a fourth has its own obverse.
CATALOGUE = [
    coin("a1", "A", HADRIAN, "felicitas"),
    coin("a2", "A", HADRIAN, "felicitas"),
    coin("b1", "B", HADRIAN, "fortuna"),
    coin("c1", "C", HADRIAN, "felicitas"),  # same reverse as A too: only a die detail differs
    coin("d1", "D", "trajan", "victory"),
]
