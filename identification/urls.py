from django.urls import path

from identification import views

app_name = "identification"

urlpatterns = [
    path("", views.identify, name="identify"),
    path("examples/<slug:key>/", views.identify_example, name="identify_example"),
    path("examples/<slug:key>/image", views.example_image, name="example_image"),
    path("<uuid:pk>/", views.submission_detail, name="submission_detail"),
    path("<uuid:pk>/status.json", views.submission_status, name="submission_status"),
    path("<uuid:pk>/recompute/", views.submission_recompute, name="submission_recompute"),
    path("<uuid:pk>/object/", views.submission_choose_object, name="submission_choose_object"),
    path("<uuid:pk>/none-match/", views.submission_none_match, name="submission_none_match"),
]
