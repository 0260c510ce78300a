"""The catalogue as mlcore sees it: CatalogueRecords built from the database, and items' designs per side."""

from __future__ import annotations

from pathlib import Path

from django.db.models import Prefetch

from collection.models import ConceptKind, Item, ItemStatus, Side, Specimen, SpecimenImage
from mlcore.dataset import CatalogueRecord, design_key


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
        labels = _labels(specimen.item)
        authority = labels.get(ConceptKind.AUTHORITY, "")
        designs = {side: item_design(specimen.item, side, authority=authority) for side in (Side.OBVERSE, Side.REVERSE)}
        records.append(
            CatalogueRecord(
                record_id=specimen.record_id,
                type_id=item_type_id(specimen.item),
                images=paths,
                labels=labels,
                designs={side: key for side, key in designs.items() if key},
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


def item_authority(item: Item) -> str:
    """The label of the item's ruler (its first authority concept by label; "" without one).

    Reads ``item.key_concepts`` when a selector prefetched it, else the item's concepts.
    """
    concepts = getattr(item, "key_concepts", None)
    if concepts is None:
        concepts = item.concepts.all()
    labels = sorted(concept.label for concept in concepts if concept.kind == ConceptKind.AUTHORITY)
    return labels[0] if labels else ""


def item_design(item: Item, side: str, *, authority: str | None = None) -> str:
    """What one side of the item shows, as ``mlcore.dataset.design_key`` defines it (ruler, legend, description).

    Two types with the same key on a side look the same there: a photo of that side alone cannot
    tell them apart. "" when the catalogue does not describe the side.
    """
    if side == Side.OBVERSE:
        legend, description = item.obverse_legend, item.obverse_description
    elif side == Side.REVERSE:
        legend, description = item.reverse_legend, item.reverse_description
    else:
        return ""
    return design_key(item_authority(item) if authority is None else authority, legend, description)


def items_sharing_design(item: Item, side: str) -> list[Item]:
    """The published items (``item`` among them) that show the same design as ``item`` on ``side``.

    Only items of the same ruler can share a design, so only those are read.
    """
    authority = item_authority(item)
    key = item_design(item, side, authority=authority)
    if not key or not authority:
        return [item]
    same_ruler = Item.objects.filter(
        status=ItemStatus.PUBLISHED, concepts__kind=ConceptKind.AUTHORITY, concepts__label=authority
    ).only("pk", "reference", "title", "obverse_legend", "obverse_description", "reverse_legend", "reverse_description")
    found = [other for other in same_ruler.distinct() if item_design(other, side, authority=authority) == key]
    return found if any(other.pk == item.pk for other in found) else [item, *found]
