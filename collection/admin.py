"""Curators' admin for the catalogue: vocabularies, items, specimens with their images, sources."""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.contrib import admin, messages
from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from django.db import models
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from collection.models import Concept, Item, ItemStatus, Source, Specimen, SpecimenImage
from collection.search import item_refresh_search
from collection.services import ImageFileError, image_prepare
from collection.templatetags.collection_tags import image_src


def _thumbnail(image: SpecimenImage | None, size: int = 80) -> str:
    src = image_src(image) if image else ""
    if not src:
        return "—"
    return format_html(
        '<img src="{}" alt="{} image" width="{}" height="{}" class="obverse-admin-thumb">',
        src,
        image.get_side_display(),
        size,
        size,
    )


# Typed URLs without a scheme become https:// (Django 6's default, chosen now to silence its warning).
URL_FIELDS = {models.URLField: {"assume_scheme": "https"}}


class CatalogueAdmin(admin.ModelAdmin):
    """Shared admin defaults for catalogue models."""

    # Legends and descriptions are a line or two: compact boxes keep a whole record on one screen.
    formfield_overrides = {
        **URL_FIELDS,
        models.TextField: {"widget": forms.Textarea(attrs={"rows": 3, "cols": 90})},
        models.CharField: {"widget": forms.TextInput(attrs={"size": 70})},
    }

    class Media:
        css = {"all": ["css/admin.css"]}


@admin.register(Source)
class SourceAdmin(CatalogueAdmin):
    """Data sources and their credits; synthetic sources mark demo data on every page."""

    list_display = ["name", "licence", "is_synthetic", "item_count", "specimen_count"]
    list_filter = ["is_synthetic", "licence"]
    search_fields = ["name", "credit"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Source]:
        return (
            super()
            .get_queryset(request)
            .annotate(_items=Count("items", distinct=True), _specimens=Count("specimens", distinct=True))
        )

    @admin.display(description="Items", ordering="_items")
    def item_count(self, source: Source) -> int:
        return source._items

    @admin.display(description="Specimens", ordering="_specimens")
    def specimen_count(self, source: Source) -> int:
        return source._specimens


@admin.register(Concept)
class ConceptAdmin(CatalogueAdmin):
    """Vocabulary terms; searchable so item forms can pick them with autocomplete."""

    list_display = ["label", "kind", "uri", "item_count"]
    list_filter = ["kind"]
    search_fields = ["label", "slug", "uri"]
    prepopulated_fields = {"slug": ["label"]}
    ordering = ["kind", "label"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Concept]:
        return super().get_queryset(request).annotate(_items=Count("items"))

    @admin.display(description="Items", ordering="_items")
    def item_count(self, concept: Concept) -> int:
        return concept._items


class ConceptKindFilter(admin.SimpleListFilter):
    """Items that have (or lack) a concept of one kind: finds types still missing a mint, say."""

    title = "concept kind"
    parameter_name = "concept_kind"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        kinds = Concept.objects.order_by("kind").values_list("kind", flat=True).distinct()
        choices = []
        for kind in kinds:
            label = Concept(kind=kind).kind_label
            choices += [(kind, f"Has {label.lower()}"), (f"-{kind}", f"No {label.lower()}")]
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Item]) -> QuerySet[Item]:
        value = self.value()
        if not value:
            return queryset
        kind = value.lstrip("-")
        with_kind = Item.concepts.through.objects.filter(concept__kind=kind).values("item_id")
        return queryset.exclude(pk__in=with_kind) if value.startswith("-") else queryset.filter(pk__in=with_kind)


class SpecimenInline(admin.TabularInline):
    """The item's specimens, read-only here (edit them on their own page)."""

    model = Specimen
    fields = ["record_id", "weight_g", "diameter_mm", "is_public"]
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Item)
class ItemAdmin(CatalogueAdmin):
    """Catalogue items (types): search by reference, title, URI and legends; concepts by autocomplete."""

    list_display = ["__str__", "title", "status", "date_display", "source"]
    list_filter = ["status", "source", ConceptKindFilter]
    list_select_related = ["source"]
    search_fields = ["reference", "title", "uri", "obverse_legend", "reverse_legend"]
    autocomplete_fields = ["concepts"]
    readonly_fields = ["created_at", "updated_at", "public_page"]
    actions = ["publish", "withdraw"]
    inlines = [SpecimenInline]
    fieldsets = [
        (None, {"fields": ["reference", "uri", "title", "status", "source", "public_page"]}),
        ("Classification", {"fields": ["concepts", ("date_from", "date_to")]}),
        ("Obverse", {"fields": ["obverse_legend", "obverse_description"]}),
        ("Reverse", {"fields": ["reverse_legend", "reverse_description"]}),
        ("More", {"fields": ["description", "attributes", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    @admin.display(description="Date", ordering="date_from")
    def date_display(self, item: Item) -> str:
        return item.date_display

    @admin.display(description="Public page")
    def public_page(self, item: Item) -> str:
        if not item.pk:
            return "—"
        note = "" if item.status == ItemStatus.PUBLISHED else " (not public until published)"
        return format_html('<a href="{}">{}</a>{}', item.get_absolute_url(), item.get_absolute_url(), note)

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # Search columns include concept labels, so they are rebuilt once the concepts are saved.
        item_refresh_search(item_ids=[form.instance.pk])

    @admin.action(description="Publish selected items", permissions=["change"])
    def publish(self, request: HttpRequest, queryset: QuerySet[Item]) -> None:
        count = queryset.exclude(status=ItemStatus.PUBLISHED).update(status=ItemStatus.PUBLISHED)
        self.message_user(request, f"{count} item(s) published.", messages.SUCCESS)

    @admin.action(description="Withdraw selected items", permissions=["change"])
    def withdraw(self, request: HttpRequest, queryset: QuerySet[Item]) -> None:
        count = queryset.exclude(status=ItemStatus.WITHDRAWN).update(status=ItemStatus.WITHDRAWN)
        self.message_user(request, f"{count} item(s) withdrawn.", messages.SUCCESS)


class SpecimenImageForm(forms.ModelForm):
    """A catalogue photo as the admin stores it: an uploaded file is re-encoded first, so none of its EXIF
    (GPS position, camera serial), XMP or IPTC data is ever published (``services.image_prepare``)."""

    class Meta:
        model = SpecimenImage
        fields = ["image"]  # the admin adds the others it lists

    def clean_image(self):
        upload = self.cleaned_data.get("image")
        if not isinstance(upload, UploadedFile):
            return upload  # unchanged, cleared or absent
        upload.seek(0)
        try:
            prepared = image_prepare(data=upload.read())
        except ImageFileError as exc:
            raise forms.ValidationError(f"This file cannot be used as a photo: {exc}.") from exc
        name = f"{Path(upload.name or 'photo').stem}{prepared.extension}"
        return SimpleUploadedFile(name, prepared.content, content_type=f"image/{prepared.extension[1:]}")


class SpecimenImageInline(admin.TabularInline):
    """A specimen's photographs with a thumbnail preview; checksums and sizes are derived, not typed."""

    model = SpecimenImage
    form = SpecimenImageForm
    formfield_overrides = URL_FIELDS
    fields = ["preview", "side", "image", "remote_url", "sort_order", "sha256_short", "width", "height"]
    readonly_fields = ["preview", "sha256_short", "width", "height"]
    extra = 0

    @admin.display(description="Preview")
    def preview(self, image: SpecimenImage) -> str:
        return _thumbnail(image if image.pk else None)

    @admin.display(description="SHA-256")
    def sha256_short(self, image: SpecimenImage) -> str:
        return image.sha256[:12] if image.sha256 else "—"


@admin.register(Specimen)
class SpecimenAdmin(CatalogueAdmin):
    """Physical specimens; findspot and provenance are edited here and never shown publicly."""

    list_display = ["record_id", "item", "weight_g", "diameter_mm", "is_public", "source", "image_count"]
    list_filter = ["is_public", "source", "images__side"]
    list_select_related = ["item", "source"]
    search_fields = ["record_id", "title", "item__reference", "item__title", "holding_collection"]
    autocomplete_fields = ["item"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [SpecimenImageInline]
    fieldsets = [
        (None, {"fields": ["record_id", "item", "title", "is_public", "source", "source_url"]}),
        ("Measurements", {"fields": [("weight_g", "diameter_mm", "die_axis")]}),
        ("Holding", {"fields": ["holding_collection", "image_rights"]}),
        ("Private (never public)", {"fields": ["findspot", "provenance"]}),
        ("More", {"fields": ["attributes", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Specimen]:
        return super().get_queryset(request).annotate(_images=Count("images", distinct=True))

    @admin.display(description="Images", ordering="_images")
    def image_count(self, specimen: Specimen) -> int:
        return specimen._images


@admin.register(SpecimenImage)
class SpecimenImageAdmin(CatalogueAdmin):
    """Catalogue photographs: preview, checksum and which embedding model versions index them."""

    form = SpecimenImageForm
    list_display = ["preview", "specimen", "side", "sha256_short", "width", "height", "created_at"]
    list_display_links = ["preview", "specimen"]
    list_filter = ["side"]
    list_select_related = ["specimen"]
    search_fields = ["specimen__record_id", "sha256"]
    autocomplete_fields = ["specimen"]
    fields = [
        "specimen",
        "side",
        "sort_order",
        "image",
        "remote_url",
        "cutout",
        "thumbnail",
        "large_preview",
        "sha256",
        ("width", "height"),
        "embedding_info",
        "created_at",
    ]
    # The cut-out and thumbnail are made from the photo (by the indexer, by an import), never uploaded by hand.
    readonly_fields = [
        "large_preview",
        "cutout",
        "thumbnail",
        "sha256",
        "width",
        "height",
        "embedding_info",
        "created_at",
    ]

    @admin.display(description="Preview")
    def preview(self, image: SpecimenImage) -> str:
        return _thumbnail(image, 56)

    @admin.display(description="Preview")
    def large_preview(self, image: SpecimenImage) -> str:
        return _thumbnail(image if image.pk else None, 240)

    @admin.display(description="SHA-256", ordering="sha256")
    def sha256_short(self, image: SpecimenImage) -> str:
        return image.sha256[:12] if image.sha256 else "—"

    @admin.display(description="Embeddings")
    def embedding_info(self, image: SpecimenImage) -> str:
        # Model name and version only: the 1,280 numbers themselves mean nothing to a curator.
        rows = list(image.embeddings.order_by("-created_at").values_list("model_name", "model_version", "created_at"))
        if not rows:
            return "Not indexed yet (run the indexer or wait for the background task)."
        return format_html_join(
            "",
            "<div>{}@{} — {}</div>",
            ((name, version, created.strftime("%Y-%m-%d %H:%M")) for name, version, created in rows),
        )


admin.site.site_header = "Obverse curation"
admin.site.site_title = "Obverse admin"
admin.site.index_title = "Catalogue and identification"
