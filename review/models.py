"""Review, consensus and approval models (volunteers review submissions, curators approve proposals).

The workflow: a volunteer *claims* a submission (a lease that expires), records a *review*; when
enough volunteers agree, a *proposal* goes to curators, who approve it (the catalogue changes) or
reject it (the submission returns to the queue). Every step leaves a *review event*.

These models were born in the ``identification`` app and keep its label (``app_label`` below): their
tables (``identification_review``…), content types, permissions and migrations
(``identification/migrations``) stay as they are, so moving the code here needed no data
migration. ``makemigrations identification`` writes their future migrations.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ReviewDecision(models.TextChoices):
    MATCH = "match", "Matches this item"
    NEW_ITEM = "new_item", "Not in the catalogue: a new item"
    UNSURE = "unsure", "Unsure"
    NOT_IDENTIFIABLE = "not_identifiable", "Not identifiable from these photos"


class ProposalKind(models.TextChoices):
    ATTACH = "attach", "Add a specimen to an existing item"
    NEW_ITEM = "new_item", "Create a new draft item"


class ProposalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class ClaimQuerySet(models.QuerySet):
    def active(self, now=None) -> ClaimQuerySet:
        """Claims still held: not released and not past their expiry."""
        return self.filter(released_at__isnull=True, expires_at__gt=now or timezone.now())


class Claim(models.Model):
    """A volunteer's lease on one submission while they review it; it expires so abandoned work returns.

    At most one unreleased claim per submission (a partial unique index backs the conditional
    UPDATE of the submission's status that decides who wins). Expired claims are released by
    ``review.services.claims_release_expired``.
    """

    submission = models.ForeignKey("identification.Submission", on_delete=models.CASCADE, related_name="claims")
    volunteer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="review_claims")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)

    objects = ClaimQuerySet.as_manager()

    class Meta:
        app_label = "identification"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["submission"],
                condition=models.Q(released_at__isnull=True),
                name="claim_one_open_per_submission",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.submission_id} claimed by {self.volunteer_id}"

    @property
    def is_active(self) -> bool:
        return self.released_at is None and self.expires_at > timezone.now()


class Review(models.Model):
    """One volunteer's decision on a submission, with the candidates they were shown (training signal).

    ``round`` counts the curator rejections before this review: after a rejection the submission is
    reviewed afresh, and only reviews of the current round count towards consensus. A volunteer
    reviews a submission at most once per round.
    """

    submission = models.ForeignKey("identification.Submission", on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews")
    round = models.PositiveSmallIntegerField(default=0)
    decision = models.CharField(max_length=20, choices=ReviewDecision.choices)
    item = models.ForeignKey("collection.Item", null=True, blank=True, on_delete=models.PROTECT, related_name="reviews")
    draft = models.JSONField(default=dict, blank=True, help_text="Description of a new item: ruler, mint, legends…")
    comment = models.TextField(blank=True)
    candidates_shown = models.JSONField(
        default=list,
        blank=True,
        help_text="[{rank, item_id, score, agreement, side_scores, matched_image_id}] at decision time.",
    )
    model_versions = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        app_label = "identification"
        ordering = ["submission", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["submission", "reviewer", "round"], name="review_once_per_round"),
            models.CheckConstraint(
                condition=~models.Q(decision="match") | models.Q(item__isnull=False), name="review_match_has_item"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.submission_id}: {self.decision} by {self.reviewer_id}"

    @property
    def verdict(self) -> tuple[str, int | None]:
        """What two reviews must share to agree: the decision and, for a match, the item."""
        return (self.decision, self.item_id if self.decision == ReviewDecision.MATCH else None)


class Proposal(models.Model):
    """A change to the catalogue that volunteers agreed on, waiting for a curator's approval.

    ``attach``: a new specimen (the submission's photos) on ``item``. ``new_item``: a new draft item
    described by ``draft``, with the specimen on it. ``specimen``/``created_item`` record what
    approval created.
    """

    submission = models.ForeignKey("identification.Submission", on_delete=models.CASCADE, related_name="proposals")
    kind = models.CharField(max_length=20, choices=ProposalKind.choices)
    item = models.ForeignKey("collection.Item", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    draft = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=20, choices=ProposalStatus.choices, default=ProposalStatus.PENDING, db_index=True
    )
    reviews = models.ManyToManyField(Review, related_name="proposals", blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="decided_proposals"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="Why a curator rejected it; shown to volunteers.")
    specimen = models.ForeignKey(
        "collection.Specimen", null=True, blank=True, on_delete=models.SET_NULL, related_name="proposals"
    )
    created_item = models.ForeignKey(
        "collection.Item", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        app_label = "identification"
        ordering = ["created_at"]
        constraints = [
            # One open proposal per submission: consensus cannot be reached twice in a round.
            models.UniqueConstraint(
                fields=["submission"], condition=models.Q(status="pending"), name="proposal_one_pending_per_submission"
            ),
            models.CheckConstraint(
                condition=~models.Q(kind="attach") | models.Q(item__isnull=False), name="proposal_attach_has_item"
            ),
        ]

    def __str__(self) -> str:
        return f"Proposal {self.pk} ({self.get_kind_display()}, {self.get_status_display()})"

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("review:proposal_detail", kwargs={"pk": self.pk})


class ReviewEvent(models.Model):
    """One recorded step of the review workflow: who did what, when, on which submission, item or specimen.

    Append-only; item and specimen pages show these to curators as their history.
    """

    class Action(models.TextChoices):
        CLAIMED = "claimed", "Claimed for review"
        RELEASED = "released", "Released"
        EXPIRED = "expired", "Claim expired"
        REVIEWED = "reviewed", "Reviewed"
        PROPOSED = "proposed", "Consensus: proposed to curators"
        ESCALATED = "escalated", "Escalated to an expert"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        CLOSED = "closed", "Closed as not identifiable"

    submission = models.ForeignKey("identification.Submission", on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="review_events"
    )
    action = models.CharField(max_length=20, choices=Action.choices)
    review = models.ForeignKey(Review, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    proposal = models.ForeignKey(Proposal, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    item = models.ForeignKey(
        "collection.Item", null=True, blank=True, on_delete=models.SET_NULL, related_name="review_events"
    )
    specimen = models.ForeignKey(
        "collection.Specimen", null=True, blank=True, on_delete=models.SET_NULL, related_name="review_events"
    )
    detail = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        app_label = "identification"
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.submission_id}"
