"""Read-only catalogue API v1: items, specimens, concepts, facets and search.

Visibility and filters come from the same selectors and FilterSets as the public pages, so
``/items/?mint=rome`` and ``/api/v1/items/?mint=rome`` select the same items.
"""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

from collection import selectors
from collection.api import params
from collection.api.serializers import (
    ConceptSerializer,
    FacetsResponseSerializer,
    ItemDetailSerializer,
    ItemSerializer,
    SpecimenSerializer,
)
from collection.filtersets import ConceptFilterSet, ItemFilterSet, SpecimenFilterSet
from collection.models import Concept, SpecimenImage
from collection.roles import is_curator


class CataloguePagination(PageNumberPagination):
    """Page-number pagination; clients may ask for 1 to 200 rows a page (50 by default).

    Both parameters are validated (see collection.api.params): a bad one is a 400 naming it, where
    DRF would fall back to a default; a page past the last one is a 404.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    max_page = 2**31 - 1

    def get_page_size(self, request: Request) -> int:
        value = params.single_value(request, self.page_size_query_param)
        if value is None:
            return self.page_size
        return params.bounded_int(value, name=self.page_size_query_param, minimum=1, maximum=self.max_page_size)

    def get_page_number(self, request: Request, paginator) -> int:
        value = params.single_value(request, self.page_query_param)
        if value is None:
            return 1
        return params.bounded_int(value, name=self.page_query_param, minimum=1, maximum=self.max_page)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        bounds = {
            self.page_query_param: {"minimum": 1, "maximum": self.max_page},
            self.page_size_query_param: {"minimum": 1, "maximum": self.max_page_size, "default": self.page_size},
        }
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        return parameters


class _CuratorContextMixin:
    def get_serializer_context(self) -> dict:
        context = super().get_serializer_context()
        context["curator"] = is_curator(self.request.user)
        return context


class ItemViewSet(_CuratorContextMixin, viewsets.ReadOnlyModelViewSet):
    """Catalogue items (types). Filter with the same parameters as the collection page; ``?uri=`` is exact."""

    filterset_class = ItemFilterSet
    pagination_class = CataloguePagination

    def get_queryset(self):
        qs = selectors.item_queryset(user=self.request.user)
        if self.action == "retrieve":
            return selectors.item_with_related(qs)
        return qs.prefetch_related("concepts")

    def get_serializer_class(self):
        return ItemDetailSerializer if self.action == "retrieve" else ItemSerializer


class SpecimenViewSet(_CuratorContextMixin, viewsets.ReadOnlyModelViewSet):
    """Public specimens with their images. Findspot and provenance are never exposed."""

    serializer_class = SpecimenSerializer
    filterset_class = SpecimenFilterSet
    pagination_class = CataloguePagination

    def get_queryset(self):
        images = SpecimenImage.objects.order_by("sort_order", "side", "pk")
        return (
            selectors.specimen_queryset(user=self.request.user)
            .prefetch_related(Prefetch("images", queryset=images))
            .order_by("record_id")
        )


class ConceptViewSet(viewsets.ReadOnlyModelViewSet):
    """Controlled-vocabulary terms (authorities, mints, materials…) with their Nomisma URIs."""

    serializer_class = ConceptSerializer
    filterset_class = ConceptFilterSet
    pagination_class = CataloguePagination
    queryset = Concept.objects.order_by("kind", "label", "pk")


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter(
                "q",
                # Required, and more than white space (which the filter strips to nothing).
                {"type": "string", "pattern": r"^[^\x00]*[^\s\x00][^\x00]*$"},
                required=True,
                description="Search text (words, prefixes; as the collection page's search box).",
            )
        ]
    )
)
class SearchView(_CuratorContextMixin, generics.ListAPIView):
    """Full-text search over items, best match first; takes every item filter, and ``q`` is required."""

    serializer_class = ItemSerializer
    filterset_class = ItemFilterSet
    pagination_class = CataloguePagination

    def get_queryset(self):
        return selectors.item_queryset(user=self.request.user).prefetch_related("concepts")

    def list(self, request: Request, *args, **kwargs) -> Response:
        if not request.query_params.get("q", "").strip():
            raise ValidationError({"q": ["This parameter is required."]})
        return super().list(request, *args, **kwargs)


class FacetsView(generics.GenericAPIView):
    """Facet counts per concept kind for the items a filter selects (each kind ignores its own filter)."""

    filterset_class = ItemFilterSet
    filter_backends = [params.StrictFilterBackend]
    serializer_class = FacetsResponseSerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.item_queryset(user=self.request.user)

    @extend_schema(filters=True, responses=FacetsResponseSerializer)
    def get(self, request: Request) -> Response:
        base = self.get_queryset()
        selected = self.filter_queryset(base)  # validates the parameters (400 on bad input)
        summary = selectors.item_summary(selected)
        facets = selectors.item_facets(data=request.query_params, queryset=base)
        payload = {**summary, "facets": facets}
        return Response(FacetsResponseSerializer(payload).data)
