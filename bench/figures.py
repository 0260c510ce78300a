"""The identification figures every benchmark reports, each beside what a photo can tell (its ceiling).

One row per query: the photographed coin's record, the sides its photos show, the ranked candidate
types, the predicted sides and the photo regime. ``identification_figures`` gives, per regime and
for all queries together: recall@1/@8 of single photos and of pairs, per photographed side, the
design recall@1 (the first candidate shows the photographed design), the side accuracy, and the
ceiling of each recall (``mlcore.ceiling``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mlcore.ceiling import DesignIndex, ceilings_by_kind
from mlcore.dataset import CatalogueRecord, type_key
from mlcore.retrieval import recall_at


@dataclass
class QueryRow:
    """What one query photographed and what it got back."""

    record: CatalogueRecord
    sides: tuple[str, ...]  # the true sides of its photos ("" where unknown)
    ranked: list[str]  # candidate types, best first
    predicted_sides: list[str] = field(default_factory=list)
    regime: str = ""
    names: list[str] = field(default_factory=list)  # each photo's name (a file, or record:side:regime)

    @property
    def truth(self) -> str:
        return type_key(self.record)


def _mean(values: Sequence[bool]) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def _recalls(rows: Sequence[QueryRow], index: DesignIndex, suffix: str = "") -> dict[str, float | None]:
    pairs = [(row.ranked, row.truth) for row in rows]
    known = [row for row in rows if all(row.sides)]
    return {
        f"recall_at_1{suffix}": recall_at(pairs, 1),
        f"recall_at_8{suffix}": recall_at(pairs, 8),
        f"design_recall_at_1{suffix}": _mean(
            [bool(row.ranked) and index.design_hit(row.record, row.sides, row.ranked[0]) for row in known]
        ),
    }


def regime_figures(rows: Sequence[QueryRow], index: DesignIndex) -> dict:
    singles = [row for row in rows if len(row.sides) == 1]
    pairs = [row for row in rows if len(row.sides) == 2]
    sides_single = [p == t for row in singles for p, t in zip(row.predicted_sides, row.sides, strict=False) if t]
    sides_pair = [p == t for row in pairs for p, t in zip(row.predicted_sides, row.sides, strict=False) if t]
    return {
        "queries": len(singles),
        "pair_queries": len(pairs),
        **_recalls(singles, index),
        **_recalls(pairs, index, "_pair"),
        "by_side": {
            side: {"queries": len(subset), **_recalls(subset, index)}
            for side in ("obverse", "reverse")
            for subset in [[row for row in singles if row.sides == (side,)]]
            if subset
        },
        "side_accuracy_single": _mean(sides_single),
        "side_accuracy_pair": _mean(sides_pair),
        "ceiling": ceilings_by_kind(index, [(row.record, row.sides) for row in rows if all(row.sides)]),
    }


def identification_figures(rows: Sequence[QueryRow], catalogue: Sequence[CatalogueRecord]) -> dict:
    """{"all": figures, "<regime>": figures…} (see the module docstring); ``catalogue``: every record searched."""
    index = DesignIndex(catalogue)
    regimes = sorted({row.regime for row in rows if row.regime})
    out = {"all": regime_figures(rows, index)}
    if len(regimes) > 1:
        out.update({regime: regime_figures([row for row in rows if row.regime == regime], index) for regime in regimes})
    return out
