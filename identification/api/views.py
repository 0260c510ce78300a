"""API v1 endpoints for submissions: create (multipart), poll by UUID, and the sender's three actions.

The actions are those of the result page, for partners who never open it: narrow the candidates
by metadata, pick another object of a several-coin photo, say that no candidate looks right. As on
the page, the submission's unguessable UUID is what grants them.
"""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiRequest,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import permissions, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle
from rest_framework.views import APIView

from collection.api.errors import ErrorsSerializer, error_body, message_body
from collection.models import ImageLicence
from identification import selectors, services
from identification.api.serializers import (
    CandidateFiltersSerializer,
    ObjectChoiceSerializer,
    SubmissionCreateSerializer,
    SubmissionSerializer,
)


class SubmissionAnonThrottle(AnonRateThrottle):
    scope = "submissions_anon"


class SubmissionUserThrottle(UserRateThrottle):
    scope = "submissions_user"


def client_ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _idempotency_key(request) -> uuid.UUID | None | bool:
    """The request's ``Idempotency-Key`` header as a UUID; None without one, False when it is not a UUID."""
    raw = request.headers.get("Idempotency-Key", "").strip()
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return False


CREATED = inline_serializer(
    "SubmissionCreated",
    {"id": serializers.UUIDField(), "status": serializers.CharField(), "url": serializers.URLField()},
)
# The photos are recognised by their content, whatever a part's declared type; these are the formats read.
PHOTO_TYPES = "image/jpeg, image/png, image/webp, image/gif, image/tiff, image/bmp"
NOT_FOUND = OpenApiResponse(ErrorsSerializer, "No submission has this id.")
CONFLICT = OpenApiResponse(
    ErrorsSerializer,
    "Not allowed in the submission's current state (e.g. still processing), or no such photo or object.",
)


class SubmissionCreateView(APIView):
    """POST a photo (or both sides) of a specimen to identify; poll the returned URL for the result."""

    parser_classes = [MultiPartParser, FormParser]
    permission_classes = [permissions.AllowAny]
    throttle_classes = [SubmissionAnonThrottle, SubmissionUserThrottle]
    # OpenAPI links (collection.api.schema): what a client does next with the new id.
    schema_links = {
        "201": {
            name: {"operationId": operation, "parameters": {"id": "$response.body#/id"}, "description": description}
            for name, operation, description in [
                ("poll", "v1_submissions_retrieve", "Follow the processing; read the candidates."),
                ("narrow", "v1_submissions_candidates_create", "Search again with metadata filters."),
                ("choose_object", "v1_submissions_objects_create", "Describe another object of a photo."),
                ("none_match", "v1_submissions_none_match_create", "Say that no candidate looks right."),
            ]
        }
    }

    @extend_schema(
        request={
            "multipart/form-data": OpenApiRequest(
                SubmissionCreateSerializer, encoding={"images": {"contentType": PHOTO_TYPES}}
            )
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.UUID,
                OpenApiParameter.HEADER,
                description="A UUID of your choice for this sending: a retry with the same key (same client) "
                "stores nothing new and answers 200 with the submission the first request made.",
            )
        ],
        responses={
            201: CREATED,
            200: CREATED,
            400: ErrorsSerializer,
            503: OpenApiResponse(
                ErrorsSerializer, "The photos could not be stored (folder unwritable); nothing was kept."
            ),
            507: OpenApiResponse(ErrorsSerializer, "The server's disk is full; nothing was kept."),
        },
    )
    def post(self, request):
        data = {
            "images": request.FILES.getlist("images"),
            "sides": request.data.getlist("sides") if hasattr(request.data, "getlist") else [],
            "notes": request.data.get("notes", ""),
            "requester_name": request.data.get("requester_name", ""),
            "requester_email": request.data.get("requester_email", ""),
            "photo_licence": request.data.get("photo_licence") or ImageLicence.NONE,
            "photo_credit": request.data.get("photo_credit", ""),
        }
        serializer = SubmissionCreateSerializer(data=data)
        errors = dict(serializer.errors) if not serializer.is_valid() else {}
        key = _idempotency_key(request)
        if key is False:
            errors["idempotency_key"] = ["The Idempotency-Key header must be a UUID."]
        if errors:
            return Response(error_body(errors), status=status.HTTP_400_BAD_REQUEST)
        values = serializer.validated_data
        try:
            submission = services.submission_create(
                files=values["images"],
                sides=values.get("sides", []),
                notes=values.get("notes", ""),
                requester_name=values.get("requester_name", ""),
                requester_email=values.get("requester_email", ""),
                user=request.user,
                client_ip=client_ip(request),
                photo_licence=values["photo_licence"],
                photo_credit=values.get("photo_credit", ""),
                idempotency_key=key,
            )
        except services.AlreadySent as exc:  # a retry of an accepted request: the same answer, nothing new
            return Response(self._created(request, exc.submission), status=status.HTTP_200_OK)
        except ValidationError as exc:
            return Response(error_body(exc.message_dict), status=status.HTTP_400_BAD_REQUEST)
        except services.StorageUnavailable as exc:  # 507 disk full / 503 unwritable; nothing was stored
            return Response(message_body(exc.message), status=exc.status)
        return Response(self._created(request, submission), status=status.HTTP_201_CREATED)

    @staticmethod
    def _created(request, submission) -> dict:
        return {
            "id": str(submission.pk),
            "status": submission.status,
            "url": request.build_absolute_uri(f"/api/v1/submissions/{submission.pk}/"),
        }


class SubmissionDetailView(APIView):
    """The state of a submission: status, per-photo predictions and the candidate items."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(responses={200: SubmissionSerializer, 404: NOT_FOUND})
    def get(self, request, pk):
        submission = selectors.submission_get(pk=pk)
        if submission is None:
            return Response(error_body({"id": ["No such submission."]}), status=status.HTTP_404_NOT_FOUND)
        return Response(SubmissionSerializer(submission, context={"request": request}).data)


class SubmissionActionView(APIView):
    """Base of the sender's actions: an unknown UUID is a 404, malformed input a 400, and an action
    the submission does not allow now (not processed yet, already reviewed, no such photo or object
    in it) a 409 naming why: well-formed, but in conflict with the submission's current state.

    They share the upload's throttles (and so its budget): a re-search costs the worker's time too.
    """

    permission_classes = [permissions.AllowAny]
    throttle_classes = [SubmissionAnonThrottle, SubmissionUserThrottle]
    input_serializer: type[serializers.Serializer] | None = None
    success_status = status.HTTP_200_OK

    def act(self, pk, values: dict) -> None:
        raise NotImplementedError

    def post(self, request, pk):
        if selectors.submission_get(pk=pk) is None:
            return Response(error_body({"id": ["No such submission."]}), status=status.HTTP_404_NOT_FOUND)
        values = {}
        if self.input_serializer is not None:
            serializer = self.input_serializer(data=request.data)
            if not serializer.is_valid():
                return Response(error_body(serializer.errors), status=status.HTTP_400_BAD_REQUEST)
            values = serializer.validated_data
        try:
            self.act(pk, values)
        except ValidationError as exc:
            return Response(error_body(exc.message_dict), status=status.HTTP_409_CONFLICT)
        submission = selectors.submission_get(pk=pk)
        return Response(SubmissionSerializer(submission, context={"request": request}).data, status=self.success_status)


@extend_schema_view(
    post=extend_schema(
        request=CandidateFiltersSerializer, responses={200: SubmissionSerializer, 404: NOT_FOUND, 409: CONFLICT}
    )
)
class SubmissionCandidatesView(SubmissionActionView):
    """Search again with metadata filters (concept slugs; a blank or missing field is no filter)."""

    input_serializer = CandidateFiltersSerializer

    def act(self, pk, values: dict) -> None:
        services.submission_recompute(submission_id=pk, filters=values)


@extend_schema_view(
    post=extend_schema(
        request=ObjectChoiceSerializer, responses={202: SubmissionSerializer, 404: NOT_FOUND, 409: CONFLICT}
    )
)
class SubmissionObjectView(SubmissionActionView):
    """Describe another object found in a photo (``images[].objects``): processed again, poll as after upload."""

    input_serializer = ObjectChoiceSerializer
    success_status = status.HTTP_202_ACCEPTED

    def act(self, pk, values: dict) -> None:
        services.submission_choose_object(submission_id=pk, position=values["image"], index=values["object"])


@extend_schema_view(
    post=extend_schema(request=None, responses={200: SubmissionSerializer, 404: NOT_FOUND, 409: CONFLICT})
)
class SubmissionNoneMatchView(SubmissionActionView):
    """Tell the reviewers that none of the candidates looks right (recorded once; candidates are kept)."""

    def act(self, pk, values: dict) -> None:
        services.submission_none_match(submission_id=pk)
