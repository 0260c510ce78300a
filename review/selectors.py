"""Reads for the review pages and the dashboard: queue rows, the comparison data, proposals, history, statistics.

Every selector that shows private data (requester details, reviews) takes the user and checks the
role, so pages cannot forget it. Query counts are fixed per page (prefetching, no per-row queries).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db.models import Count, Exists, F, Min, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from collection.models import Side, Specimen, SpecimenImage
from identification.jobs import active_jobs
from identification.models import Candidate, Submission, SubmissionStatus
from review import rules
from review.models import Claim, Proposal, ProposalKind, ProposalStatus, Review, ReviewDecision, ReviewEvent

OTHER_SPECIMENS = 6


@dataclass(frozen=True)
class QueueFilters:
    """Narrowing of the volunteer queue: predicted side, predicted material, only submissions with two photos."""

    side: str = ""
    material: str = ""
    two_photos: bool = False


def queue_submissions(*, user, filters: QueueFilters | None = None) -> QuerySet[Submission]:
    """Submissions this user may claim, oldest first, narrowed by the filters."""
    rules.volunteer_require(user)
    filters = filters or QueueFilters()
    # A volunteer's earlier reviews only exclude the round they were made in; rejected proposals start a new round.
    queryset = Submission.objects.filter(status__in=rules.claimable_statuses(user)).exclude(
        pk__in=_reviewed_this_round(user)
    )
    if filters.side in Side.values:
        queryset = queryset.filter(images__side=filters.side)
    if filters.material:
        queryset = queryset.filter(
            Q(images__metadata__material__value__iexact=filters.material)
            | Q(images__metadata__material__iexact=filters.material)
        )
    if filters.two_photos:
        queryset = queryset.filter(images__position=1)
    return queryset.distinct().order_by("created_at")


def _reviewed_this_round(user):
    rejected = (
        Proposal.objects.filter(submission_id=OuterRef("submission_id"), status=ProposalStatus.REJECTED)
        .order_by()
        .values("submission_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Review.objects.filter(reviewer=user)
        .annotate(current=Coalesce(Subquery(rejected), 0))
        .filter(round=F("current"))
        .values("submission_id")
    )


def submission_round(*, submission_id) -> int:
    """The review round: how many proposals curators have rejected for this submission so far."""
    return Proposal.objects.filter(submission_id=submission_id, status=ProposalStatus.REJECTED).count()


def claim_active(*, submission_id, user) -> Claim | None:
    """The user's live claim on this submission, if any."""
    if user is None or not user.is_authenticated:
        return None
    return Claim.objects.active().filter(submission_id=submission_id, volunteer=user).first()


def specimen_record_id(submission: Submission) -> str:
    """The record id approval gives the specimen made from this submission (``OBV-`` and its id, made unique)."""
    short = str(submission.pk).replace("-", "").upper()
    for length in (8, 12, 32):
        candidate = f"OBV-{short[:length]}"
        if not Specimen.objects.filter(record_id=candidate).exists():
            return candidate
    raise ValidationError("A specimen already records this submission.")


def queue_page(*, user, filters: QueueFilters | None = None, limit: int = 50) -> list[Submission]:
    """The queue as a list, with photos and whether curators sent it back, in a fixed number of queries."""
    rejected = Proposal.objects.filter(submission=OuterRef("pk"), status=ProposalStatus.REJECTED)
    queryset = (
        queue_submissions(user=user, filters=filters)
        .annotate(n_reviews=Count("reviews", distinct=True), returned=Exists(rejected))
        .prefetch_related("images")
    )
    return list(queryset[:limit])


def claims_of(*, user) -> list:
    """The user's live claims (to resume), newest first."""
    rules.volunteer_require(user)
    return list(Claim.objects.active().filter(volunteer=user).select_related("submission"))


def _image_json(image: SpecimenImage) -> dict:
    shown = image.cutout or image.image
    return {
        "id": image.pk,
        "url": shown.url if shown else image.remote_url,
        "is_cutout": bool(image.cutout),
        "photo": image.image.url if image.image else image.remote_url,
        "side": image.side,
        "record_id": image.specimen.record_id,
        "specimen_url": image.specimen.get_absolute_url(),
    }


@dataclass
class ReviewPage:
    """Everything the comparison page shows for one submission."""

    submission: Submission
    images: list
    candidates: list
    compare: dict
    claim: object | None
    reviewed: Review | None
    rejections: list
    current_reviews: int
    needed: int
    events: list = field(default_factory=list)


def review_page(*, submission_id, user) -> ReviewPage | None:
    """The comparison page's data: query photos, 8 candidates with their images and the items' other specimens."""
    rules.volunteer_require(user)
    submission = Submission.objects.filter(pk=submission_id).first()
    if submission is None:
        return None
    images = list(submission.images.order_by("position"))
    candidates = list(
        Candidate.objects.filter(submission=submission)
        .select_related("item", "matched_image__specimen")
        .order_by("rank")
    )
    item_ids = [c.item_id for c in candidates]
    others: dict[int, list[SpecimenImage]] = {}
    for image in (
        SpecimenImage.objects.filter(specimen__item_id__in=item_ids, specimen__is_public=True)
        .select_related("specimen")
        .order_by("specimen__item_id", "specimen__record_id", "side", "sort_order")
    ):
        bucket = others.setdefault(image.specimen.item_id, [])
        if len(bucket) < OTHER_SPECIMENS * 2:
            bucket.append(image)
    compare = {
        "query": [
            {
                "position": image.position,
                "side": image.side or image.declared_side,
                "cutout": image.cutout.url if image.cutout else "",
                "original": image.original.url if image.original else "",
                "upright": image.upright.url if image.upright else "",
                "angle": image.angle or 0.0,
            }
            for image in images
        ],
        "candidates": [],
    }
    positions = {image.pk: image.position for image in images}
    for candidate in candidates:
        shown = [candidate.matched_image] if candidate.matched_image else []
        shown += [i for i in others.get(candidate.item_id, []) if i.pk != candidate.matched_image_id]
        compare["candidates"].append(
            {
                "rank": candidate.rank,
                "item_id": candidate.item_id,
                "label": str(candidate.item),
                "title": candidate.item.title,
                "date": candidate.item.date_display,
                "url": candidate.item.get_absolute_url(),
                "score": round(candidate.score, 3),
                "agreement": round(candidate.agreement, 3),
                "rotation": candidate.rotation,
                "query_position": positions.get(candidate.query_image_id, 0),
                "images": [_image_json(image) for image in shown],
            }
        )
    current_round = submission_round(submission_id=submission.pk)
    return ReviewPage(
        submission=submission,
        images=images,
        candidates=candidates,
        compare=compare,
        claim=claim_active(submission_id=submission.pk, user=user),
        reviewed=Review.objects.filter(submission=submission, reviewer=user, round=current_round).first(),
        rejections=list(
            Proposal.objects.filter(submission=submission, status=ProposalStatus.REJECTED)
            .select_related("item")
            .order_by("-decided_at")
        ),
        current_reviews=Review.objects.filter(submission=submission, round=current_round).count(),
        needed=rules.consensus_required(),
    )


def proposals_list(*, user, status: str = ProposalStatus.PENDING) -> QuerySet[Proposal]:
    """Proposals for curators, oldest first, with what they need for a list row."""
    rules.curator_require(user)
    queryset = Proposal.objects.select_related("submission", "item", "decided_by", "specimen").annotate(
        n_reviews=Count("reviews")
    )
    if status in ProposalStatus.values:
        queryset = queryset.filter(status=status)
    return queryset.order_by("created_at" if status == ProposalStatus.PENDING else "-decided_at")


def escalated_list(*, user) -> QuerySet[Submission]:
    """Submissions volunteers could not settle (``needs_expert``), oldest first."""
    rules.curator_require(user)
    return Submission.objects.filter(status=SubmissionStatus.NEEDS_EXPERT).order_by("created_at")


def proposal_page(*, proposal_id: int, user) -> dict | None:
    """A proposal with its evidence and a preview of what approval will write to the catalogue."""
    rules.curator_require(user)
    proposal = (
        Proposal.objects.select_related("submission__submitted_by", "item", "decided_by", "specimen", "created_item")
        .filter(pk=proposal_id)
        .first()
    )
    if proposal is None:
        return None
    submission = proposal.submission
    images = list(submission.images.order_by("position"))
    reviews = list(proposal.reviews.select_related("reviewer", "item").order_by("created_at"))
    candidate = Candidate.objects.filter(submission=submission, item_id=proposal.item_id).first()
    item_images = []
    if proposal.item_id:
        item_images = list(
            SpecimenImage.objects.filter(specimen__item_id=proposal.item_id)
            .select_related("specimen")
            .order_by("specimen__record_id", "side")[:8]
        )
    return {
        "proposal": proposal,
        "submission": submission,
        "images": images,
        "reviews": reviews,
        "model_rank": candidate.rank if candidate else None,
        "model_score": candidate.score if candidate else None,
        "item_images": item_images,
        "record_id": specimen_record_id(submission) if proposal.status == ProposalStatus.PENDING else "",
        "draft_rows": [(key.replace("_", " ").capitalize(), proposal.draft[key]) for key in proposal.draft],
        "events": list(submission.events.select_related("actor", "item", "specimen").order_by("created_at", "pk")),
    }


def history_for(*, user, item_id: int | None = None, specimen_id: int | None = None) -> list[ReviewEvent]:
    """Review events touching an item or a specimen (curators only), newest first, for their pages."""
    rules.curator_require(user)
    condition = Q()
    if item_id is not None:
        condition |= Q(item_id=item_id) | Q(proposal__item_id=item_id) | Q(proposal__created_item_id=item_id)
    if specimen_id is not None:
        condition |= Q(specimen_id=specimen_id) | Q(proposal__specimen_id=specimen_id)
    if not condition:
        return []
    return list(
        ReviewEvent.objects.filter(condition)
        .select_related("actor", "proposal", "review")
        .order_by("-created_at", "-pk")[:200]
    )


def dashboard_stats(*, user, days: int = 14, now=None) -> dict:
    """Queue length and age, reviews per day, agreement rate and the model's real-world accuracy."""
    rules.curator_require(user)
    now = now or timezone.now()
    waiting = Submission.objects.filter(status=SubmissionStatus.AWAITING_REVIEW)
    oldest = waiting.aggregate(oldest=Min("created_at"))["oldest"]
    by_status = dict(Submission.objects.values_list("status").annotate(n=Count("pk")).order_by())
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    per_day = dict(
        Review.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values_list("day")
        .annotate(n=Count("pk"))
        .order_by()
    )
    day_rows = []
    for offset in range(days):
        day = (since + timedelta(days=offset)).date()
        day_rows.append({"day": day, "count": per_day.get(day, 0)})
    peak = max([row["count"] for row in day_rows] + [1])
    for row in day_rows:
        row["percent"] = round(100 * row["count"] / peak)
    # Agreement: of the times enough reviews came together, how often they agreed (not escalated).
    agreed = ReviewEvent.objects.filter(action=ReviewEvent.Action.PROPOSED, data__expert=False).count()
    disagreed = ReviewEvent.objects.filter(
        action=ReviewEvent.Action.ESCALATED, detail="Reviewers disagreed.", data__expert=False
    ).count()
    accuracy = model_accuracy()
    return {
        "queue_length": waiting.count(),
        "oldest_age": now - oldest if oldest else None,
        "by_status": {SubmissionStatus(k).label: v for k, v in sorted(by_status.items())},
        "in_review": by_status.get(SubmissionStatus.IN_REVIEW, 0),
        "needs_expert": by_status.get(SubmissionStatus.NEEDS_EXPERT, 0),
        "pending_proposals": Proposal.objects.filter(status=ProposalStatus.PENDING).count(),
        "reviews_per_day": day_rows,
        "reviews_total": sum(row["count"] for row in day_rows),
        "agreed": agreed,
        "disagreed": disagreed,
        "agreement_rate": agreed / (agreed + disagreed) if agreed + disagreed else None,
        "decisions": dict(Counter(Review.objects.values_list("decision", flat=True))),
        "jobs": active_jobs(),  # the catalogue's bulk work: indexing, training, with progress
        **accuracy,
    }


def model_accuracy() -> dict:
    """Where the item curators accepted stood in the model's candidates: top-1 and top-8 rates."""
    accepted = list(
        Proposal.objects.filter(status=ProposalStatus.APPROVED, kind=ProposalKind.ATTACH).values_list(
            "submission_id", "item_id"
        )
    )
    rows = Candidate.objects.filter(submission_id__in=[s for s, _ in accepted]).values_list(
        "submission_id", "item_id", "rank"
    )
    ranks = {(submission_id, item_id): rank for submission_id, item_id, rank in rows}
    found = [ranks.get(key) for key in accepted]
    n = len(found)
    return {
        "accepted_matches": n,
        "top1": sum(1 for r in found if r == 1),
        "top8": sum(1 for r in found if r is not None and r <= 8),
        "top1_rate": sum(1 for r in found if r == 1) / n if n else None,
        "top8_rate": sum(1 for r in found if r is not None and r <= 8) / n if n else None,
    }


@dataclass(frozen=True)
class TrainingPair:
    """One query photo of an approved identification, its true item, and the items it was wrongly near.

    For ``manage.py train_models``: ``positive_item_id`` is a positive for the query embedding;
    ``hard_negative_item_ids`` are candidates ranked above the true item or rejected by a curator,
    the look-alikes a metric-learning head should push away.
    """

    submission_id: str
    submission_image_id: int
    side: str
    positive_item_id: int
    positive_rank: int | None
    hard_negative_item_ids: tuple[int, ...]


def training_signal() -> list[TrainingPair]:
    """Learning-loop input: accepted matches as positives, outranking and rejected candidates as hard negatives.

    Reads only curator-approved attach proposals (volunteer consensus alone is not ground truth).
    Items a curator rejected for that submission join its hard negatives.
    """
    approved = list(
        Proposal.objects.filter(status=ProposalStatus.APPROVED, kind=ProposalKind.ATTACH).values_list(
            "submission_id", "item_id"
        )
    )
    if not approved:
        return []
    submission_ids = [s for s, _ in approved]
    candidates: dict = {}
    for s, item_id, rank in Candidate.objects.filter(submission_id__in=submission_ids).values_list(
        "submission_id", "item_id", "rank"
    ):
        candidates.setdefault(s, []).append((rank, item_id))
    rejected: dict = {}
    for s, item_id in Proposal.objects.filter(
        submission_id__in=submission_ids, status=ProposalStatus.REJECTED, item__isnull=False
    ).values_list("submission_id", "item_id"):
        rejected.setdefault(s, set()).add(item_id)
    wrong_matches: dict = {}
    for s, item_id in Review.objects.filter(
        submission_id__in=submission_ids, decision=ReviewDecision.MATCH
    ).values_list("submission_id", "item_id"):
        wrong_matches.setdefault(s, set()).add(item_id)
    from identification.models import SubmissionImage

    pairs = []
    images = SubmissionImage.objects.filter(submission_id__in=submission_ids).order_by("submission_id", "position")
    truth = dict(approved)
    for image in images.values("pk", "submission_id", "side"):
        s = image["submission_id"]
        positive = truth[s]
        ranked = sorted(candidates.get(s, []))
        rank = next((r for r, i in ranked if i == positive), None)
        above = [i for r, i in ranked if rank is None or r < rank]
        negatives = set(above) | rejected.get(s, set()) | (wrong_matches.get(s, set()))
        negatives.discard(positive)
        pairs.append(
            TrainingPair(
                submission_id=str(s),
                submission_image_id=image["pk"],
                side=image["side"],
                positive_item_id=positive,
                positive_rank=rank,
                hard_negative_item_ids=tuple(sorted(negatives)),
            )
        )
    return pairs
