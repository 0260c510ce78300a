"""The catalogue: controlled vocabularies, catalogue items (types), physical specimens and their images.

The schema is family-neutral: coins, gems or fossils differ in their Concept kinds and in
``Item.attributes`` / ``Specimen.attributes``, not in tables.
"""

from __future__ import annotations

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.urls import reverse
from django.utils.text import slugify
from pgvector.django import HalfVectorField, HnswIndex

# Dimension of catalogue image embeddings (MobileNetV2 pooled features); changing it is a migration
# plus `manage.py reindex`.
EMBEDDING_DIMENSIONS = 1280


class Source(models.Model):
    """Where records came from (a museum, a data set, the synthetic demo), with the credit we owe.

    Imported items and specimens point here so pages can show the licence and attribution
    (for example the ANS's ODbL credit) and the demo collection can be marked as synthetic.
    """

    name = models.CharField(max_length=200, unique=True)
    url = models.URLField(blank=True)
    licence = models.CharField(max_length=200, blank=True)
    licence_url = models.URLField(blank=True)
    credit = models.TextField(blank=True, help_text="Attribution shown wherever these records are shown.")
    is_synthetic = models.BooleanField(default=False, help_text="Generated demo data, not real objects.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ConceptKind(models.TextChoices):
    """Well-known kinds of concept, in display order. The field is open: another object family may add its own kinds.

    The one place the catalogue's kinds are named; which of them serve as facets is
    ``collection.filtersets.FACET_KINDS`` (the filters declared there), the rest is below.
    """

    AUTHORITY = "authority", "Authority"
    MINT = "mint", "Mint"
    REGION = "region", "Region"
    MATERIAL = "material", "Material"
    DENOMINATION = "denomination", "Denomination"
    OBJECT_TYPE = "object_type", "Object type"
    CATEGORY = "category", "Category"
    PORTRAIT = "portrait", "Portrait"
    STATE = "state", "State"

    @property
    def plural(self) -> str:
        """The label for a count of several: "15 authorities", "3 object types"."""
        label = str(self.label)
        return f"{label[:-1]}ies" if label.endswith("y") else f"{label}s"


# The kinds that say what a type is at a glance: shown beside a candidate's title and asked for in a
# new item's draft. mlcore predicts the same four from a photo (``mlcore.dataset.METADATA_FIELDS``,
# which cannot import this; tests/test_vocabularies.py keeps the two equal).
KEY_KINDS: tuple[str, ...] = tuple(
    kind.value for kind in (ConceptKind.AUTHORITY, ConceptKind.MINT, ConceptKind.MATERIAL, ConceptKind.DENOMINATION)
)

# What a sender may narrow the candidates by, in the order the result page offers them; the page's
# form, the API and the search all read this.
CANDIDATE_FILTER_KINDS: tuple[str, ...] = tuple(
    kind.value
    for kind in (
        ConceptKind.AUTHORITY,
        ConceptKind.MINT,
        ConceptKind.REGION,
        ConceptKind.MATERIAL,
        ConceptKind.DENOMINATION,
    )
)


class Concept(models.Model):
    """A controlled-vocabulary term (a ruler, a mint, a material…), ideally with a Nomisma URI.

    ``kind`` is a free slug so new families need no migration; ``ConceptKind`` lists the usual ones.
    """

    kind = models.SlugField(max_length=50, db_index=True)
    label = models.CharField(max_length=255)
    slug = models.SlugField(max_length=255)
    uri = models.URLField(max_length=500, blank=True, help_text="Nomisma (or other) URI identifying the term.")
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["kind", "label"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "slug"], name="concept_unique_kind_slug"),
            models.UniqueConstraint(
                fields=["kind", "uri"], condition=~models.Q(uri=""), name="concept_unique_kind_uri"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.kind_label})"

    def get_absolute_url(self) -> str:
        return reverse("collection:concept_detail", kwargs={"kind": self.kind, "slug": self.slug})

    @property
    def kind_label(self) -> str:
        try:
            return ConceptKind(self.kind).label
        except ValueError:
            return self.kind.replace("_", " ").capitalize()

    @staticmethod
    def make_slug(label: str) -> str:
        return slugify(label, allow_unicode=False)[:255] or "unnamed"


class ItemStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PROPOSED = "proposed", "Proposed"
    PUBLISHED = "published", "Published"
    WITHDRAWN = "withdrawn", "Withdrawn"


class Item(models.Model):
    """A catalogue entry: for coins, a type (e.g. "RIC VIII Constantinople 37").

    ``uri`` identifies the type in its reference catalogue (for the ANS data, OCRE/RPC/CRRO URIs);
    family-specific fields go in ``attributes``.
    """

    reference = models.CharField(max_length=255, blank=True, db_index=True)
    uri = models.URLField(max_length=500, blank=True)
    title = models.CharField(max_length=500)
    status = models.CharField(max_length=20, choices=ItemStatus.choices, default=ItemStatus.PUBLISHED, db_index=True)
    concepts = models.ManyToManyField(Concept, related_name="items", blank=True)
    date_from = models.IntegerField(null=True, blank=True, help_text="Year; negative for BC.")
    date_to = models.IntegerField(null=True, blank=True, help_text="Year; negative for BC.")
    obverse_legend = models.TextField(blank=True)
    obverse_description = models.TextField(blank=True)
    reverse_legend = models.TextField(blank=True)
    reverse_description = models.TextField(blank=True)
    description = models.TextField(blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.PROTECT, related_name="items")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Denormalised search columns, rebuilt by collection.search.item_refresh_search (never by signals).
    search_vector = SearchVectorField(null=True, editable=False)
    search_text = models.TextField(blank=True, editable=False)

    class Meta:
        ordering = ["reference", "title"]
        constraints = [
            models.UniqueConstraint(fields=["uri"], condition=~models.Q(uri=""), name="item_unique_uri"),
        ]
        indexes = [
            GinIndex(fields=["search_vector"], name="item_search_vector_gin"),
            models.Index(fields=["date_from", "date_to"], name="item_date_range"),
        ]

    def __str__(self) -> str:
        return self.reference or self.title

    def get_absolute_url(self) -> str:
        return reverse("collection:item_detail", kwargs={"pk": self.pk})

    @property
    def date_display(self) -> str:
        return format_date_range(self.date_from, self.date_to)


class Specimen(models.Model):
    """One physical object (a coin in a tray), optionally attributed to a catalogue Item.

    ``record_id`` is the holding institution's accession or record number and the key imports
    update by. Findspot and provenance may be sensitive and are never shown publicly.
    """

    record_id = models.CharField(max_length=200, unique=True)
    item = models.ForeignKey(Item, null=True, blank=True, on_delete=models.SET_NULL, related_name="specimens")
    title = models.CharField(max_length=500, blank=True)
    weight_g = models.DecimalField(max_digits=8, decimal_places=3, null=True, blank=True)
    diameter_mm = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)
    die_axis = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Clock hours, 1–12.")
    holding_collection = models.CharField(max_length=255, blank=True)
    provenance = models.TextField(blank=True)
    findspot = models.TextField(blank=True, help_text="Private: never shown on public pages or the public API.")
    image_rights = models.CharField(max_length=255, blank=True)
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.PROTECT, related_name="specimens")
    source_url = models.URLField(max_length=500, blank=True, help_text="This record's page at its source.")
    attributes = models.JSONField(default=dict, blank=True)
    is_public = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["record_id"]

    def __str__(self) -> str:
        return self.record_id

    def get_absolute_url(self) -> str:
        return reverse("collection:specimen_detail", kwargs={"pk": self.pk})


class Side(models.TextChoices):
    OBVERSE = "obverse", "Obverse"
    REVERSE = "reverse", "Reverse"
    OTHER = "other", "Other"


def _image_upload_to(instance: SpecimenImage, filename: str) -> str:
    return f"catalogue/{instance.sha256[:2]}/{filename}"


class SpecimenImage(models.Model):
    """A photograph of one side of a specimen, with its derived files (cut-out, thumbnail).

    Search embeddings live in ``ImageEmbedding``, one row per embedding model version, so a
    re-index with a new model fills new rows while search keeps using the active version.
    """

    specimen = models.ForeignKey(Specimen, on_delete=models.CASCADE, related_name="images")
    side = models.CharField(max_length=10, choices=Side.choices, db_index=True)
    image = models.ImageField(upload_to=_image_upload_to, blank=True, max_length=300)
    remote_url = models.URLField(max_length=500, blank=True, help_text="Reference to the source's own file.")
    cutout = models.ImageField(upload_to="cutouts/", blank=True, max_length=300)
    thumbnail = models.ImageField(upload_to="thumbnails/", blank=True, max_length=300)
    # Static IIIF level 0 tiles (collection.linked_data.tiles), cut when the file is stored:
    # {"folder": storage folder, "tile": tile size, "full_from_image": full size is the image file}.
    tiles = models.JSONField(default=dict, blank=True)
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    sort_order = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["specimen", "sort_order", "side"]
        constraints = [
            models.UniqueConstraint(fields=["specimen", "side", "sort_order"], name="image_unique_side_order"),
        ]

    def __str__(self) -> str:
        return f"{self.specimen_id} {self.side}"


class ImageEmbedding(models.Model):
    """The search vector of one catalogue image under one embedding model version (pgvector, cosine).

    Denormalises ``side`` and ``item`` from the image so k-NN queries filter without joins
    (HNSW iterative scans keep recall under such filters). Only the active version is searched.
    """

    image = models.ForeignKey(SpecimenImage, on_delete=models.CASCADE, related_name="embeddings")
    item = models.ForeignKey(Item, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    side = models.CharField(max_length=10, choices=Side.choices)
    model_name = models.CharField(max_length=100)
    model_version = models.CharField(max_length=200)  # recipe + projection + trained version stamp
    # halfvec: half the memory and disk of vector(1280) for the same recall (docs/scaling.md).
    vector = HalfVectorField(dimensions=EMBEDDING_DIMENSIONS)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "model_name", "model_version"], name="embedding_unique_version"),
        ]
        indexes = [
            HnswIndex(
                name="embedding_vector_hnsw",
                fields=["vector"],
                m=16,
                ef_construction=64,
                opclasses=["halfvec_cosine_ops"],
            ),
            models.Index(fields=["model_name", "model_version", "side"], name="embedding_version_side"),
        ]

    def __str__(self) -> str:
        return f"{self.image_id} {self.model_name}@{self.model_version}"


def format_date_range(date_from: int | None, date_to: int | None) -> str:
    """'337–340', '44 BC', '27 BC–AD 14' — years as numismatists write them."""

    def year(value: int) -> str:
        return f"{-value} BC" if value < 0 else str(value)

    if date_from is None and date_to is None:
        return ""
    if date_from is None or date_to is None or date_from == date_to:
        return year(date_from if date_from is not None else date_to)
    if date_from < 0 <= date_to:
        return f"{-date_from} BC–AD {date_to}"
    return f"{year(date_from)}–{year(date_to)}" if date_from >= 0 else f"{-date_from}–{-date_to} BC"
