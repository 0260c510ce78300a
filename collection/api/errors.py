"""The one error shape of API v1: ``{"errors": {field: [reasons]}}``, whatever went wrong.

Partners parse a single shape: a refused filter, an unknown id, a missing token, a wrong method, a
rate limit and an unexpected failure all answer it (reasons that concern no one field are listed
under ``non_field_errors``, as DRF names them). DRF's exceptions reach it through
``exception_handler`` (``REST_FRAMEWORK["EXCEPTION_HANDLER"]``); a URL no endpoint matches through
``not_found``, the last pattern under /api/; what Django answers around DRF (an unreadable request,
a crash) through the ``handler*`` views that ``config.urls`` installs, which keep the site's own
pages for every other path.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

API_PREFIX = "/api/"


class ErrorsSerializer(serializers.Serializer):
    """Why a request was refused: reasons per input field (``non_field_errors`` for the request as a whole)."""

    errors = serializers.DictField(
        child=serializers.JSONField(),
        help_text="Field name (a parameter, a body field, or non_field_errors) → list of reasons.",
    )


def error_body(errors: dict) -> dict:
    """The response body for ``{field: [reasons]}``."""
    return {"errors": errors}


def message_body(message: str) -> dict:
    """The response body for a reason that concerns the request as a whole."""
    return error_body({api_settings.NON_FIELD_ERRORS_KEY: [message]})


def exception_handler(exc: Exception, context: dict):
    """DRF's handler (status, ``Retry-After``, ``Allow``, ``WWW-Authenticate``), with our body."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # not an API exception: Django answers 500 through server_error below
    data = response.data
    if isinstance(data, dict) and set(data) == {"detail"} and not isinstance(exc, ValidationError):
        response.data = message_body(str(data["detail"]))  # NotFound, Throttled, MethodNotAllowed…
    elif isinstance(data, dict):
        response.data = error_body(data)
    else:
        response.data = error_body({api_settings.NON_FIELD_ERRORS_KEY: data if isinstance(data, list) else [data]})
    return response


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A request Django refuses before any view (too many fields or files, a bad header)."""
    if _is_api(request):
        return JsonResponse(message_body("The request could not be read."), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(message_body("You do not have permission to perform this action."), status=403)
    return defaults.permission_denied(request, exception)


@csrf_exempt  # as DRF's views are: a POST to a wrong URL is a 404, not a CSRF page
def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """The last URL pattern under /api/: no endpoint here (e.g. a submission id that is not a UUID).

    A view rather than a handler404 so that it answers the same with DEBUG on, as ``make run`` has it.
    """
    return JsonResponse(message_body("Not found."), status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """Never intended; when it happens anyway, an API client still gets the shape it parses."""
    if _is_api(request):
        return JsonResponse(message_body("Something went wrong on our side; it has been logged."), status=500)
    return defaults.server_error(request)
