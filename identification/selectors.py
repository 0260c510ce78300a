"""Reads of submissions shared by pages and the API (one query plan, no N+1)."""

from __future__ import annotations

import statistics

from django.db.models import Prefetch
from django.utils import timezone

from collection.models import CANDIDATE_FILTER_KINDS, KEY_KINDS, Concept, Item, ItemStatus
from collection.sorting import natural_key
from identification.models import Candidate, Submission, SubmissionStatus


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


# How many recent submissions the wait estimate is the median of.
RECENT_PROCESSED = 20


def queue_place(submission: Submission) -> dict:
    """Where a submission not yet finished stands: {ahead, running, typical_s, elapsed_s}.

    ``ahead`` counts the visitors' submissions received before it and not yet started (the
    catalogue's own work, indexing and training, runs in its own queue); ``running`` the others
    being processed now; ``typical_s`` the median processing time of the last ``RECENT_PROCESSED``
    submissions processed (None before any); ``elapsed_s`` how long this one has been processed.
    """
    waiting = Submission.objects.filter(status=SubmissionStatus.RECEIVED)
    ahead = waiting.filter(created_at__lt=submission.created_at).exclude(pk=submission.pk).count()
    running = Submission.objects.filter(status=SubmissionStatus.PROCESSING).exclude(pk=submission.pk).count()
    recent = (
        Submission.objects.filter(processed_at__isnull=False, processing_started_at__isnull=False)
        .exclude(status=SubmissionStatus.FAILED)
        .order_by("-processed_at")
        .values_list("processing_started_at", "processed_at")[:RECENT_PROCESSED]
    )
    durations = [(done - started).total_seconds() for started, done in recent if done >= started]
    elapsed = None
    if submission.status == SubmissionStatus.PROCESSING and submission.processing_started_at:
        elapsed = max(0.0, (timezone.now() - submission.processing_started_at).total_seconds())
    return {
        "ahead": ahead,
        "running": running,
        "typical_s": statistics.median(durations) if durations else None,
        "elapsed_s": elapsed,
    }


def narrowing_choices(*, candidate_item_ids: list[int], current: dict) -> list[dict]:
    """What a sender may narrow the candidates by: every term of the catalogue's vocabulary, kind by kind.

    [{kind, label, among: [options], others: [options]}] with each option {slug, label, selected}:
    the terms of the current candidates first, then the rest of the published catalogue's, each
    group in natural order. Two queries, whatever the vocabulary's size.
    """
    kinds = list(CANDIDATE_FILTER_KINDS)
    concepts = Concept.objects.filter(kind__in=kinds, items__status=ItemStatus.PUBLISHED).distinct()
    among_ids = set(
        Item.concepts.through.objects.filter(item_id__in=candidate_item_ids).values_list("concept_id", flat=True)
    )
    groups = {kind: {"kind": kind, "label": "", "among": [], "others": []} for kind in kinds}
    for concept in sorted(concepts.only("pk", "kind", "slug", "label"), key=lambda c: natural_key(c.label)):
        option = {"slug": concept.slug, "label": concept.label, "selected": current.get(concept.kind) == concept.slug}
        groups[concept.kind]["among" if concept.pk in among_ids else "others"].append(option)
    for kind, group in groups.items():
        group["label"] = Concept(kind=kind).kind_label
    return [group for group in groups.values() if group["among"] or group["others"]]
