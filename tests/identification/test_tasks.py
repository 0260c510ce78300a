"""identification.tasks, and the crash rerun: a worker process killed mid-submission."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from identification import services, tasks
from identification.models import BackgroundJob, Candidate, Submission, SubmissionImage, SubmissionStatus
from tests.factories import catalogue_image, make_item, pattern_png

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings_test"
import django
django.setup()
from identification import tasks
from tests.fakes import install_in_process
install_in_process(block_at=os.environ["BLOCK_AT"])
tasks.process_submission(sys.argv[1])
"""


def _submit() -> Submission:
    upload = SimpleUploadedFile("coin.png", pattern_png(42), content_type="image/png")
    return services.submission_create(files=[upload], requester_name="Ada", requester_email="ada@example.org")


@pytest.mark.django_db
def test_process_submission_task_runs_the_service(fake_pipeline):
    catalogue_image(make_item(), seed=42, pipeline=fake_pipeline)
    submission = _submit()
    assert tasks.process_submission(str(submission.pk)) is True
    assert Submission.objects.get(pk=submission.pk).status == SubmissionStatus.AWAITING_REVIEW
    assert tasks.process_submission(str(submission.pk)) is False  # already done: nothing happens


@pytest.mark.django_db
def test_index_chunk_task_counts_indexed_images(fake_pipeline, django_capture_on_commit_callbacks):
    from identification.models import IndexChunk

    image = catalogue_image(make_item(), seed=43, pipeline=fake_pipeline)
    job = BackgroundJob.objects.create(kind="index", total=2)
    chunk = IndexChunk.objects.create(job=job, image_ids=[image.pk, 999999])
    with django_capture_on_commit_callbacks(execute=True):  # as the worker commits at once
        assert tasks.index_chunk(chunk.pk) == 1
    job.refresh_from_db()
    assert (job.status, job.done, job.failed) == ("done", 1, 1)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_submission_is_completed_exactly_once_by_a_rerun(
    fake_pipeline, monkeypatch, tmp_path, test_database_url
):
    monkeypatch.setattr(services, "submission_enqueue", lambda submission_id: None)  # the worker below takes it
    catalogue_image(make_item(), seed=42, pipeline=fake_pipeline)
    catalogue_image(make_item(), seed=44, pipeline=fake_pipeline)
    submission = _submit()
    assert Submission.objects.get(pk=submission.pk).status == SubmissionStatus.RECEIVED
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url,
        "OBVERSE_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "OBVERSE_PRIVATE_UPLOADS": str(settings.OBVERSE_PRIVATE_UPLOADS),
        "BLOCK_AT": "classifying",
    }
    log = (tmp_path / "worker.log").open("w+")
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(submission.pk)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while Submission.objects.get(pk=submission.pk).step != "classifying":
            assert worker.poll() is None, (
                f"worker exited early: {Submission.objects.get(pk=submission.pk).status} {log.seek(0) or log.read()}"
            )
            assert time.monotonic() < deadline, "the worker never reached the step"
            time.sleep(0.1)
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    stuck = Submission.objects.get(pk=submission.pk)
    assert stuck.status == SubmissionStatus.PROCESSING and stuck.attempts == 1

    # Too early, the claim is still considered alive: a duplicate delivery does nothing.
    assert tasks.process_submission(str(submission.pk)) is False
    # Once the claim is older than the processing timeout, the queue's retry completes it.
    Submission.objects.filter(pk=submission.pk).update(processing_started_at=timezone.now() - timedelta(hours=1))
    assert tasks.process_submission(str(submission.pk)) is True
    done = Submission.objects.get(pk=submission.pk)
    assert done.status == SubmissionStatus.AWAITING_REVIEW and done.attempts == 2
    assert SubmissionImage.objects.filter(submission=done).count() == 1
    assert Candidate.objects.filter(submission=done).count() == 2
    assert tasks.process_submission(str(submission.pk)) is False
    assert Candidate.objects.filter(submission=done).count() == 2


@pytest.mark.django_db
def test_sweep_submissions_task_requeues_a_lost_submission(monkeypatch, django_capture_on_commit_callbacks):
    queued = []
    monkeypatch.setattr(services, "submission_enqueue", lambda submission_id: queued.append(submission_id))
    lost = _submit()
    Submission.objects.filter(pk=lost.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.sweep_submissions() == "requeued 1, failed 0; indexing chunks queued again 0"
    assert queued == [lost.pk]
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.sweep_submissions().startswith("requeued 0, failed 0")  # its clock restarted: not queued twice
