"""In-memory index, grouping image hits into items, and combining both sides of a coin."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore.retrieval import (
    Hit,
    InMemoryIndex,
    RotatedHit,
    combine_sides,
    group_by_item,
    merge_turns,
    rerank_by_agreement,
    search_turns,
    turn_bonus,
)


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


class TestRerankByAgreement:
    @staticmethod
    def hits():
        """X is closest; A and B (Nero) follow; a long tail of Galba items is the neighbourhood at large."""
        found = [Hit("x1", "X", 0.91), Hit("a1", "A", 0.905), Hit("b1", "B", 0.90)]
        return found + [Hit(f"t{i}", f"T{i}", 0.80 - i * 0.001) for i in range(40)]

    LABELS = {"X": {"authority": "Galba"}, "A": {"authority": "Nero"}, "B": {"authority": "Nero"}} | {
        f"T{i}": {"authority": "Galba"} for i in range(40)
    }

    def test_the_item_the_nearest_images_metadata_points_to_moves_up(self):
        reranked = rerank_by_agreement(self.hits(), self.LABELS)
        ranked = [h.item_id for h in group_by_item(reranked, k=4)]
        assert ranked[0] == "A" and ranked.index("X") > 0
        # Weight 0, or items without labels: the similarity order, unchanged.
        plain = [h.item_id for h in self.hits()]
        assert [h.item_id for h in rerank_by_agreement(self.hits(), self.LABELS, 0.0)] == plain
        assert [h.item_id for h in rerank_by_agreement(self.hits(), {})] == plain

    def test_turned_hits_keep_their_turn(self):
        hits = [RotatedHit(h.image_id, h.item_id, h.score, i % 3) for i, h in enumerate(self.hits())]
        reranked = rerank_by_agreement(hits, self.LABELS)
        assert {h.image_id: h.turn for h in reranked} == {h.image_id: h.turn for h in hits}


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


class TestRotationSearch:
    def test_each_image_scores_by_its_best_turn_and_remembers_it(self):
        per_turn = [[("a", "A", 0.5), ("b", "B", 0.7)], [("a", "A", 0.9), ("c", "C", 0.6)]]
        merged = merge_turns(per_turn)
        assert [(h.image_id, h.turn) for h in merged] == [("a", 1), ("b", 0), ("c", 1)]
        assert merged[0].score == pytest.approx(0.9)

    def test_a_turn_bonus_can_overrule_a_slightly_better_implausible_turn(self):
        per_turn = [[("a", "A", 0.80)], [("a", "A", 0.82)]]
        assert merge_turns(per_turn)[0].turn == 1
        assert merge_turns(per_turn, bonus=[0.0, -0.05])[0].turn == 0

    def test_it_needs_one_bonus_per_turn(self):
        with pytest.raises(ValueError):
            merge_turns([[("a", "A", 0.8)]], bonus=[0.0, 0.1])

    def test_merging_each_turns_top_k_is_exact_for_the_top_k_of_the_best_turn(self):
        rng = np.random.default_rng(0)
        catalogue = rng.normal(size=(300, 16)).astype(np.float32)
        index = InMemoryIndex()
        index.add([f"i{n}" for n in range(300)], catalogue, [f"item{n % 97}" for n in range(300)])
        turns = rng.normal(size=(6, 16)).astype(np.float32)
        bonus = rng.uniform(-0.1, 0.0, 6)
        hits = search_turns(index, turns, k=20, bonus=bonus)
        normed = catalogue / np.linalg.norm(catalogue, axis=1, keepdims=True)
        brute = (normed @ (turns / np.linalg.norm(turns, axis=1, keepdims=True)).T + bonus).max(axis=1)
        expected = [f"i{n}" for n in np.argsort(-brute)[:20]]
        assert [h.image_id for h in hits] == expected
        assert [h.score for h in hits] == pytest.approx(list(np.sort(brute)[::-1][:20]), abs=1e-5)

    def test_a_turned_query_finds_its_upright_match_only_through_the_right_turn(self, index):
        # Turn 0 (the estimate) points at B; turn 1 is the true orientation and matches A exactly.
        hits = search_turns(index, np.stack([_unit(0, 1, 0.2), _unit(1, 0, 0)]), k=2)
        assert hits[0].image_id == "a1" and hits[0].turn == 1

    def test_the_bonus_follows_the_estimators_probability_of_each_correction_angle(self):
        p = np.full(36, 0.001)
        p[9] = 0.965  # the photo looks turned by 90° counter-clockwise: turning it by 270° makes it upright
        angles = [0.0, 90.0, 270.0, 265.0]
        bonus = turn_bonus(p / p.sum(), angles, weight=0.01)
        assert np.argmax(bonus) == 2
        assert bonus[3] > bonus[0]  # interpolated between the bins around 95°
        assert bonus[1] == pytest.approx(bonus[0])
        assert np.all(turn_bonus(p, angles, weight=0.0) == 0.0)


def test_recall_at_counts_truths_within_the_first_k_answers():
    from mlcore.retrieval import recall_at

    rows = [(["a", "b", "c"], "b"), (["x", "y"], "z"), (["t"], "t")]
    assert recall_at(rows, 1) == round(1 / 3, 4)
    assert recall_at(rows, 2) == round(2 / 3, 4)
    assert recall_at([], 8) is None


class TestRankItems:
    """The one ranking every caller uses (the platform, the command line, the evaluations)."""

    @staticmethod
    def _index():
        from mlcore.retrieval import InMemoryIndex

        index = InMemoryIndex()
        unit = np.eye(4, dtype=np.float32)
        # item A: two obverse images near e0; item B: an obverse near e1 and a reverse near e2; item C: reverse e3
        vectors = np.stack([unit[0], 0.9 * unit[0] + 0.1 * unit[1], unit[1], unit[2], unit[3]])
        index.add(["a1", "a2", "b1", "b2", "c1"], vectors, ["A", "A", "B", "B", "C"], ["obverse"] * 3 + ["reverse"] * 2)
        return index

    @staticmethod
    def _rank(index, photos, labels=None, k=8):
        from mlcore.retrieval import rank_items

        labels = labels or {}
        return rank_items(
            photos,
            lambda vector, side: index.search(vector, 80, side),
            lambda items: {item: labels.get(item, {}) for item in items},
            k=k,
        )

    def test_each_item_once_by_its_best_image_and_turn(self):
        from mlcore.retrieval import QueryPhoto

        index = self._index()
        turned = np.stack([np.eye(4)[1], np.eye(4)[0]])  # turn 0 looks like B, turn 1 (90°) exactly like a1
        ranked = self._rank(index, [QueryPhoto(0, "obverse", turned, [10.0, 100.0])])
        assert [item.item_id for item in ranked] == ["A", "B"]
        assert ranked[0].image_id == "a1" and ranked[0].angle == 100.0 and ranked[0].score == pytest.approx(1.0)
        assert ranked[1].angle == 10.0 and ranked[0].side_scores == {"obverse": 1.0}

    def test_two_photos_prefer_the_item_both_agree_on(self):
        from mlcore.retrieval import QueryPhoto

        index = self._index()
        obverse = QueryPhoto(0, "obverse", (0.8 * np.eye(4)[0] + 0.6 * np.eye(4)[1])[None], [0.0])  # A a little better
        reverse = QueryPhoto(1, "reverse", np.eye(4)[2][None], [0.0])  # only B's reverse is like it
        ranked = self._rank(index, [obverse, reverse])
        assert ranked[0].item_id == "B" and set(ranked[0].side_scores) == {"obverse", "reverse"}
        assert ranked[0].position == 1 and ranked[0].image_id == "b2"  # the evidence: its best photo's match
        a = next(item for item in ranked if item.item_id == "A")
        assert a.side_scores["reverse"] == pytest.approx(
            min(h.score for h in index.search(np.eye(4)[2], 80, "reverse"))
        )

    def test_metadata_agreement_adds_to_the_score_and_ties_break_by_id(self):
        from mlcore.retrieval import QueryPhoto

        index = self._index()
        query = QueryPhoto(0, "obverse", (np.eye(4)[0] + np.eye(4)[1])[None] / np.sqrt(2), [0.0])
        plain = self._rank(index, [query])
        assert plain[0].agreement == 0.0
        labels = {"A": {"authority": "Hadrian"}, "B": {"authority": "Trajan"}}
        ranked = self._rank(index, [query], labels)
        assert [item.total for item in ranked] == sorted((item.total for item in ranked), reverse=True)
        assert all(item.total == pytest.approx(item.score + item.agreement) for item in ranked)
        assert self._rank(index, [query], labels) == ranked  # deterministic
        assert self._rank(index, [query], k=1) == plain[:1] and self._rank(index, []) == []
