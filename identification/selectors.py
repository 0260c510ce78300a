"""Reads of submissions shared by pages and the API (one query plan, no N+1)."""

from __future__ import annotations

from django.db.models import Prefetch

from identification.models import Candidate, Submission


def submission_get(*, pk) -> Submission | None:
    """A submission with its images and candidates (items, matched images) prefetched."""
    candidates = Candidate.objects.select_related(
        "item", "matched_image", "matched_image__specimen", "query_image"
    ).order_by("rank")
    return (
        Submission.objects.prefetch_related("images", Prefetch("candidates", queryset=candidates)).filter(pk=pk).first()
    )
