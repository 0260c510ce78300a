"""Emails to the person who submitted a photo, sent when curators close their submission.

Sent after the transaction commits (never for a rolled-back approval). Uses Django's configured
email backend (console in development); a failure to send is logged, never undoes the decision.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string

from identification.models import Submission
from review.models import Proposal

logger = logging.getLogger(__name__)


def site_url() -> str:
    """Base URL for links in emails (OBVERSE_SITE_URL, e.g. https://coins.example.org)."""
    return str(getattr(settings, "OBVERSE_SITE_URL", "http://localhost:8000")).rstrip("/")


def requester_address(submission: Submission) -> str:
    """Where to write: the contact email given with the submission, else the submitting user's."""
    if submission.requester_email:
        return submission.requester_email
    user = submission.submitted_by
    return user.email if user is not None and user.email else ""


def requester_notify(*, submission_id, kind: str, proposal_id: int | None = None) -> bool:
    """Tell the requester the outcome (``approved`` or ``not_identifiable``). Returns whether a mail was sent."""
    submission = Submission.objects.select_related("submitted_by").filter(pk=submission_id).first()
    if submission is None:
        return False
    address = requester_address(submission)
    if not address:
        return False
    proposal = (
        Proposal.objects.select_related("item", "created_item", "specimen").filter(pk=proposal_id).first()
        if proposal_id
        else None
    )
    item = (proposal.created_item or proposal.item) if proposal else None
    context = {
        "name": submission.requester_name
        or (submission.submitted_by.get_username() if submission.submitted_by else ""),
        "kind": kind,
        "item": item,
        "item_is_draft": bool(proposal and proposal.created_item_id),
        "specimen": proposal.specimen if proposal else None,
        "submission_url": site_url() + submission.get_absolute_url(),
        "item_url": site_url() + item.get_absolute_url() if item else "",
        "specimen_url": site_url() + proposal.specimen.get_absolute_url() if proposal and proposal.specimen else "",
        "short_id": str(submission.pk)[:8],
    }
    subject = f"Your coin is identified: {item}" if kind == "approved" and item else "About the coin you sent us"
    body = render_to_string("review/email_result.txt", context)
    try:
        send_mail(
            subject=subject,
            message=body,
            from_email=getattr(settings, "DEFAULT_FROM_EMAIL", None),
            recipient_list=[address],
        )
    except Exception:  # a mail server outage must not break the (already committed) decision
        logger.exception("could not email the requester of submission %s", submission_id)
        return False
    return True
