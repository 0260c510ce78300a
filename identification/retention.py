"""Retention: a decided submission's raw photos and its sender's contact details are kept only so long.

A raw upload is the file as the sender's phone wrote it, with whatever it carries (the GPS position
of where the photo was taken, the camera's serial number); the worker needs it to process and
reprocess the submission, nothing else does. The sender's name, email and address are needed to
answer them. Once a submission is decided (resolved by a curator, or failed) neither is needed:
``OBVERSE_RETENTION_DAYS`` (30) after the decision, ``retention_apply`` deletes the raw uploads and
clears the name, email and client address.

Kept: the re-encoded photos the site shows and the review history uses (original, cut-out, upright:
written without any metadata), the submission's notes, its reviews and, for an approved one, the
catalogue's own copy of the photos (``review.services._copy_images``). Submissions still open
(awaiting review, in review, proposed, with an expert) are never touched, however old.

Run daily by a django-q2 Schedule (``identification.tasks.apply_retention``) and by
``manage.py apply_retention``.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from identification import uploads
from identification.models import Submission, SubmissionImage

logger = logging.getLogger(__name__)

# A folder in the uploads storage younger than this may belong to a submission being stored right
# now (its row is not committed yet): orphans are only removed once older.
ORPHAN_GRACE = timedelta(days=1)


@dataclass
class RetentionReport:
    """What one run removed: the submissions cleared (ids) and the orphan upload folders deleted (names)."""

    cleared: list = field(default_factory=list)
    orphans: list = field(default_factory=list)


def retention_cutoff(*, now: datetime | None = None) -> datetime:
    """Submissions decided before this moment have served their purpose (OBVERSE_RETENTION_DAYS ago)."""
    return (now or timezone.now()) - timedelta(days=max(0, int(settings.OBVERSE_RETENTION_DAYS)))


def submissions_due(*, now: datetime | None = None):
    """Decided submissions past the retention period whose personal data is still there, oldest decision first."""
    return Submission.objects.filter(
        status__in=Submission.DECIDED_STATUSES,
        decided_at__lte=retention_cutoff(now=now),
        personal_data_removed_at__isnull=True,
    ).order_by("decided_at")


def submission_personal_data_remove(*, submission_id, now: datetime | None = None) -> bool:
    """Delete one decided submission's raw uploads and clear its sender's details; whether it did.

    Re-checked under a row lock, so a submission that is not (or no longer) due is left alone. The
    files go before the commit: if the commit then fails, the next run clears the row again, and no
    raw photo outlives the row that says it was removed.
    """
    now = now or timezone.now()
    with transaction.atomic():
        submission = (
            submissions_due(now=now).select_for_update(of=("self",)).filter(pk=submission_id).only("pk").first()
        )
        if submission is None:
            return False
        SubmissionImage.objects.filter(submission_id=submission_id).update(upload_path="")
        Submission.objects.filter(pk=submission_id).update(
            requester_name="", requester_email="", client_ip=None, personal_data_removed_at=now, updated_at=now
        )
        # Not ignoring errors: a folder that cannot be removed rolls the row back, for the next run to retry.
        uploads.uploads_discard(uploads.private_uploads(), submission_id, strict=True)
    return True


def retention_apply(*, now: datetime | None = None, dry_run: bool = False) -> RetentionReport:
    """Apply the retention to every submission due, and remove upload folders no submission owns.

    ``dry_run`` reports what would go without changing anything. Safe to run at any time and twice.
    """
    now = now or timezone.now()
    report = RetentionReport()
    for submission_id in submissions_due(now=now).values_list("pk", flat=True).iterator():
        if dry_run or submission_personal_data_remove(submission_id=submission_id, now=now):
            report.cleared.append(submission_id)
    for folder in _orphan_folders(now=now):
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
        report.orphans.append(folder.name)
    if report.cleared or report.orphans:
        logger.info(
            "retention%s: %s submissions cleared, %s orphan upload folders removed",
            " (dry run)" if dry_run else "",
            len(report.cleared),
            len(report.orphans),
        )
    return report


def _orphan_folders(*, now: datetime) -> list[Path]:
    """Upload folders older than ORPHAN_GRACE whose submission is gone (deleted in the admin) or was cleared."""
    root = Path(settings.OBVERSE_PRIVATE_UPLOADS)
    if not root.is_dir():
        return []
    oldest = (now - ORPHAN_GRACE).timestamp()
    candidates = {}
    for folder in root.iterdir():
        try:
            key = uuid.UUID(folder.name)
        except ValueError:
            continue  # not a submission's folder: not ours to judge
        if folder.is_dir() and not folder.is_symlink() and folder.stat().st_mtime < oldest:
            candidates[key] = folder
    existing = set(
        Submission.objects.filter(pk__in=list(candidates), personal_data_removed_at__isnull=True).values_list(
            "pk", flat=True
        )
    )
    return [folder for key, folder in sorted(candidates.items()) if key not in existing]
