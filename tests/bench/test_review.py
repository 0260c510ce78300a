"""bench.review: choosing test and review coins, and ranking items with a coin's own images hidden."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.review import _ranked, split_coins
from mlcore.dataset import CatalogueRecord


def _records() -> list[CatalogueRecord]:
    both = {"obverse": Path("o.jpg"), "reverse": Path("r.jpg")}
    records = [CatalogueRecord(f"a{i}", "A", dict(both)) for i in range(4)]
    records += [CatalogueRecord(f"b{i}", "B", dict(both)) for i in range(3)]
    records.append(CatalogueRecord("c0", "C", dict(both)))  # a type of its own: cannot be answered
    records.append(CatalogueRecord("d0", "D", {"obverse": Path("o.jpg")}))
    records.append(CatalogueRecord("d1", "D", {"obverse": Path("o.jpg")}))  # one photo only
    records.append(CatalogueRecord("x0", "", dict(both)))  # untyped
    return records


class TestSplitCoins:
    def test_test_and_review_coins_are_disjoint_and_answerable(self):
        test, review = split_coins(_records(), test_coins=3, reviews=10, seed=1)
        assert len(test) == 3 and len(review) == 4  # the pool has 7 coins
        assert not {r.record_id for r in test} & {r.record_id for r in review}
        assert {r.type_id for r in test + review} <= {"A", "B"}

    def test_it_is_seeded(self):
        first = split_coins(_records(), test_coins=2, reviews=2, seed=5)
        again = split_coins(_records(), test_coins=2, reviews=2, seed=5)
        other = [split_coins(_records(), test_coins=2, reviews=2, seed=s) for s in range(6, 12)]
        ids = lambda split: [r.record_id for part in split for r in part]  # noqa: E731
        assert ids(first) == ids(again)
        assert any(ids(o) != ids(first) for o in other)


def test_ranking_hides_the_coins_own_images_and_lists_each_item_once():
    index = [
        ("q", "obverse", "A"),
        ("a1", "obverse", "A"),
        ("b1", "obverse", "B"),
        ("b2", "obverse", "B"),
        ("c1", "reverse", "C"),
    ]
    catalogue = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    ranked, best = _ranked(catalogue, index, np.array([1.0, 0.0], dtype=np.float32), "obverse", "q")
    assert ranked == ["B", "A"]  # q's own perfect match hidden; C is the other side
    assert best["B"] == np.float32(0.8)
