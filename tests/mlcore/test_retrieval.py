"""In-memory index, grouping image hits into items, and combining both sides of a coin."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore.retrieval import InMemoryIndex, combine_sides, group_by_item


def _unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def index() -> InMemoryIndex:
    index = InMemoryIndex()
    index.add(
        ["a1", "a2", "b1", "c1"],
        np.stack([_unit(1, 0, 0), _unit(0.9, 0.1, 0), _unit(0, 1, 0), _unit(0.7, 0.7, 0)]),
        ["A", "A", "B", "C"],
        ["obverse", "reverse", "obverse", "obverse"],
    )
    return index


class TestInMemoryIndex:
    def test_it_returns_the_nearest_images_best_first(self, index):
        hits = index.search(_unit(1, 0.05, 0), k=3)
        assert [h.image_id for h in hits] == ["a1", "a2", "c1"]
        assert hits[0].score == pytest.approx(float(_unit(1, 0, 0) @ _unit(1, 0.05, 0)))

    def test_it_filters_by_side_and_excludes_ids(self, index):
        hits = index.search(_unit(1, 0, 0), k=10, side="obverse", exclude={"a1"})
        assert [h.image_id for h in hits] == ["c1", "b1"]

    def test_it_rejects_vectors_of_another_dimension(self, index):
        with pytest.raises(ValueError):
            index.add(["x"], np.ones((1, 4)), ["X"])

    def test_an_empty_index_finds_nothing(self):
        assert InMemoryIndex().search(_unit(1, 0), k=5) == []


class TestGroupByItem:
    def test_it_never_returns_one_item_twice_and_keeps_the_best_hit(self):
        hits = [("a1", "A", 0.9), ("a2", "A", 0.95), ("b1", "B", 0.8), ("a3", "A", 0.7), ("c1", "C", 0.85)]
        grouped = group_by_item(hits, k=8)
        assert [g.item_id for g in grouped] == ["A", "C", "B"]
        assert grouped[0].image_id == "a2"

    def test_it_cuts_at_k(self):
        hits = [(f"i{n}", f"item{n}", 1.0 - n / 100) for n in range(20)]
        assert len(group_by_item(hits, k=8)) == 8


class TestCombineSides:
    def test_agreement_of_both_sides_beats_one_strong_side(self):
        obverse = [("x.o", "X", 0.90), ("y.o", "Y", 0.80), ("z.o", "Z", 0.50)]
        reverse = [("y.r", "Y", 0.80), ("w.r", "W", 0.70), ("z.r", "Z", 0.40)]
        combined = combine_sides(obverse, reverse, k=8)
        assert combined[0].item_id == "Y"
        assert combined[0].score == pytest.approx(1.60)
        # X was found by the obverse only: its reverse counts at most the weakest listed reverse score.
        x = next(p for p in combined if p.item_id == "X")
        assert x.score == pytest.approx(0.90 + 0.40)
        assert x.reverse is None and x.obverse.image_id == "x.o"

    def test_each_item_appears_once(self):
        obverse = [("a1", "A", 0.9), ("a2", "A", 0.8)]
        reverse = [("a3", "A", 0.7), ("b1", "B", 0.6)]
        combined = combine_sides(obverse, reverse)
        assert sorted(p.item_id for p in combined) == ["A", "B"]
