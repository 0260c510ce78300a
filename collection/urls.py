"""Public pages of the digital collection (mounted at "/")."""

from __future__ import annotations

from django.urls import path

from collection import views
from collection.linked_data import urls as linked_data_urls

app_name = "collection"

urlpatterns = [
    path("", views.home, name="home"),
    path("items/", views.item_list, name="item_list"),
    path("items/<int:pk>/", views.item_detail, name="item_detail"),
    path("specimens/<int:pk>/", views.specimen_detail, name="specimen_detail"),
    path("concepts/<slug:kind>/<slug:slug>/", views.concept_detail, name="concept_detail"),
    *linked_data_urls.urlpatterns,
]
