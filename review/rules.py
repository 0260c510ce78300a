"""The review workflow's rules: who may review or decide, how many must agree, how long a claim lasts.

Services and selectors both check them, so a page cannot show or do what its user may not.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied

from collection.roles import is_curator, is_volunteer
from identification.models import SubmissionStatus


def consensus_required() -> int:
    """How many agreeing volunteer reviews make a proposal (OBVERSE_REVIEW_CONSENSUS, default 2)."""
    return max(1, int(getattr(settings, "OBVERSE_REVIEW_CONSENSUS", 2)))


def claim_duration() -> timedelta:
    """How long a claim lasts before the submission returns to the queue (OBVERSE_REVIEW_CLAIM_MINUTES, 30)."""
    return timedelta(minutes=int(getattr(settings, "OBVERSE_REVIEW_CLAIM_MINUTES", 30)))


def volunteer_require(user) -> None:
    """Raise PermissionDenied unless the user may review (volunteers, curators, superusers)."""
    if user is None or not is_volunteer(user):
        raise PermissionDenied("Reviewing submissions is for volunteers.")


def curator_require(user) -> None:
    """Raise PermissionDenied unless the user is a curator (or a superuser)."""
    if user is None or not is_curator(user):
        raise PermissionDenied("Only curators may do this.")


def claimable_statuses(user) -> list[str]:
    """The statuses of the submissions this user may claim: curators also take those volunteers escalated."""
    statuses = [SubmissionStatus.AWAITING_REVIEW]
    if is_curator(user):
        statuses.append(SubmissionStatus.NEEDS_EXPERT)
    return statuses
