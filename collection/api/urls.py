"""Catalogue API v1 (mounted at /api/v1/ next to the identification API)."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import DefaultRouter

from collection.api import views

router = DefaultRouter()
router.register("items", views.ItemViewSet, basename="item")
router.register("specimens", views.SpecimenViewSet, basename="specimen")
router.register("concepts", views.ConceptViewSet, basename="concept")

urlpatterns = [
    path("facets/", views.FacetsView.as_view(), name="api-facets"),
    path("search/", views.SearchView.as_view(), name="api-search"),
    *router.urls,
]
