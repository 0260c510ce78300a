"""FilterSets shared by pages and API, and the facet counts computed from them."""

from __future__ import annotations

import pytest
from django.http import QueryDict

from collection.filtersets import ConceptFilterSet, ItemFilterSet, SpecimenFilterSet
from collection.models import Concept, Item, ItemStatus, Specimen
from collection.search import item_refresh_search
from collection.selectors import item_facets
from tests.factories import make_concept, make_image, make_item, make_specimen


def _ids(qs) -> list[int]:
    return [obj.pk for obj in qs]


def _items(query: str, queryset=None) -> list[Item]:
    filterset = ItemFilterSet(data=QueryDict(query), queryset=queryset or Item.objects.all())
    assert filterset.is_valid(), filterset.errors
    return list(filterset.qs)


@pytest.fixture
def catalogue(db) -> dict:
    c = {
        "augustus": make_concept("authority", "Augustus"),
        "nero": make_concept("authority", "Nero"),
        "rome": make_concept("mint", "Rome"),
        "lyon": make_concept("mint", "Lugdunum"),
        "gold": make_concept("material", "Gold"),
        "silver": make_concept("material", "Silver"),
    }
    c["aug_rome_gold"] = make_item(
        reference="RIC I 1", title="Aureus", date_from=-2, date_to=4, concepts=[c["augustus"], c["rome"], c["gold"]]
    )
    c["aug_lyon_silver"] = make_item(
        reference="RIC I 2",
        title="Denarius",
        date_from=10,
        date_to=10,
        concepts=[c["augustus"], c["lyon"], c["silver"]],
    )
    c["nero_rome_silver"] = make_item(
        reference="RIC I 3",
        title="Denarius of Nero",
        date_from=64,
        date_to=68,
        concepts=[c["nero"], c["rome"], c["silver"]],
    )
    c["undated"] = make_item(reference="RIC I 4", title="Undated", concepts=[c["nero"]])
    item_refresh_search(item_ids=Item.objects.values_list("pk", flat=True))
    return c


@pytest.mark.django_db
class TestItemFilterSet:
    def test_it_filters_by_exact_type_uri(self, catalogue):
        item = catalogue["aug_lyon_silver"]
        assert _items(f"uri={item.uri}") == [item]
        assert _items(f"uri={item.uri}x") == []

    def test_it_filters_by_concept_slug_of_the_named_kind(self, catalogue):
        assert _items("mint=rome") == [catalogue["aug_rome_gold"], catalogue["nero_rome_silver"]]

    def test_values_of_one_kind_are_ored_and_kinds_are_anded(self, catalogue):
        assert len(_items("mint=rome&mint=lugdunum")) == 3
        assert _items("mint=rome&authority=nero") == [catalogue["nero_rome_silver"]]

    def test_a_slug_of_another_kind_matches_nothing(self, catalogue):
        assert _items("mint=augustus") == []

    def test_it_rejects_a_malformed_slug(self, catalogue):
        filterset = ItemFilterSet(data=QueryDict("mint=rome%27;drop"), queryset=Item.objects.all())
        assert not filterset.is_valid()
        assert "mint" in filterset.errors

    def test_date_range_selects_overlapping_items(self, catalogue):
        assert _items("date_from=5&date_to=20") == [catalogue["aug_lyon_silver"]]
        assert _items("date_from=-10&date_to=0") == [catalogue["aug_rome_gold"]]
        assert catalogue["undated"] not in _items("date_from=-1000")

    def test_it_filters_by_status(self, catalogue):
        draft = make_item(title="Draft type", status=ItemStatus.DRAFT)
        assert _items("status=draft") == [draft]

    def test_search_and_facets_combine(self, catalogue):
        assert _items("q=denarius&mint=rome") == [catalogue["nero_rome_silver"]]

    @pytest.mark.parametrize(
        ("sort", "expected"),
        [
            ("reference", ["aug_rome_gold", "aug_lyon_silver", "nero_rome_silver", "undated"]),
            ("date", ["aug_rome_gold", "aug_lyon_silver", "nero_rome_silver", "undated"]),
            ("-date", ["nero_rome_silver", "aug_lyon_silver", "aug_rome_gold", "undated"]),
            ("title", ["aug_rome_gold", "aug_lyon_silver", "nero_rome_silver", "undated"]),
        ],
    )
    def test_it_sorts(self, catalogue, sort, expected):
        assert _items(f"sort={sort}") == [catalogue[key] for key in expected]

    def test_items_without_a_reference_sort_last(self, catalogue):
        blank = make_item(reference="", title="AAA unreferenced")
        assert _items("sort=reference")[-1] == blank

    def test_relevance_puts_the_best_match_first(self, catalogue):
        best = make_item(reference="RIC I 9", title="Nero Nero Nero")
        item_refresh_search(item_ids=[best.pk])
        results = _items("q=nero&sort=relevance")
        assert results[0] == best
        assert set(results) >= {catalogue["nero_rome_silver"], catalogue["undated"]}

    def test_relevance_without_a_query_falls_back_to_reference(self, catalogue):
        assert _items("sort=relevance")[0] == catalogue["aug_rome_gold"]


@pytest.mark.django_db
class TestItemFacets:
    def _facets(self, query: str) -> dict[str, dict[str, tuple[int, bool]]]:
        facets = item_facets(data=QueryDict(query), queryset=Item.objects.all())
        return {f.kind: {v.slug: (v.count, v.selected) for v in f.values} for f in facets}

    def test_it_counts_items_per_concept(self, catalogue):
        facets = self._facets("")
        assert facets["authority"] == {"augustus": (2, False), "nero": (2, False)}
        assert facets["mint"] == {"rome": (2, False), "lugdunum": (1, False)}
        assert facets["denomination"] == {}

    def test_counts_respect_the_other_filters(self, catalogue):
        facets = self._facets("authority=nero")
        assert facets["mint"] == {"rome": (1, False)}
        assert facets["material"] == {"silver": (1, False)}

    def test_a_kind_ignores_its_own_filter_so_alternatives_stay_visible(self, catalogue):
        facets = self._facets("mint=rome")
        assert facets["mint"] == {"rome": (2, True), "lugdunum": (1, False)}
        assert facets["authority"] == {"augustus": (1, False), "nero": (1, False)}

    def test_counts_respect_search_and_dates(self, catalogue):
        assert self._facets("q=denarius")["authority"] == {"augustus": (1, False), "nero": (1, False)}
        assert self._facets("date_from=60")["authority"] == {"nero": (1, False)}

    def test_a_selected_value_excluded_by_other_filters_is_still_listed(self, catalogue):
        facets = self._facets("authority=nero&material=gold")
        assert facets["authority"]["augustus"] == (1, False)
        assert facets["authority"].get("nero") == (0, True)

    def test_it_uses_one_query_when_no_concept_filter_is_active(self, catalogue, django_assert_num_queries):
        with django_assert_num_queries(1):
            item_facets(data=QueryDict("q=denarius"), queryset=Item.objects.all())


@pytest.mark.django_db
class TestSpecimenFilterSet:
    def test_it_filters_by_item_uri_record_id_and_images(self):
        item = make_item()
        with_image = make_specimen(item, record_id="A.1")
        make_image(with_image)
        bare = make_specimen(None, record_id="B.2")

        def run(query: str) -> list[Specimen]:
            return list(SpecimenFilterSet(data=QueryDict(query), queryset=Specimen.objects.all()).qs)

        assert run(f"item_uri={item.uri}") == [with_image]
        assert run("record_id=b.2") == [bare]
        assert run("has_images=true") == [with_image]
        assert run("has_images=false") == [bare]


@pytest.mark.django_db
class TestConceptFilterSet:
    def test_it_filters_by_kind_and_label(self):
        rome = make_concept("mint", "Rome", uri="http://nomisma.org/id/rome")
        make_concept("authority", "Romulus")

        def run(query: str) -> list[Concept]:
            return list(ConceptFilterSet(data=QueryDict(query), queryset=Concept.objects.all()).qs)

        assert run("kind=mint&q=rom") == [rome]
        assert len(run("q=rom")) == 2
        assert run("uri=http://nomisma.org/id/rome") == [rome]
