"""API v1 representations of submissions (a stable, versioned contract for partner institutions)."""

from __future__ import annotations

from rest_framework import serializers

from collection.models import CANDIDATE_FILTER_KINDS, ImageLicence
from identification.models import Candidate, DeclaredSide, Submission, SubmissionImage


class SubmissionCreateSerializer(serializers.Serializer):
    """Multipart input of POST /api/v1/submissions/ (validated again, fully, by the service)."""

    images = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),
        min_length=1,
        max_length=2,
        error_messages={
            "min_length": "Add at least 1 photo (as `images`): the obverse, the reverse, or both.",
            "max_length": "At most 2 photos: one of each side.",
        },
    )
    sides = serializers.ListField(child=serializers.ChoiceField(choices=DeclaredSide.values), required=False)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    requester_name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    requester_email = serializers.EmailField(required=False, allow_blank=True)
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

    image = serializers.IntegerField(min_value=0)
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
