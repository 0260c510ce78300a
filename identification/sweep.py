"""The stuck-submission sweep: what the queue lost or a killed worker left behind is queued again or failed.

Run every five minutes by a django-q2 Schedule (``identification.tasks.sweep_submissions``) and by
``manage.py sweep_submissions``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from identification import services
from identification.models import ProcessingStep, Submission, SubmissionStatus

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    """What one sweep did: the submissions it queued again and those it failed (ids)."""

    requeued: list
    failed: list


def _pending_submission_ids() -> set[str]:
    """Ids of submissions whose processing task is still in the ORM broker's queue.

    A task stays in the queue until a worker acknowledges it, so this includes tasks a worker holds
    (or held, if it died: the broker hands them out again after ``Q_CLUSTER["retry"]``). With another
    broker the table is empty and the sweep may queue a duplicate, which ``services._start_processing`` makes harmless.
    """
    from django_q.models import OrmQ

    pending = set()
    for row in OrmQ.objects.only("payload"):
        task = row.task  # a payload signed with another key decodes to {"id": "*BadSignature"}
        if task.get("func") == "identification.tasks.process_submission" and task.get("args"):
            pending.add(str(task["args"][0]))
    return pending


def submission_sweep_stuck(*, now=None, limit: int = 200) -> SweepReport:
    """Queue again, or fail with a reason, submissions that the queue lost or whose worker died.

    Stuck means: ``received`` and untouched for OBVERSE_SWEEP_RECEIVED_AFTER_S with no task in the
    queue (the enqueue was lost, e.g. the database restarted between commit and enqueue), or
    ``processing`` for longer than OBVERSE_PROCESSING_TIMEOUT_S (the worker was killed). One with
    attempts left is set back to ``received`` and queued once this transaction commits, unless the
    queue still holds its task (its retry will come); one whose attempts are used up is failed.
    Race-safe: rows are locked with SKIP LOCKED and changed by conditional UPDATEs, and a requeued
    row's ``updated_at`` restarts its clock, so concurrent or repeated sweeps never queue it twice.
    """
    now = now or timezone.now()
    received_before = now - timedelta(seconds=settings.OBVERSE_SWEEP_RECEIVED_AFTER_S)
    stale_before = now - timedelta(seconds=settings.OBVERSE_PROCESSING_TIMEOUT_S)
    max_attempts = settings.OBVERSE_PROCESSING_MAX_ATTEMPTS
    stuck = Q(status=SubmissionStatus.RECEIVED, updated_at__lt=received_before) | Q(
        status=SubmissionStatus.PROCESSING, processing_started_at__lt=stale_before
    )
    report = SweepReport(requeued=[], failed=[])
    with transaction.atomic():
        rows = list(
            Submission.objects.select_for_update(skip_locked=True)
            .filter(stuck)
            .order_by("created_at")
            .values_list("pk", "status", "attempts")[:limit]
        )
        pending = _pending_submission_ids() if rows else set()
        for pk, status, attempts in rows:
            unchanged = Submission.objects.filter(pk=pk, status=status)
            if attempts >= max_attempts:
                reason = (
                    f"Processing stopped {attempts} times without finishing (the worker was stopped or ran out "
                    "of time). Please submit the photos again, or smaller ones."
                )
                if unchanged.update(status=SubmissionStatus.FAILED, error=reason, processed_at=now, updated_at=now):
                    report.failed.append(pk)
            elif str(pk) not in pending and unchanged.update(
                status=SubmissionStatus.RECEIVED, step=ProcessingStep.RECEIVED, updated_at=now
            ):
                report.requeued.append(pk)
        requeued = list(report.requeued)
        transaction.on_commit(lambda: [services.submission_enqueue(submission_id=pk) for pk in requeued])
    if report.requeued or report.failed:
        logger.warning("sweep: requeued %s, failed %s stuck submissions", len(report.requeued), len(report.failed))
    return report
