"""Reads of submissions shared by pages and the API (one query plan, no N+1)."""

from __future__ import annotations

from django.db.models import Prefetch

from collection.models import KEY_KINDS, Concept
from identification.models import Candidate, Submission


def submission_get(*, pk) -> Submission | None:
    """A submission with its images and candidates (items, their key concepts, matched images) prefetched."""
    # What a candidate card shows of its item beside the title (``item.key_concepts``).
    key_concepts = Concept.objects.filter(kind__in=KEY_KINDS).order_by("kind", "label")
    candidates = (
        Candidate.objects.select_related("item", "matched_image", "matched_image__specimen", "query_image")
        .prefetch_related(Prefetch("item__concepts", queryset=key_concepts, to_attr="key_concepts"))
        .order_by("rank")
    )
    return (
        Submission.objects.prefetch_related("images", Prefetch("candidates", queryset=candidates)).filter(pk=pk).first()
    )
