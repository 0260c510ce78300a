"""Review workflow services: claiming submissions, recording reviews, consensus, approval and rejection.

Every transition of a submission's status is a conditional UPDATE (or a row lock) inside a
transaction, so two volunteers never hold the same claim and two curators never approve the same
proposal. Permissions are checked here, not only in views: callers without the role get
PermissionDenied and nothing changes. The public catalogue changes only in ``proposal_approve``.
"""

from __future__ import annotations

import hashlib
import io

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from collection.models import KEY_KINDS, Concept, Item, ItemStatus, Side, Specimen, SpecimenImage
from collection.services import specimen_image_tiles_make
from identification.jobs import index_job_start
from identification.models import Candidate, Submission, SubmissionImage, SubmissionStatus
from review import rules, selectors
from review.emails import requester_notify
from review.models import Claim, Proposal, ProposalKind, ProposalStatus, Review, ReviewDecision, ReviewEvent

# What a volunteer may write to describe a new item; the key concepts name vocabulary terms.
DRAFT_FIELDS = (
    "title",
    *KEY_KINDS,
    "date_from",
    "date_to",
    "obverse_legend",
    "obverse_description",
    "reverse_legend",
    "reverse_description",
    "reference",
)


class ReviewConflict(Exception):
    """Someone else got there first (claimed the submission, decided the proposal); the message says who/what."""


def _event(submission_id, action: str, *, actor=None, **fields) -> ReviewEvent:
    return ReviewEvent.objects.create(submission_id=submission_id, action=action, actor=actor, **fields)


# --- Claims -------------------------------------------------------------------------------------


def claims_release_expired(*, now=None) -> int:
    """Release claims past their expiry and return their submissions to the queue. Returns how many.

    Safe to run concurrently with claiming: each submission goes back only if it is still
    ``in_review`` and none of its claims is still live.
    """
    now = now or timezone.now()
    released = 0
    expired = list(Claim.objects.filter(released_at__isnull=True, expires_at__lte=now).values_list("pk", flat=True))
    for claim_id in expired:
        with transaction.atomic():
            claim = Claim.objects.select_for_update().filter(pk=claim_id, released_at__isnull=True).first()
            if claim is None or claim.expires_at > now:
                continue
            claim.released_at = now
            claim.save(update_fields=["released_at"])
            Submission.objects.filter(pk=claim.submission_id, status=SubmissionStatus.IN_REVIEW).update(
                status=SubmissionStatus.AWAITING_REVIEW
            )
            _event(claim.submission_id, ReviewEvent.Action.EXPIRED, actor=claim.volunteer)
            released += 1
    return released


def submission_claim(*, submission_id, user) -> Claim:
    """Claim a submission for review: awaiting_review → in_review, with a lease that expires.

    Of two volunteers claiming at the same moment exactly one wins (conditional UPDATE on the
    status; PostgreSQL re-checks the condition once the first transaction commits); the other gets
    ReviewConflict. Claiming again one's own live claim extends it. A volunteer cannot claim a
    submission they already reviewed in this round.
    """
    rules.volunteer_require(user)
    claims_release_expired()
    with transaction.atomic():
        own = selectors.claim_active(submission_id=submission_id, user=user)
        if own is not None:
            own.expires_at = timezone.now() + rules.claim_duration()
            own.save(update_fields=["expires_at"])
            return own
        submission = Submission.objects.filter(pk=submission_id).first()
        if submission is None:
            raise ValidationError("No such submission.")
        if Review.objects.filter(
            submission_id=submission_id, reviewer=user, round=selectors.submission_round(submission_id=submission_id)
        ).exists():
            raise ReviewConflict("You have already reviewed this submission; it needs another volunteer's eyes.")
        previous = submission.status
        # Conditions on the row itself only (no joins): PostgreSQL re-checks them after a concurrent
        # UPDATE commits, which is what makes exactly one of two simultaneous claims win.
        won = Submission.objects.filter(pk=submission_id, status__in=rules.claimable_statuses(user)).update(
            status=SubmissionStatus.IN_REVIEW
        )
        if not won:
            holder = Claim.objects.active().filter(submission_id=submission_id).select_related("volunteer").first()
            if holder is not None:
                raise ReviewConflict("Another volunteer is reviewing this submission right now. Try the next one.")
            raise ReviewConflict(f"This submission cannot be reviewed now (it is {submission.get_status_display()}).")
        try:
            with transaction.atomic():
                claim = Claim.objects.create(
                    submission_id=submission_id, volunteer=user, expires_at=timezone.now() + rules.claim_duration()
                )
        except IntegrityError as exc:  # the partial unique index: a claim slipped in between
            raise ReviewConflict("Another volunteer is reviewing this submission right now.") from exc
        _event(submission_id, ReviewEvent.Action.CLAIMED, actor=user, data={"from": previous})
    return claim


def claim_release(*, submission_id, user) -> bool:
    """Give a claimed submission back to the queue without reviewing it. Returns whether a claim was released."""
    rules.volunteer_require(user)
    with transaction.atomic():
        claim = (
            Claim.objects.select_for_update()
            .filter(submission_id=submission_id, volunteer=user, released_at__isnull=True)
            .first()
        )
        if claim is None:
            return False
        claim.released_at = timezone.now()
        claim.save(update_fields=["released_at"])
        back_to = _status_before_claim(submission_id)
        Submission.objects.filter(pk=submission_id, status=SubmissionStatus.IN_REVIEW).update(status=back_to)
        _event(submission_id, ReviewEvent.Action.RELEASED, actor=user)
    return True


def _status_before_claim(submission_id) -> str:
    event = (
        ReviewEvent.objects.filter(submission_id=submission_id, action=ReviewEvent.Action.CLAIMED)
        .order_by("-created_at", "-pk")
        .first()
    )
    if event is not None and event.data.get("from") == SubmissionStatus.NEEDS_EXPERT:
        return SubmissionStatus.NEEDS_EXPERT
    return SubmissionStatus.AWAITING_REVIEW


def queue_next(*, user, filters: selectors.QueueFilters | None = None) -> Claim | None:
    """Claim the oldest submission in the user's queue; None when the queue is empty.

    Skips submissions another volunteer claims at the same moment, so two volunteers pressing
    "next" together get different submissions.
    """
    rules.volunteer_require(user)
    claims_release_expired()
    for submission_id in selectors.queue_submissions(user=user, filters=filters).values_list("pk", flat=True)[:20]:
        try:
            return submission_claim(submission_id=submission_id, user=user)
        except ReviewConflict:
            continue
    return None


# --- Reviews and consensus ----------------------------------------------------------------------


def _candidates_shown(submission_id) -> tuple[list[dict], dict]:
    candidates = Candidate.objects.filter(submission_id=submission_id).order_by("rank")
    shown = [
        {
            "rank": c.rank,
            "item_id": c.item_id,
            "score": c.score,
            "agreement": c.agreement,
            "side_scores": c.side_scores,
            "matched_image_id": c.matched_image_id,
        }
        for c in candidates
    ]
    versions: dict = {}
    for image in SubmissionImage.objects.filter(submission_id=submission_id).order_by("position"):
        versions.update(image.model_versions or {})
    return shown, versions


def _clean_draft(draft: dict | None) -> dict:
    clean = {}
    for key in DRAFT_FIELDS:
        value = (draft or {}).get(key)
        if value in (None, ""):
            continue
        if key in ("date_from", "date_to"):
            try:
                value = int(value)
            except (TypeError, ValueError) as exc:
                raise ValidationError({key: ["Give a year as a whole number (negative for BC)."]}) from exc
        else:
            value = str(value).strip()[:500]
        clean[key] = value
    return clean


def review_submit(
    *,
    submission_id,
    user,
    decision: str,
    item_id: int | None = None,
    draft: dict | None = None,
    comment: str = "",
) -> Review:
    """Record a volunteer's decision, release their claim, and apply consensus.

    Requires the user's live claim. Then: when ``rules.consensus_required()`` reviews of this round
    agree on the same item (or on a new item) a Proposal is created and the submission becomes
    ``proposed``; ``unsure`` or any disagreement escalates to ``needs_expert``; otherwise the
    submission returns to the queue for the next volunteer. A curator reviewing an escalated
    submission decides alone (an expert's review is the consensus).
    """
    rules.volunteer_require(user)
    if decision not in ReviewDecision.values:
        raise ValidationError({"decision": ["Choose match, new item, unsure or not identifiable."]})
    draft = _clean_draft(draft) if decision == ReviewDecision.NEW_ITEM else {}
    if decision == ReviewDecision.MATCH:
        if not item_id or not Item.objects.filter(pk=item_id).exists():
            raise ValidationError({"item": ["Choose the catalogue item this specimen matches."]})
    else:
        item_id = None
    if decision == ReviewDecision.NEW_ITEM and not (draft.get("title") or draft.get("authority")):
        raise ValidationError({"draft": ["Describe the new item: at least a title or a ruler."]})
    with transaction.atomic():
        claim = (
            Claim.objects.select_for_update()
            .filter(submission_id=submission_id, volunteer=user, released_at__isnull=True)
            .first()
        )
        if claim is None or not claim.is_active:
            raise ReviewConflict("Your claim on this submission has expired or was released; open it again.")
        submission = Submission.objects.select_for_update().get(pk=submission_id)
        if submission.status != SubmissionStatus.IN_REVIEW:
            raise ReviewConflict(f"This submission is {submission.get_status_display()}; it cannot be reviewed now.")
        expert = _status_before_claim(submission_id) == SubmissionStatus.NEEDS_EXPERT
        shown, versions = _candidates_shown(submission_id)
        current_round = selectors.submission_round(submission_id=submission_id)
        try:
            with transaction.atomic():
                review = Review.objects.create(
                    submission=submission,
                    reviewer=user,
                    round=current_round,
                    decision=decision,
                    item_id=item_id,
                    draft=draft,
                    comment=comment.strip()[:5000],
                    candidates_shown=shown,
                    model_versions=versions,
                )
        except IntegrityError as exc:
            raise ReviewConflict("You have already reviewed this submission.") from exc
        claim.released_at = timezone.now()
        claim.save(update_fields=["released_at"])
        _event(
            submission_id,
            ReviewEvent.Action.REVIEWED,
            actor=user,
            review=review,
            item_id=item_id,
            detail=review.get_decision_display(),
            data={"decision": decision, "round": current_round, "expert": expert},
        )
        _apply_consensus(submission, review, expert=expert)
    return review


def _apply_consensus(submission: Submission, review: Review, *, expert: bool) -> None:
    reviews = list(Review.objects.filter(submission=submission, round=review.round).order_by("created_at"))
    if expert:
        reviews = [review]
        needed = 1
    else:
        needed = rules.consensus_required()
    verdicts = {r.verdict for r in reviews}
    if expert and review.decision == ReviewDecision.NOT_IDENTIFIABLE:
        _set_status(submission, SubmissionStatus.RESOLVED)
        _event(submission.pk, ReviewEvent.Action.CLOSED, actor=review.reviewer, review=review)
        transaction.on_commit(lambda: _notify(submission.pk, kind="not_identifiable"))
        return
    if review.decision == ReviewDecision.UNSURE or len(verdicts) > 1:
        _set_status(submission, SubmissionStatus.NEEDS_EXPERT)
        reason = "A reviewer was unsure." if review.decision == ReviewDecision.UNSURE else "Reviewers disagreed."
        _event(
            submission.pk,
            ReviewEvent.Action.ESCALATED,
            actor=None,
            review=review,
            detail=reason,
            data={"verdicts": sorted([list(v) for v in verdicts], key=str), "expert": expert},
        )
        return
    if len(reviews) < needed:
        _set_status(submission, SubmissionStatus.AWAITING_REVIEW)
        return
    if review.decision == ReviewDecision.NOT_IDENTIFIABLE:
        # Agreement that nothing can be said still needs a curator to close it and answer the requester.
        _set_status(submission, SubmissionStatus.NEEDS_EXPERT)
        _event(submission.pk, ReviewEvent.Action.ESCALATED, review=review, detail="Reviewers agree: not identifiable.")
        return
    if review.decision == ReviewDecision.MATCH:
        proposal = Proposal.objects.create(submission=submission, kind=ProposalKind.ATTACH, item_id=review.item_id)
    else:
        proposal = Proposal.objects.create(submission=submission, kind=ProposalKind.NEW_ITEM, draft=reviews[0].draft)
    proposal.reviews.set(reviews)
    _set_status(submission, SubmissionStatus.PROPOSED)
    _event(
        submission.pk,
        ReviewEvent.Action.PROPOSED,
        review=review,
        proposal=proposal,
        item_id=proposal.item_id,
        detail=proposal.get_kind_display(),
        data={"reviews": [r.pk for r in reviews], "expert": expert},
    )


def _set_status(submission: Submission, status: str) -> None:
    Submission.objects.filter(pk=submission.pk).update(status=status, updated_at=timezone.now())
    submission.status = status


# --- Curators: approve or reject ----------------------------------------------------------------


def _lock_pending(proposal_id: int) -> Proposal:
    proposal = Proposal.objects.select_for_update().filter(pk=proposal_id).first()
    if proposal is None:
        raise ValidationError("No such proposal.")
    if proposal.status != ProposalStatus.PENDING:
        who = proposal.decided_by.get_username() if proposal.decided_by_id else "someone"
        raise ReviewConflict(
            f"This proposal was already {proposal.get_status_display().lower()} by {who}"
            f" at {timezone.localtime(proposal.decided_at):%H:%M:%S}; nothing was changed."
        )
    return proposal


def _item_from_draft(draft: dict, *, submission: Submission) -> Item:
    title = draft.get("title") or " · ".join(filter(None, [draft.get("authority"), draft.get("mint")])) or "New item"
    item = Item.objects.create(
        title=title[:500],
        reference=draft.get("reference", "")[:255],
        status=ItemStatus.DRAFT,
        date_from=draft.get("date_from"),
        date_to=draft.get("date_to"),
        obverse_legend=draft.get("obverse_legend", ""),
        obverse_description=draft.get("obverse_description", ""),
        reverse_legend=draft.get("reverse_legend", ""),
        reverse_description=draft.get("reverse_description", ""),
        attributes={"draft": draft, "from_submission": str(submission.pk)},
    )
    # The draft's key concepts name controlled-vocabulary terms: approval links those that exist.
    for kind in KEY_KINDS:
        label = draft.get(kind)
        if label:
            concept = Concept.objects.filter(kind=kind, label__iexact=label).first()
            if concept is not None:
                item.concepts.add(concept)
    return item


def _copy_images(submission: Submission, specimen: Specimen) -> list[SpecimenImage]:
    """Copy the submission's photos into catalogue images.

    The catalogue assumes upright photos (indexing skips orientation, pages show them as they are),
    so the pipeline's upright version is copied when there is one; its cut-out is then made by the
    indexer from that same upright photo. Without one, the original photo and its cut-out are copied.
    """
    from PIL import Image

    created = []
    orders: dict[str, int] = {}
    for photo in submission.images.order_by("position"):
        source = photo.upright or photo.original
        if not source:
            continue
        side = photo.side if photo.side in Side.values else photo.declared_side
        side = side if side in Side.values else Side.OTHER
        order = orders.get(side, 0)
        orders[side] = order + 1
        with source.open("rb") as fh:
            data = fh.read()
        with Image.open(io.BytesIO(data)) as decoded:
            width, height = decoded.size
        image = SpecimenImage(
            specimen=specimen,
            side=side,
            sort_order=order,
            sha256=hashlib.sha256(data).hexdigest(),
            width=width,
            height=height,
        )
        extension = source.name.rsplit(".", 1)[-1].lower() if "." in source.name else "jpg"
        image.image.save(f"{specimen.record_id}.{side}.{order}.{extension}", ContentFile(data), save=False)
        if not photo.upright and photo.cutout:
            with photo.cutout.open("rb") as fh:
                image.cutout.save(f"{specimen.record_id}.{side}.{order}.png", ContentFile(fh.read()), save=False)
        image.save()
        specimen_image_tiles_make(image_id=image.pk)  # IIIF tiles, as an import cuts them
        created.append(image)
    return created


def proposal_approve(*, proposal_id: int, user) -> Specimen:
    """Approve a proposal: the catalogue gains the specimen (and, for a new item, a draft item).

    Creates the Specimen (record id ``OBV-<submission>``, public) on the item, copies the
    submission's photos (upright versions) as its images, queues them for indexing, resolves the
    submission and emails the requester after commit. Of two curators approving together, one
    wins; the other gets ReviewConflict and nothing changes.
    """
    rules.curator_require(user)
    with transaction.atomic():
        proposal = _lock_pending(proposal_id)
        submission = Submission.objects.select_for_update().get(pk=proposal.submission_id)
        if submission.status != SubmissionStatus.PROPOSED:
            raise ReviewConflict(f"The submission is {submission.get_status_display()}, not awaiting approval.")
        if proposal.kind == ProposalKind.NEW_ITEM:
            item = _item_from_draft(proposal.draft, submission=submission)
            proposal.created_item = item
        else:
            item = proposal.item
        specimen = Specimen.objects.create(
            record_id=selectors.specimen_record_id(submission),
            item=item,
            title=item.title,
            is_public=True,
            provenance="Identified from photographs submitted to Obverse.",
            attributes={"submission": str(submission.pk)},
        )
        images = _copy_images(submission, specimen)
        proposal.status = ProposalStatus.APPROVED
        proposal.decided_by = user
        proposal.decided_at = timezone.now()
        proposal.specimen = specimen
        proposal.save()
        _set_status(submission, SubmissionStatus.RESOLVED)
        _event(
            submission.pk,
            ReviewEvent.Action.APPROVED,
            actor=user,
            proposal=proposal,
            item=item,
            specimen=specimen,
            detail=proposal.get_kind_display(),
            data={"images": [image.pk for image in images], "new_item": proposal.kind == ProposalKind.NEW_ITEM},
        )
        index_job_start(image_ids=[image.pk for image in images])
        transaction.on_commit(lambda: _notify(submission.pk, kind="approved", proposal_id=proposal.pk))
    return specimen


def proposal_reject(*, proposal_id: int, user, reason: str) -> Proposal:
    """Reject a proposal with a reason: the submission returns to the queue for a new round of reviews.

    The reason is shown to volunteers on the review page. Nothing in the catalogue changes.
    """
    rules.curator_require(user)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": ["Say why, so volunteers can do better next time."]})
    with transaction.atomic():
        proposal = _lock_pending(proposal_id)
        proposal.status = ProposalStatus.REJECTED
        proposal.decided_by = user
        proposal.decided_at = timezone.now()
        proposal.reason = reason[:5000]
        proposal.save()
        Submission.objects.filter(pk=proposal.submission_id, status=SubmissionStatus.PROPOSED).update(
            status=SubmissionStatus.AWAITING_REVIEW, updated_at=timezone.now()
        )
        _event(
            proposal.submission_id,
            ReviewEvent.Action.REJECTED,
            actor=user,
            proposal=proposal,
            item_id=proposal.item_id,
            detail=proposal.reason,
        )
    return proposal


def _notify(submission_id, *, kind: str, proposal_id: int | None = None) -> None:
    requester_notify(submission_id=submission_id, kind=kind, proposal_id=proposal_id)
