"""Natural order of references, record ids and labels, in Python and in PostgreSQL alike."""

from __future__ import annotations

import pytest
from django.db.models import F

from collection.models import Item
from collection.sorting import natural, natural_key
from tests.factories import make_concept, make_item

REFERENCES = ["ODC 11", "ODC 2", "RIC II Hadrian 658j", "ODC 10", "RIC II Hadrian 69b", "ODC 1", "1944.100.53310"]
NATURAL = ["1944.100.53310", "ODC 1", "ODC 2", "ODC 10", "ODC 11", "RIC II Hadrian 69b", "RIC II Hadrian 658j"]


class TestNaturalKey:
    def test_numbers_sort_by_value_not_by_their_first_digit(self):
        assert sorted(REFERENCES, key=natural_key) == NATURAL
        assert sorted(REFERENCES) != NATURAL  # as text they do not

    def test_empty_and_missing_text_sort_first(self):
        assert natural_key(None) == natural_key("") == ""


@pytest.mark.django_db
class TestNaturalInTheDatabase:
    def test_postgresql_orders_as_python_does(self):
        for reference in REFERENCES:
            make_item(reference=reference)
        ordered = Item.objects.order_by(natural(F("reference")), "pk").values_list("reference", flat=True)
        assert list(ordered) == NATURAL

    def test_the_item_list_and_a_concept_page_sort_references_naturally(self, client):
        ruler = make_concept("authority", "Hadrian")
        for reference in ("ODC 10", "ODC 2", "ODC 1", "ODC 11"):
            make_item(reference=reference, concepts=[ruler])
        for url in ("/items/?sort=reference", ruler.get_absolute_url()):
            html = client.get(url).content.decode()
            positions = [html.index(f">ODC {n}<") for n in (1, 2, 10, 11)]
            assert positions == sorted(positions), url
