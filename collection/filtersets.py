"""One FilterSet per listable model, shared by the public pages and the read-only API.

The item list page, the concept pages' "filter the collection" links, ``/api/v1/items/``,
``/api/v1/search/`` and ``/api/v1/facets/`` all read the same query parameters through
``ItemFilterSet``, so a URL copied from the page means the same thing to the API.
"""

from __future__ import annotations

import re

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import NullIf
from drf_spectacular.utils import extend_schema_field

from collection.models import Concept, ConceptKind, Item, ItemStatus, Specimen
from collection.search import item_search
from collection.sorting import natural

_SLUG = re.compile(r"[-a-zA-Z0-9_]+")  # fullmatch: "$" would let "rome\n" through
# ASCII digits, few enough for any bound used here (int() refuses more than 4300 digits on its own).
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,30}")
# What the schema promises for a concept parameter: a slug, or nothing (an empty value is no filter).
SLUG_PATTERN = r"^[-a-zA-Z0-9_]*$"
# Years are PostgreSQL integers (Item.date_from/date_to); a bound outside them could match nothing.
YEAR_MIN, YEAR_MAX = -(2**31), 2**31 - 1
# Ids are bigints (BigAutoField).
ID_MAX = 2**63 - 1


class SlugListField(forms.Field):
    """A repeated query parameter of slugs (``?mint=rome&mint=lyon``), de-duplicated, order kept."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value) -> list[str]:
        if not value:
            return []
        if isinstance(value, str):
            value = [value]
        # Not stripped: " rome" is refused like any other text that is not a slug, as the schema says.
        return [slug for slug in dict.fromkeys(str(v) for v in value) if slug]

    def validate(self, value: list[str]) -> None:
        super().validate(value)
        for slug in value:
            if not _SLUG.fullmatch(slug):
                # The slug goes in as a parameter, never into the message itself: django-filter
                # %-formats messages, so a "%" in what the user typed would crash it.
                raise ValidationError("%(slug)s is not a valid slug.", code="invalid_slug", params={"slug": repr(slug)})


class StrictBooleanField(forms.Field):
    """``true`` or ``false``; empty is no filter. Anything else is refused rather than ignored."""

    widget = forms.TextInput  # NullBooleanField's widgets quietly turn unknown values into "no filter"

    def to_python(self, value) -> bool | None:
        if not value:
            return None
        if value not in ("true", "false"):
            raise ValidationError("Use true or false.", code="invalid")
        return value == "true"


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class WholeNumberField(forms.IntegerField):
    """Digits with an optional minus ("12", "-44"); empty is no value.

    forms.IntegerField would also take " 12 ", "12.0" and "1_2": values a client did not mean as
    whole numbers are refused instead, as the schema's ``integer`` says.
    """

    def to_python(self, value) -> int | None:
        if value in self.empty_values:
            return None
        if not _WHOLE_NUMBER.fullmatch(str(value)):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return int(value)


class IntegerFilter(django_filters.NumberFilter):
    """A whole number between ``min_value`` and ``max_value`` (NumberFilter would take 1.5 too)."""

    field_class = WholeNumberField


def integer_filter(*, minimum: int, maximum: int, **kwargs) -> IntegerFilter:
    """An IntegerFilter whose OpenAPI schema states the bounds it validates."""
    schema = {"type": "integer", "minimum": minimum, "maximum": maximum}
    return extend_schema_field(schema)(IntegerFilter(min_value=minimum, max_value=maximum, **kwargs))


@extend_schema_field({"type": "string", "pattern": SLUG_PATTERN})
class ConceptSlugFilter(django_filters.MultipleChoiceFilter):
    """Items that have any of the given concepts of one kind (OR within a kind, AND across kinds).

    A subquery on the through table keeps the outer query free of joins, so no DISTINCT is needed
    and several concept filters combine cheaply.
    """

    field_class = SlugListField

    def __init__(self, *, kind: str, **kwargs) -> None:
        kwargs.setdefault("label", Concept(kind=kind).kind_label)
        kwargs["distinct"] = False
        super().__init__(**kwargs)
        self.kind = kind

    def filter(self, qs: QuerySet, value: list[str]) -> QuerySet:
        if not value:
            return qs
        through = Item.concepts.through.objects.filter(concept__kind=self.kind, concept__slug__in=value)
        return qs.filter(pk__in=through.values("item_id"))


def dates_overlap(*, date_from: int | None = None, date_to: int | None = None, prefix: str = "") -> Q:
    """Items whose date range overlaps [date_from, date_to] (either end open; a single year counts as both ends).

    ``prefix`` reaches the item through a relation ("item__" from a catalogue image's embedding).
    """
    condition = Q()
    if date_from is not None:  # the item's range ends in or after the requested start
        condition &= Q(**{f"{prefix}date_to__gte": date_from}) | Q(
            **{f"{prefix}date_to__isnull": True, f"{prefix}date_from__gte": date_from}
        )
    if date_to is not None:  # and starts in or before the requested end
        condition &= Q(**{f"{prefix}date_from__lte": date_to}) | Q(
            **{f"{prefix}date_from__isnull": True, f"{prefix}date_to__lte": date_to}
        )
    return condition


class ItemFilterSet(django_filters.FilterSet):
    """Filters for catalogue items: full-text ``q``, type ``uri``, concepts per kind, date overlap, status, sort."""

    SORT_CHOICES = (
        ("relevance", "Relevance"),
        ("reference", "Reference"),
        ("date", "Date (earliest first)"),
        ("-date", "Date (latest first)"),
        ("title", "Title"),
    )

    q = django_filters.CharFilter(method="filter_q", label="Search")
    uri = django_filters.CharFilter(field_name="uri", lookup_expr="exact", label="Type URI (exact)")
    authority = ConceptSlugFilter(kind=ConceptKind.AUTHORITY)
    mint = ConceptSlugFilter(kind=ConceptKind.MINT)
    region = ConceptSlugFilter(kind=ConceptKind.REGION)
    material = ConceptSlugFilter(kind=ConceptKind.MATERIAL)
    denomination = ConceptSlugFilter(kind=ConceptKind.DENOMINATION)
    object_type = ConceptSlugFilter(kind=ConceptKind.OBJECT_TYPE)
    date_from = integer_filter(
        minimum=YEAR_MIN, maximum=YEAR_MAX, method="filter_date_from", label="From year (negative for BC)"
    )
    date_to = integer_filter(
        minimum=YEAR_MIN, maximum=YEAR_MAX, method="filter_date_to", label="To year (negative for BC)"
    )
    status = django_filters.ChoiceFilter(choices=ItemStatus.choices, label="Status")
    # Declared last: django-filter applies filters in declaration order, so the rank from ``q`` exists here.
    sort = django_filters.ChoiceFilter(choices=SORT_CHOICES, method="filter_sort", label="Sort by")

    class Meta:
        model = Item
        fields: list[str] = []

    def filter_q(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return item_search(queryset, text=value)

    def filter_date_from(self, queryset: QuerySet, name: str, value: int) -> QuerySet:
        return queryset.filter(dates_overlap(date_from=int(value)))

    def filter_date_to(self, queryset: QuerySet, name: str, value: int) -> QuerySet:
        return queryset.filter(dates_overlap(date_to=int(value)))

    def filter_sort(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset  # applied in filter_queryset, which also knows the default

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        queryset = super().filter_queryset(queryset)
        return queryset.order_by(*self.ordering())

    def ordering(self) -> list:
        """The ORDER BY for the chosen sort; relevance (when searching) or reference otherwise."""
        data = getattr(self.form, "cleaned_data", {})
        sort = data.get("sort") or "relevance"
        searching = bool(data.get("q")) and "q" not in self.form.errors
        if sort == "relevance" and not searching:
            sort = "reference"
        # Items without a reference sort after referenced ones rather than first.
        reference = natural(NullIf("reference", Value(""))).asc(nulls_last=True)
        return {
            "relevance": ["-rank", reference, "pk"],
            "reference": [reference, "title", "pk"],
            "date": [F("date_from").asc(nulls_last=True), F("date_to").asc(nulls_last=True), reference, "pk"],
            # Undated items go last both ways (PostgreSQL puts NULLs first in descending order).
            "-date": [F("date_to").desc(nulls_last=True), F("date_from").desc(nulls_last=True), reference, "pk"],
            "title": ["title", "pk"],
        }[sort]


# The concept kinds offered as facets, in display order: the concept filters declared above, each also a
# query parameter of the pages and the API (?mint=rome).
FACET_KINDS: tuple[str, ...] = tuple(
    str(f.kind) for f in ItemFilterSet.base_filters.values() if isinstance(f, ConceptSlugFilter)
)


class SpecimenFilterSet(django_filters.FilterSet):
    """Filters for specimens: record id, the item (by id or type URI), side of available images."""

    record_id = django_filters.CharFilter(field_name="record_id", lookup_expr="iexact", label="Record id")
    item = integer_filter(minimum=1, maximum=ID_MAX, field_name="item_id", label="Item id")
    item_uri = django_filters.CharFilter(field_name="item__uri", lookup_expr="exact", label="Item type URI (exact)")
    has_images = StrictBooleanFilter(method="filter_has_images", label="Has images")

    class Meta:
        model = Specimen
        fields: list[str] = []

    def filter_has_images(self, queryset: QuerySet, name: str, value: bool) -> QuerySet:
        from collection.models import SpecimenImage

        with_images = SpecimenImage.objects.values("specimen_id")
        return queryset.filter(pk__in=with_images) if value else queryset.exclude(pk__in=with_images)


class ConceptFilterSet(django_filters.FilterSet):
    """Filters for vocabulary terms: kind, a label/URI search, an exact URI."""

    kind = django_filters.CharFilter(field_name="kind", lookup_expr="exact", label="Kind")
    q = django_filters.CharFilter(method="filter_q", label="Label contains")
    uri = django_filters.CharFilter(field_name="uri", lookup_expr="exact", label="URI (exact)")

    class Meta:
        model = Concept
        fields: list[str] = []

    def filter_q(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        value = value.strip()
        return queryset.filter(Q(label__icontains=value) | Q(slug__icontains=value)) if value else queryset
