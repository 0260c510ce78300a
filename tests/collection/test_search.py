"""Full-text search: the search columns (collection.search) and the ranked item search selector."""

from __future__ import annotations

import pytest

from collection.models import Item
from collection.search import item_refresh_search, item_search, prefix_tsquery, query_terms
from tests.factories import make_concept, make_item


class TestQueryTerms:
    def test_it_lowercases_and_drops_punctuation(self):
        assert query_terms("[DV] CONSTANTI-NVS") == ["dv", "constanti", "nvs"]

    def test_it_returns_nothing_for_punctuation_only(self):
        assert query_terms(" -- ! ") == []

    def test_prefix_tsquery_makes_every_term_a_prefix(self):
        assert prefix_tsquery(["constanti", "avg"]) == "constanti:* & avg:*"


@pytest.fixture
def coins(db) -> dict[str, Item]:
    constantius = make_concept("authority", "Constantius II")
    antioch = make_concept("mint", "Antioch")
    items = {
        "constantius": make_item(
            reference="RIC VIII Constantinople 37",
            title="Billon AE3",
            obverse_legend="[DV] CONSTANTI-NVS PT AVGG",
            concepts=[constantius],
        ),
        "providentia": make_item(
            reference="RIC IV 643g",
            title="Dupondius",
            reverse_legend="PROVIDENTIA AVG S C",
            reverse_description="Providentia standing left",
        ),
        "antioch": make_item(reference="RIC X 1", title="Follis", concepts=[antioch]),
    }
    item_refresh_search(item_ids=[item.pk for item in items.values()])
    return items


def _search(text: str) -> list[Item]:
    return list(item_search(Item.objects.all(), text=text).order_by("-rank", "pk"))


@pytest.mark.django_db
class TestItemRefreshSearch:
    def test_it_fills_search_text_with_legends_and_concept_labels(self, coins):
        item = Item.objects.get(pk=coins["constantius"].pk)
        assert "constanti-nvs" in item.search_text
        assert "constantius ii" in item.search_text
        assert item.search_vector

    def test_it_ignores_an_empty_id_list(self, coins):
        item_refresh_search(item_ids=[])  # no error, no query needed
        assert Item.objects.get(pk=coins["antioch"].pk).search_text


@pytest.mark.django_db
class TestItemSearch:
    def test_a_partial_legend_finds_the_full_word(self, coins):
        assert _search("CONSTANTI") == [coins["constantius"]]

    def test_a_fragment_inside_a_word_matches_by_substring(self, coins):
        assert _search("STANTIN") == [coins["constantius"]]

    def test_concept_labels_are_searchable(self, coins):
        assert _search("antioch") == [coins["antioch"]]

    def test_every_word_must_match(self, coins):
        assert _search("providentia dupondius") == [coins["providentia"]]
        assert _search("providentia follis") == []

    def test_title_matches_rank_above_description_matches(self, coins):
        title_hit = make_item(reference="RIC X 9", title="Providentia type")
        item_refresh_search(item_ids=[title_hit.pk])
        results = _search("providentia")
        assert results[0] == title_hit
        assert coins["providentia"] in results

    def test_text_without_words_filters_nothing(self, coins):
        assert len(_search("!!")) == 3
