"""identification.sweep: stuck submissions are queued again or failed, once, whatever runs beside the sweep."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from identification import services, sweep, tasks
from identification.models import Candidate, Submission, SubmissionImage, SubmissionStatus
from tests.factories import catalogue_image, make_item, submit


def _age(submission: Submission, *, minutes: int, **fields) -> None:
    """Make a submission look as if it was last touched (or claimed) ``minutes`` ago."""
    then = timezone.now() - timedelta(minutes=minutes)
    values = {"updated_at": then}
    if fields.get("status") == SubmissionStatus.PROCESSING:
        values["processing_started_at"] = then
    Submission.objects.filter(pk=submission.pk).update(**values, **fields)


@pytest.fixture
def enqueued(monkeypatch) -> list[str]:
    """Record what the sweep queues instead of running it."""
    calls: list[str] = []
    monkeypatch.setattr(services, "submission_enqueue", lambda submission_id: calls.append(str(submission_id)))
    return calls


@pytest.mark.django_db
class TestSubmissionSweepStuck:
    def test_it_requeues_a_received_submission_the_queue_lost_and_it_finishes_once(
        self, fake_pipeline, django_capture_on_commit_callbacks
    ):
        catalogue_image(make_item(), seed=42, pipeline=fake_pipeline)
        catalogue_image(make_item(), seed=44, pipeline=fake_pipeline)
        submission = submit()  # outside captured callbacks: its enqueue is "lost"
        _age(submission, minutes=10)
        with django_capture_on_commit_callbacks(execute=True):  # sync=True in tests: the task runs inline
            report = sweep.submission_sweep_stuck()
        assert report.requeued == [submission.pk] and report.failed == []
        done = Submission.objects.get(pk=submission.pk)
        assert done.status == SubmissionStatus.AWAITING_REVIEW and done.attempts == 1
        assert Candidate.objects.filter(submission=done).count() == 2
        with django_capture_on_commit_callbacks(execute=True):
            again = sweep.submission_sweep_stuck()
        assert again.requeued == [] and again.failed == []
        assert Candidate.objects.filter(submission=done).count() == 2

    def test_it_leaves_a_recent_received_submission_alone(self, enqueued, django_capture_on_commit_callbacks):
        submission = submit()
        _age(submission, minutes=2)  # below OBVERSE_SWEEP_RECEIVED_AFTER_S (5 minutes)
        with django_capture_on_commit_callbacks(execute=True):
            report = sweep.submission_sweep_stuck()
        assert report.requeued == [] and enqueued == []
        assert Submission.objects.get(pk=submission.pk).status == SubmissionStatus.RECEIVED

    def test_it_leaves_a_received_submission_whose_task_is_still_queued(
        self, enqueued, django_capture_on_commit_callbacks
    ):
        from django_q.tasks import async_task

        submission = submit()
        _age(submission, minutes=30)  # waiting behind a long queue, not lost
        async_task("identification.tasks.process_submission", str(submission.pk), sync=False)  # into the ORM broker
        assert OrmQ.objects.count() == 1
        with django_capture_on_commit_callbacks(execute=True):
            report = sweep.submission_sweep_stuck()
        assert report.requeued == [] and enqueued == []

    def test_it_requeues_a_processing_submission_whose_worker_died(
        self, fake_pipeline, django_capture_on_commit_callbacks
    ):
        catalogue_image(make_item(), seed=42, pipeline=fake_pipeline)
        submission = submit()
        _age(submission, minutes=30, status=SubmissionStatus.PROCESSING, step="classifying", attempts=1)
        with django_capture_on_commit_callbacks(execute=True):
            report = sweep.submission_sweep_stuck()
        assert report.requeued == [submission.pk]
        done = Submission.objects.get(pk=submission.pk)
        assert done.status == SubmissionStatus.AWAITING_REVIEW and done.attempts == 2
        assert SubmissionImage.objects.filter(submission=done).count() == 1
        assert Candidate.objects.filter(submission=done).count() == 1

    def test_it_leaves_a_processing_submission_within_its_timeout(
        self, enqueued, settings, django_capture_on_commit_callbacks
    ):
        submission = submit()
        _age(submission, minutes=5, status=SubmissionStatus.PROCESSING, attempts=1)
        settings.OBVERSE_PROCESSING_TIMEOUT_S = 540  # 9 minutes: still running
        with django_capture_on_commit_callbacks(execute=True):
            report = sweep.submission_sweep_stuck()
        assert report.requeued == [] and report.failed == [] and enqueued == []
        assert Submission.objects.get(pk=submission.pk).status == SubmissionStatus.PROCESSING

    def test_it_fails_a_stuck_submission_whose_attempts_are_used_up(
        self, fake_pipeline, enqueued, settings, django_capture_on_commit_callbacks
    ):
        submission = submit()
        _age(
            submission,
            minutes=30,
            status=SubmissionStatus.PROCESSING,
            attempts=settings.OBVERSE_PROCESSING_MAX_ATTEMPTS,
        )
        with django_capture_on_commit_callbacks(execute=True):
            report = sweep.submission_sweep_stuck()
        assert report.failed == [submission.pk] and report.requeued == [] and enqueued == []
        failed = Submission.objects.get(pk=submission.pk)
        assert failed.status == SubmissionStatus.FAILED
        assert f"stopped {settings.OBVERSE_PROCESSING_MAX_ATTEMPTS} times" in failed.error
        assert failed.processed_at is not None
        assert tasks.process_submission(str(submission.pk)) is False  # a late delivery of its task does nothing
        assert fake_pipeline.calls == 0

    def test_it_fails_a_lost_received_submission_whose_attempts_are_used_up(
        self, enqueued, settings, django_capture_on_commit_callbacks
    ):
        submission = submit()
        _age(submission, minutes=30, attempts=settings.OBVERSE_PROCESSING_MAX_ATTEMPTS)
        with django_capture_on_commit_callbacks(execute=True):
            report = sweep.submission_sweep_stuck()
        assert report.failed == [submission.pk] and enqueued == []
        assert Submission.objects.get(pk=submission.pk).status == SubmissionStatus.FAILED

    def test_it_never_touches_finished_submissions(self, enqueued, django_capture_on_commit_callbacks):
        for status in (SubmissionStatus.AWAITING_REVIEW, SubmissionStatus.FAILED, SubmissionStatus.RESOLVED):
            _age(submit(), minutes=60, status=status, attempts=3)
        with django_capture_on_commit_callbacks(execute=True):
            report = sweep.submission_sweep_stuck()
        assert report.requeued == [] and report.failed == [] and enqueued == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_queue_a_stuck_submission_once(enqueued):
    submissions = [submit(seed) for seed in range(4)]
    for submission in submissions:
        _age(submission, minutes=30, status=SubmissionStatus.PROCESSING, attempts=1)
    enqueued.clear()  # submission_create's own enqueue ran on commit
    barrier = threading.Barrier(3)
    reports = []

    def sweep_once():
        try:
            barrier.wait()
            reports.append(sweep.submission_sweep_stuck())
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep_once) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(reports) == 3
    requeued = sorted(str(pk) for report in reports for pk in report.requeued)
    assert requeued == sorted(str(s.pk) for s in submissions)  # each once, across all sweeps
    assert sorted(enqueued) == requeued


@pytest.mark.django_db(transaction=True)
def test_a_sweep_skips_a_submission_another_transaction_holds(enqueued):
    held, free = submit(1), submit(2)
    for submission in (held, free):
        _age(submission, minutes=30)
    locked, release, done = threading.Event(), threading.Event(), []

    def hold():
        try:
            with transaction.atomic():
                Submission.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    def sweep_once():
        try:
            done.append(sweep.submission_sweep_stuck())
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(timeout=10)
    sweeper = threading.Thread(target=sweep_once)
    sweeper.start()
    sweeper.join(timeout=10)
    finished = not sweeper.is_alive()  # a sweep waiting on the lock would still be running
    release.set()
    holder.join(timeout=10)
    sweeper.join(timeout=10)
    assert finished, "the sweep waited for a row another transaction holds"
    assert done[0].requeued == [free.pk]


@pytest.mark.django_db
def test_sweep_submissions_command_reports_what_it_did(enqueued, django_capture_on_commit_callbacks, capsys):
    lost = submit()
    _age(lost, minutes=10)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("sweep_submissions")
    out = capsys.readouterr().out
    assert "requeued 1, failed 0" in out and str(lost.pk) in out
    assert enqueued == [str(lost.pk)]


@pytest.mark.django_db
def test_the_sweep_is_scheduled_every_few_minutes_by_a_migration():
    schedule = Schedule.objects.get(name="obverse-sweep-submissions")
    assert schedule.func == "identification.tasks.sweep_submissions"
    assert schedule.schedule_type == Schedule.MINUTES and 1 <= schedule.minutes <= 10
    assert schedule.repeats < 0  # forever


# --- Disk full / unwritable media ---------------------------------------------------------------
