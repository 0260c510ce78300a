"""Reads of the catalogue shared by the public pages and the API: visibility, search, facets, figures.

Visibility lives here so pages and API agree: the public sees published items and public specimens;
curators see every item (and can filter by status). Findspot and provenance are never selected
for display by anything in this module's callers; serializers and templates list fields explicitly.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Count, Max, Min, Prefetch, Q, QuerySet

from collection.filtersets import FACET_KINDS, ItemFilterSet
from collection.models import Concept, ConceptKind, Item, ItemStatus, Specimen, SpecimenImage
from collection.roles import is_curator


def item_queryset(*, user=None) -> QuerySet[Item]:
    """Items the user may see: published ones, or all of them for curators."""
    qs = Item.objects.select_related("source")
    if user is not None and is_curator(user):
        return qs
    return qs.filter(status=ItemStatus.PUBLISHED)


def specimen_queryset(*, user=None) -> QuerySet[Specimen]:
    """Specimens the user may see: public ones, or all of them for curators."""
    qs = Specimen.objects.select_related("source", "item", "item__source")
    if user is not None and is_curator(user):
        return qs
    return qs.filter(is_public=True)


def public_specimens_prefetch(to_attr: str = "public_specimens") -> Prefetch:
    """Public specimens of an item with their images, in one query each (no N+1 on lists)."""
    images = SpecimenImage.objects.order_by("sort_order", "side", "pk")
    specimens = (
        Specimen.objects.filter(is_public=True)
        .select_related("source")
        .prefetch_related(Prefetch("images", queryset=images))
        .order_by("record_id")
    )
    return Prefetch("specimens", queryset=specimens, to_attr=to_attr)


def item_with_related(qs: QuerySet[Item]) -> QuerySet[Item]:
    """Prefetch what item cards and item pages show: concepts, public specimens and their images."""
    return qs.prefetch_related("concepts", public_specimens_prefetch())


@dataclass
class FacetValue:
    """One concept in a facet with the number of items it would leave."""

    slug: str
    label: str
    uri: str
    count: int
    selected: bool = False


@dataclass
class Facet:
    """The values of one concept kind for the current result, counted with the other filters applied."""

    kind: str
    label: str
    values: list[FacetValue] = field(default_factory=list)

    @property
    def selected(self) -> list[FacetValue]:
        return [value for value in self.values if value.selected]


def item_facets(*, data: Mapping, queryset: QuerySet[Item], kinds: Iterable[str] | None = None) -> list[Facet]:
    """Facet counts per concept kind for the items ``data`` selects from ``queryset``.

    Each kind is counted with every *other* active filter applied but not its own, so choosing a
    mint still shows the other mints one could switch to. Kinds without an active filter share
    one query; each kind with an active filter costs one more.
    """
    kinds = list(kinds or FACET_KINDS)
    active = {kind: _getlist(data, kind) for kind in kinds}
    groups: list[tuple[list[str], Mapping]] = []
    idle = [kind for kind in kinds if not active[kind]]
    if idle:
        groups.append((idle, data))
    for kind in kinds:
        if active[kind]:
            without = _without(data, kind)
            groups.append(([kind], without))

    counts: dict[str, list[FacetValue]] = {kind: [] for kind in kinds}
    through = Item.concepts.through.objects
    for group_kinds, group_data in groups:
        items = ItemFilterSet(data=group_data, queryset=queryset).qs.order_by().values("pk")
        rows = (
            through.filter(item_id__in=items, concept__kind__in=group_kinds)
            .values("concept__kind", "concept__slug", "concept__label", "concept__uri")
            .annotate(count=Count("item_id"))
            .order_by("concept__kind", "-count", "concept__label")
        )
        for row in rows:
            kind = row["concept__kind"]
            slug = row["concept__slug"]
            counts[kind].append(
                FacetValue(
                    slug=slug,
                    label=row["concept__label"],
                    uri=row["concept__uri"],
                    count=row["count"],
                    selected=slug in active[kind],
                )
            )

    # A selected value that the other filters exclude still has to be shown (to be removable).
    missing = [(kind, slug) for kind in kinds for slug in active[kind] if slug not in {v.slug for v in counts[kind]}]
    if missing:
        lookup = Q()
        for kind, slug in missing:
            lookup |= Q(kind=kind, slug=slug)
        for concept in Concept.objects.filter(lookup):
            counts[concept.kind].append(FacetValue(concept.slug, concept.label, concept.uri, 0, selected=True))

    return [Facet(kind=kind, label=Concept(kind=kind).kind_label, values=counts[kind]) for kind in kinds]


def item_summary(qs: QuerySet[Item]) -> dict[str, int | None]:
    """Number of items and earliest/latest year in a result, in one query (date inputs show the range)."""
    return qs.order_by().aggregate(count=Count("pk"), earliest=Min("date_from"), latest=Max("date_to"))


def _getlist(data: Mapping, key: str) -> list[str]:
    values = data.getlist(key) if hasattr(data, "getlist") else data.get(key) or []
    if isinstance(values, str):
        values = [values]
    return [v for v in values if v]


def _without(data: Mapping, key: str) -> Mapping:
    if hasattr(data, "copy") and hasattr(data, "setlist"):
        copy = data.copy()
        copy.pop(key, None)
        return copy
    return {k: v for k, v in data.items() if k != key}


@dataclass
class Measurement:
    """Count, mean and range of one measurement over a set of specimens."""

    count: int
    mean: Decimal | None = None
    minimum: Decimal | None = None
    maximum: Decimal | None = None


def specimen_measurements(specimens: Iterable[Specimen]) -> dict[str, Measurement]:
    """Weight and diameter summaries of already-loaded specimens (no query)."""
    specimens = list(specimens)
    result = {}
    for name, attr, places in (("weight_g", "weight_g", "0.01"), ("diameter_mm", "diameter_mm", "0.1")):
        values = [getattr(s, attr) for s in specimens if getattr(s, attr) is not None]
        if not values:
            result[name] = Measurement(count=0)
            continue
        mean = Decimal(str(statistics.fmean(float(v) for v in values))).quantize(Decimal(places))
        result[name] = Measurement(count=len(values), mean=mean, minimum=min(values), maximum=max(values))
    return result


def collection_figures() -> dict:
    """Headline numbers of the public collection for the home page."""
    items = Item.objects.filter(status=ItemStatus.PUBLISHED)
    specimens = Specimen.objects.filter(is_public=True)
    counts = {
        row["kind"]: row["n"]
        for row in Concept.objects.filter(items__status=ItemStatus.PUBLISHED)
        .values("kind")
        .annotate(n=Count("pk", distinct=True))
        .order_by()
    }
    return {
        "items": items.count(),
        "specimens": specimens.count(),
        "images": SpecimenImage.objects.filter(specimen__is_public=True).count(),
        "concepts": [(_kind_plural(kind), kind, n) for kind, n in _by_kind_order(counts)],
        "synthetic": items.filter(source__is_synthetic=True).exists(),
    }


def _kind_plural(kind: str) -> str:
    """A headline figure's label ("15 authorities"); a kind that is not a ``ConceptKind`` shows its slug."""
    return ConceptKind(kind).plural if kind in ConceptKind.values else kind


def _by_kind_order(counts: dict[str, int]) -> list[tuple[str, int]]:
    order = list(ConceptKind.values)
    return sorted(counts.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))


def recent_items(*, limit: int = 8) -> list[Item]:
    """The most recently added published items, with what a card shows."""
    qs = item_queryset().order_by("-created_at", "-pk")[:limit]
    return list(item_with_related(qs))


def concept_items(*, concept: Concept, user=None) -> QuerySet[Item]:
    """Items of one concept visible to the user, ready for cards."""
    return item_with_related(item_queryset(user=user).filter(concepts=concept)).order_by("reference", "title", "pk")
