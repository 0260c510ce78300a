from django.urls import path

from identification.api.views import (
    SubmissionCandidatesView,
    SubmissionCreateView,
    SubmissionDetailView,
    SubmissionNoneMatchView,
    SubmissionObjectView,
)

urlpatterns = [
    path("submissions/", SubmissionCreateView.as_view(), name="api-submission-create"),
    path("submissions/<uuid:pk>/", SubmissionDetailView.as_view(), name="api-submission-detail"),
    path("submissions/<uuid:pk>/candidates/", SubmissionCandidatesView.as_view(), name="api-submission-candidates"),
    path("submissions/<uuid:pk>/objects/", SubmissionObjectView.as_view(), name="api-submission-objects"),
    path("submissions/<uuid:pk>/none-match/", SubmissionNoneMatchView.as_view(), name="api-submission-none-match"),
]
