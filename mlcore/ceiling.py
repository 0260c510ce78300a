"""What a photo can tell: the best recall any model could reach, because types share designs.

Many catalogue types share one side's design (same ruler, legend and bust) and differ only on the
other side. A model that recognises a photographed design perfectly still has to guess among the
``n`` catalogue types that show it, so its expected recall@k is ``min(1, k / n)``. A pair of photos
narrows the guess to the types that show both designs. Every recall a benchmark reports stands
beside this ceiling, computed from the catalogue's labels (``mlcore.dataset.side_design``).

``design_hit`` is the other half: whether a candidate type shows the photographed side's design
(the "design recall@1" of a first candidate), which a perfect model always achieves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from mlcore.dataset import CatalogueRecord, side_design, type_key


class DesignIndex:
    """Which catalogue types show which design on which side (a type shows every design of its specimens)."""

    def __init__(self, records: Iterable[CatalogueRecord]) -> None:
        self.types_of: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.designs_of: dict[tuple[str, str], set[str]] = defaultdict(set)
        for record in records:
            for side in record.images or {"obverse": None, "reverse": None}:
                design = side_design(record, side)
                self.types_of[(side, design)].add(type_key(record))
                self.designs_of[(type_key(record), side)].add(design)

    def tied(self, record: CatalogueRecord, sides: Sequence[str]) -> set[str]:
        """The types that show what the photos of ``sides`` of ``record`` show (its own type included)."""
        sets = [self.types_of.get((side, side_design(record, side)), set()) for side in sides]
        tied = set.intersection(*sets) if sets else set()
        return tied | {type_key(record)}

    def design_hit(self, record: CatalogueRecord, sides: Sequence[str], candidate_type: str) -> bool:
        """Whether ``candidate_type`` shows the design of every photographed side of ``record``."""
        return all(side_design(record, side) in self.designs_of.get((candidate_type, side), ()) for side in sides)


def expected_recall(tied: int, k: int) -> float:
    """The recall@k of a perfect design recogniser that picks at random among ``tied`` types."""
    return min(1.0, k / max(1, tied))


def ceiling(
    index: DesignIndex, queries: Iterable[tuple[CatalogueRecord, Sequence[str]]], ks: Sequence[int] = (1, 8)
) -> dict[str, float]:
    """{"recall_at_K": mean expected recall} over queries of (record, photographed sides)."""
    ties = [len(index.tied(record, sides)) for record, sides in queries]
    if not ties:
        return {}
    return {f"recall_at_{k}": round(float(np.mean([expected_recall(n, k) for n in ties])), 4) for k in ks}


def ceilings_by_kind(
    index: DesignIndex, queries: Iterable[tuple[CatalogueRecord, Sequence[str]]], ks: Sequence[int] = (1, 8)
) -> dict[str, dict[str, float]]:
    """The ceiling per kind of query: a single obverse, a single reverse, a single photo, a pair."""
    groups: dict[str, list] = defaultdict(list)
    for record, sides in queries:
        sides = tuple(sides)
        if len(sides) == 1:
            groups[sides[0]].append((record, sides))
            groups["single"].append((record, sides))
        else:
            groups["pair"].append((record, sides))
    return {kind: ceiling(index, rows, ks) for kind, rows in sorted(groups.items())}
