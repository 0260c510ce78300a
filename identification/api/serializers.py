"""API v1 representations of submissions (a stable, versioned contract for partner institutions)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers

from collection.models import CANDIDATE_FILTER_KINDS, ImageLicence
from identification.models import Candidate, DeclaredSide, Submission, SubmissionImage


class SubmissionCreateSerializer(serializers.Serializer):
    """Multipart input of POST /api/v1/submissions/ (validated again, fully, by the service).

    ``sides``: one per photo, in the same order, or none at all (the side is then predicted).
    """

    images = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),
        min_length=1,
        max_length=2,
        error_messages={
            "min_length": "Add at least 1 photo (as `images`): the obverse, the reverse, or both.",
            "max_length": "At most 2 photos: one of each side.",
        },
        help_text="One photo, or both sides of one object: JPEG, PNG, WebP, GIF, TIFF or BMP, at least 32 px "
        "a side and at most 20 MB each (the server's OBVERSE_MAX_UPLOAD_BYTES). A file that is not such a "
        "picture is refused with 400.",
    )
    sides = serializers.ListField(
        child=serializers.ChoiceField(choices=DeclaredSide.values),
        required=False,
        max_length=2,
        help_text="The side shown by each photo, in the same order; give one per photo or none.",
    )
    notes = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    requester_name = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        help_text="Required without a token (a curator replies to this person); never published.",
    )
    # Not trimmed: "  " is not blank but no address, and refused as the schema says (email, or empty).
    requester_email = serializers.EmailField(
        required=False, allow_blank=True, trim_whitespace=False, help_text="Required without a token; never published."
    )
    photo_licence = serializers.ChoiceField(
        choices=ImageLicence.values,
        required=False,
        default=ImageLicence.NONE,
        help_text="Under which licence the photos may be published if curators add the specimen to the "
        "public catalogue; `none` (the default) keeps them private.",
    )
    photo_credit = serializers.CharField(
        required=False, allow_blank=True, max_length=200, help_text="The name to credit beside published photos."
    )


class SubmissionCreateSchema(OpenApiSerializerExtension):
    """The one rule across fields, in the schema too: one side per photo, or no sides at all."""

    target_class = SubmissionCreateSerializer

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_basic_serializer(self.target, direction)
        schema["anyOf"] = [
            {"properties": {"sides": {"maxItems": 0}}},
            {"properties": {"images": {"maxItems": 1}, "sides": {"minItems": 1, "maxItems": 1}}},
            {"properties": {"images": {"minItems": 2}, "sides": {"minItems": 2, "maxItems": 2}}},
        ]
        return schema


class CandidateFiltersSerializer(serializers.Serializer):
    """Input of POST …/candidates/: concept slugs of each kind (as in the item API), a date range and a
    legend hint; blank means any."""

    def get_fields(self) -> dict[str, serializers.Field]:
        # One field per kind candidates can be narrowed by: the result page's form reads the same list.
        fields: dict[str, serializers.Field] = {
            kind: serializers.CharField(required=False, allow_blank=True, max_length=200)
            for kind in CANDIDATE_FILTER_KINDS
        }
        for end in ("date_from", "date_to"):
            fields[end] = serializers.IntegerField(
                required=False, allow_null=True, min_value=-3000, max_value=3000, help_text="Year; negative for BC."
            )
        fields["legend"] = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=200,
            help_text="Letters of a legend the sender can read, parts in order: `VIRTVS`, `IMP … AVG` (U reads as V).",
        )
        return fields


class ObjectChoiceSerializer(serializers.Serializer):
    """Input of POST …/objects/: which photo (its ``position``) and which of its ``objects`` (index)."""

    image = serializers.IntegerField(min_value=0, max_value=1, help_text="0 or 1: a submission has one or two photos.")
    object = serializers.IntegerField(min_value=0)


class CandidateItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reference = serializers.CharField()
    uri = serializers.CharField()
    title = serializers.CharField()


class CandidateSerializer(serializers.ModelSerializer):
    item = CandidateItemSerializer()
    total = serializers.FloatField(
        read_only=True, help_text="What ranks the candidates: `score` (image similarity) + `agreement` (metadata)."
    )

    class Meta:
        model = Candidate
        fields = ["rank", "total", "score", "agreement", "side_scores", "item"]


class SubmissionImageSerializer(serializers.ModelSerializer):
    # Every object found in the photo (box in px and as fractions of the photo, score, whether it is
    # the one described): a photo of several coins is described by its likeliest object.
    objects = serializers.JSONField(source="detections", read_only=True)

    class Meta:
        model = SubmissionImage
        fields = ["position", "declared_side", "side", "side_confidence", "angle", "metadata", "objects"]


class SubmissionSerializer(serializers.ModelSerializer):
    images = SubmissionImageSerializer(many=True)
    candidates = CandidateSerializer(many=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Submission
        fields = [
            "id", "status", "step", "error", "url", "created_at", "filters", "none_match_at", "images", "candidates",
        ]  # fmt: skip

    def get_url(self, obj: Submission) -> str:
        request = self.context.get("request")
        path = obj.get_absolute_url()
        return request.build_absolute_uri(path) if request else path
