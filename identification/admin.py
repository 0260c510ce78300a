"""Admin for submissions: what curators and admins need to follow and debug identifications."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from identification.models import Candidate, Submission, SubmissionImage


class SubmissionImageInline(admin.TabularInline):
    model = SubmissionImage
    extra = 0
    can_delete = False
    fields = ["position", "preview", "declared_side", "side", "side_confidence", "angle", "enhanced", "timings"]
    readonly_fields = fields

    @admin.display(description="Cut-out")
    def preview(self, obj: SubmissionImage) -> str:
        image = obj.cutout or obj.original
        return format_html('<img src="{}" width="96" alt="">', image.url) if image else "–"


class CandidateInline(admin.TabularInline):
    model = Candidate
    extra = 0
    can_delete = False
    fields = ["rank", "item", "score", "side_scores", "matched_image", "rotation"]
    readonly_fields = fields
    raw_id_fields = ["item", "matched_image"]


@admin.register(Submission)
class SubmissionAdmin(admin.ModelAdmin):
    list_display = ["short_id", "status", "step", "requester_name", "submitted_by", "created_at", "attempts"]
    list_filter = ["status", "step", "created_at"]
    search_fields = ["id", "requester_name", "requester_email", "notes"]
    readonly_fields = [
        "id",
        "created_at",
        "updated_at",
        "processing_started_at",
        "processed_at",
        "decided_at",
        "personal_data_removed_at",
        "attempts",
        "step",
    ]
    raw_id_fields = ["submitted_by"]
    inlines = [SubmissionImageInline, CandidateInline]
    date_hierarchy = "created_at"

    @admin.display(description="Submission", ordering="id")
    def short_id(self, obj: Submission) -> str:
        return str(obj.id)[:8]
