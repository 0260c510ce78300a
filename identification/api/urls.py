from django.urls import path

from identification.api.views import SubmissionCreateView, SubmissionDetailView

urlpatterns = [
    path("submissions/", SubmissionCreateView.as_view(), name="api-submission-create"),
    path("submissions/<uuid:pk>/", SubmissionDetailView.as_view(), name="api-submission-detail"),
]
