"""identification.catalogue: the catalogue in the database as mlcore training records."""

from __future__ import annotations

import pytest

from identification.catalogue import catalogue_records, item_type_id
from tests.factories import make_concept, make_image, make_item, make_specimen

pytestmark = pytest.mark.django_db


def test_a_record_carries_every_concept_kind_of_its_item():
    item = make_item(
        uri="http://numismatics.org/ocre/id/ric.4.ss.1",
        concepts=[
            make_concept("authority", "Septimius Severus"),
            make_concept("authority", "Caracalla"),  # two rulers on one coin: the first by label is kept
            make_concept("region", "Italy"),
            make_concept("material", "Silver"),
        ],
    )
    specimen = make_specimen(item)
    make_image(specimen, side="obverse")
    make_image(specimen, side="reverse")
    (record,) = catalogue_records()
    assert record.record_id == specimen.record_id
    assert record.type_id == "http://numismatics.org/ocre/id/ric.4.ss.1"
    assert record.labels == {"authority": "Caracalla", "region": "Italy", "material": "Silver"}
    assert set(record.images) == {"obverse", "reverse"}


def test_a_record_carries_its_items_design_per_side_as_the_benchmarks_and_training_read_it():
    from mlcore.dataset import design_key

    item = make_item(concepts=[make_concept("authority", "Hadrian")])
    item.obverse_legend, item.obverse_description = "HADRIANVS AVG", "Bust laureate right"
    item.save()
    specimen = make_specimen(item)
    make_image(specimen, side="obverse")
    (record,) = catalogue_records()
    assert record.designs == {"obverse": design_key("Hadrian", "HADRIANVS AVG", "Bust laureate right")}


def test_specimens_without_an_item_or_an_image_or_left_out_are_not_records():
    item = make_item(uri="")  # no type URI: the item's key stands in
    make_specimen(item)  # no image
    make_image(make_specimen(None))  # not attributed
    left_out = make_specimen(item)
    make_image(left_out)
    kept = make_specimen(item)
    make_image(kept)
    records = catalogue_records(exclude_record_ids={left_out.record_id})
    assert [r.record_id for r in records] == [kept.record_id]
    assert records[0].type_id == item_type_id(item) == f"item:{item.pk}"
