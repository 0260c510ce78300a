"""The catalogue as mlcore training data: CatalogueRecords built from the database."""

from __future__ import annotations

from pathlib import Path

from django.db.models import Prefetch

from collection.models import Item, Specimen, SpecimenImage
from mlcore.dataset import CatalogueRecord


def catalogue_records(*, exclude_record_ids: set[str] = frozenset()) -> list[CatalogueRecord]:
    """One record per specimen attributed to an item and with at least one local image file.

    The type id is the item's URI (the catalogue type), falling back to its primary key; labels are
    the item's concepts of every kind (``mlcore.metadata.metadata_fields`` picks what is predicted).
    """
    images = SpecimenImage.objects.exclude(image="").only("id", "side", "image", "specimen_id")
    specimens = (
        Specimen.objects.filter(item__isnull=False)
        .exclude(record_id__in=exclude_record_ids)
        .select_related("item")
        .prefetch_related(Prefetch("images", queryset=images), "item__concepts")
        .order_by("pk")
    )
    records = []
    for specimen in specimens:
        paths = {image.side: Path(image.image.path) for image in specimen.images.all() if image.side != "other"}
        if not paths:
            continue
        records.append(
            CatalogueRecord(
                record_id=specimen.record_id,
                type_id=item_type_id(specimen.item),
                images=paths,
                labels=_labels(specimen.item),
            )
        )
    return records


def _labels(item: Item) -> dict[str, str]:
    """{kind: label} of the item's concepts, every kind (training predicts those with enough examples).

    An item with several concepts of one kind (two rulers on one coin) keeps the first by label.
    """
    labels: dict[str, str] = {}
    for concept in sorted(item.concepts.all(), key=lambda c: (c.kind, c.label)):
        labels.setdefault(concept.kind, concept.label)
    return labels


def item_type_id(item: Item) -> str:
    return item.uri or f"item:{item.pk}"
