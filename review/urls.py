"""URLs of the review workflow, mounted at /review/ (namespace "review")."""

from __future__ import annotations

from django.urls import path

from review import views

app_name = "review"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("next/", views.queue_next, name="queue_next"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("proposals/", views.proposals, name="proposals"),
    path("proposals/<int:pk>/", views.proposal_detail, name="proposal_detail"),
    path("proposals/<int:pk>/approve/", views.proposal_approve, name="proposal_approve"),
    path("proposals/<int:pk>/reject/", views.proposal_reject, name="proposal_reject"),
    path("history/<slug:kind>/<int:pk>/", views.history, name="history"),
    path("<uuid:pk>/", views.review, name="review"),
    path("<uuid:pk>/claim/", views.claim, name="claim"),
    path("<uuid:pk>/release/", views.release, name="release"),
]
