"""Read-only representations of the catalogue for API v1.

Fields are listed explicitly: a specimen's findspot and provenance are private and must never
appear here, so no serializer uses ``fields = "__all__"``.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from collection.models import Concept, Item, ItemStatus, Source, Specimen, SpecimenImage
from collection.templatetags.collection_tags import image_src


class SourceSerializer(serializers.ModelSerializer):
    """Where a record came from and the credit owed for it."""

    class Meta:
        model = Source
        fields = ["name", "url", "licence", "licence_url", "credit", "is_synthetic"]


class ConceptBriefSerializer(serializers.ModelSerializer):
    """A concept as listed on an item: kind, label and URI."""

    class Meta:
        model = Concept
        fields = ["kind", "slug", "label", "uri"]


class ConceptSerializer(serializers.HyperlinkedModelSerializer):
    """A vocabulary term with links to its API record and public page."""

    url = serializers.HyperlinkedIdentityField(view_name="concept-detail")
    page_url = serializers.SerializerMethodField()
    kind_label = serializers.CharField(read_only=True)

    class Meta:
        model = Concept
        fields = ["id", "url", "page_url", "kind", "kind_label", "slug", "label", "uri", "description"]

    @extend_schema_field(OpenApiTypes.URI)
    def get_page_url(self, concept: Concept) -> str:
        return self.context["request"].build_absolute_uri(concept.get_absolute_url())


class ImageSerializer(serializers.ModelSerializer):
    """One photograph of a specimen: side, full file and thumbnail URLs."""

    url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = SpecimenImage
        fields = ["id", "side", "url", "thumbnail_url", "width", "height", "sha256"]

    def _absolute(self, value: str) -> str:
        if not value or value.startswith(("http://", "https://")):
            return value
        return self.context["request"].build_absolute_uri(value)

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, image: SpecimenImage) -> str:
        return self._absolute(image_src(image, "full"))

    @extend_schema_field(OpenApiTypes.URI)
    def get_thumbnail_url(self, image: SpecimenImage) -> str:
        return self._absolute(image_src(image, "thumb"))


class ItemSerializer(serializers.HyperlinkedModelSerializer):
    """A catalogue item (a type) with its concepts, dates and legends."""

    url = serializers.HyperlinkedIdentityField(view_name="item-detail")
    page_url = serializers.SerializerMethodField()
    concepts = ConceptBriefSerializer(many=True, read_only=True)
    date_display = serializers.CharField(read_only=True)
    source = SourceSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Item
        fields = [
            "id",
            "url",
            "page_url",
            "reference",
            "uri",
            "title",
            "status",
            "concepts",
            "date_from",
            "date_to",
            "date_display",
            "obverse_legend",
            "obverse_description",
            "reverse_legend",
            "reverse_description",
            "description",
            "attributes",
            "source",
        ]

    @extend_schema_field(OpenApiTypes.URI)
    def get_page_url(self, item: Item) -> str:
        return self.context["request"].build_absolute_uri(item.get_absolute_url())


class SpecimenBriefSerializer(serializers.HyperlinkedModelSerializer):
    """A specimen as listed on its item: measurements and images (no findspot, no provenance)."""

    url = serializers.HyperlinkedIdentityField(view_name="specimen-detail")
    images = ImageSerializer(many=True, read_only=True)

    class Meta:
        model = Specimen
        fields = ["id", "url", "record_id", "weight_g", "diameter_mm", "die_axis", "images"]


class ItemDetailSerializer(ItemSerializer):
    """An item with its public specimens and their images."""

    specimens = SpecimenBriefSerializer(many=True, read_only=True, source="public_specimens")

    class Meta(ItemSerializer.Meta):
        fields = [*ItemSerializer.Meta.fields, "specimens"]


class SpecimenSerializer(serializers.HyperlinkedModelSerializer):
    """One physical specimen with its images. Findspot and provenance are deliberately absent."""

    url = serializers.HyperlinkedIdentityField(view_name="specimen-detail")
    page_url = serializers.SerializerMethodField()
    item = serializers.SerializerMethodField()
    images = ImageSerializer(many=True, read_only=True)
    source = SourceSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Specimen
        fields = [
            "id",
            "url",
            "page_url",
            "record_id",
            "title",
            "item",
            "weight_g",
            "diameter_mm",
            "die_axis",
            "holding_collection",
            "image_rights",
            "source_url",
            "source",
            "images",
        ]

    @extend_schema_field(OpenApiTypes.URI)
    def get_page_url(self, specimen: Specimen) -> str:
        return self.context["request"].build_absolute_uri(specimen.get_absolute_url())

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {
                "id": {"type": "integer"},
                "url": {"type": "string", "format": "uri"},
                "reference": {"type": "string"},
                "uri": {"type": "string"},
                "title": {"type": "string"},
            },
        }
    )
    def get_item(self, specimen: Specimen) -> dict | None:
        item = specimen.item
        # The public sees links to published types only; curators see every type.
        if item is None or (item.status != ItemStatus.PUBLISHED and not self.context.get("curator")):
            return None
        return {
            "id": item.pk,
            "url": reverse("item-detail", kwargs={"pk": item.pk}, request=self.context["request"]),
            "reference": item.reference,
            "uri": item.uri,
            "title": item.title,
        }


class FacetValueSerializer(serializers.Serializer):
    """One concept in a facet and how many items the current filter leaves with it."""

    slug = serializers.CharField()
    label = serializers.CharField()
    uri = serializers.CharField()
    count = serializers.IntegerField()
    selected = serializers.BooleanField()


class FacetSerializer(serializers.Serializer):
    """The values of one concept kind (the query parameter named ``kind`` filters by them)."""

    kind = serializers.CharField()
    label = serializers.CharField()
    values = FacetValueSerializer(many=True)


class FacetsResponseSerializer(serializers.Serializer):
    """Facet counts and the date range of the items the filter selects."""

    count = serializers.IntegerField()
    earliest = serializers.IntegerField(allow_null=True)
    latest = serializers.IntegerField(allow_null=True)
    facets = FacetSerializer(many=True)
