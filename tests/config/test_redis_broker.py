"""The worker path through a real Redis: visitors' photos and bulk work, each on its own cluster.

A redis-server on a free loopback port, two worker clusters started as ``make run`` starts them
(``qcluster``, and ``qcluster`` with ``Q_CLUSTER_NAME=bulk``), sharing only this test's database,
Redis and the media folder; the fake pipeline keeps it fast. Skipped without redis-server, except
in CI (``make test`` installs Debian's as root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django_q.models import Task

from config import redis_server
from identification.models import BackgroundJob, JobStatus, Submission, SubmissionStatus
from tests.factories import catalogue_image, make_item, unindexed_catalogue_images

ROOT = Path(__file__).resolve().parents[2]
ENQUEUE = """
import sys
import django
django.setup()
from django.core.files.uploadedfile import SimpleUploadedFile
from identification import jobs, services
from tests.factories import pattern_png
upload = SimpleUploadedFile("coin.png", pattern_png(42), content_type="image/png")
submission = services.submission_create(files=[upload], requester_name="Ada", requester_email="ada@example.org")
job = jobs.index_job_start(image_ids=[int(i) for i in sys.argv[1].split(",")])
print(submission.pk, job.pk)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, what: str, processes, timeout: float = 240.0) -> None:
    """Until ``predicate()``; fails naming ``what`` when a worker exits or the (generous) timeout passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for process in processes:
            assert process.poll() is None, f"a worker exited while waiting for {what}"
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_photos_and_bulk_work_go_through_redis_on_their_own_clusters(
    tmp_path, settings, fake_pipeline, test_database_url
):
    if not shutil.which("redis-server"):
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing in CI: `make test` installs it (make redis)")
        pytest.skip("redis-server is not installed (make redis)")
    catalogue_image(make_item(), seed=42, pipeline=fake_pipeline)  # something to find
    bulk_ids = unindexed_catalogue_images(3)
    url = f"redis://127.0.0.1:{_free_port()}/0"
    broker = redis_server.start(url, tmp_path / "redis")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": test_database_url,
        "OBVERSE_BROKER": "redis",
        "OBVERSE_REDIS_URL": url,
        "OBVERSE_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "OBVERSE_PRIVATE_UPLOADS": str(settings.OBVERSE_PRIVATE_UPLOADS),
        "OBVERSE_INDEX_CHUNK": "2",
        "OBVERSE_WORKERS": "1",
    }
    manage = [sys.executable, "-m", "tests.bench.stress_fake_manage"]
    logs = [(tmp_path / f"{name}.log").open("w+") for name in ("photos", "bulk")]
    workers = [
        subprocess.Popen([*manage, "qcluster"], cwd=ROOT, env=env, stdout=logs[0], stderr=subprocess.STDOUT),
        subprocess.Popen(
            [*manage, "qcluster"],
            cwd=ROOT,
            env={**env, "Q_CLUSTER_NAME": "bulk"},
            stdout=logs[1],
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        queued = subprocess.run(
            [sys.executable, "-c", ENQUEUE, ",".join(map(str, bulk_ids))],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        submission_id, job_id = queued.stdout.split()
        _wait(
            lambda: Submission.objects.get(pk=submission_id).status == SubmissionStatus.AWAITING_REVIEW,
            "the photo's processing",
            workers,
        )
        _wait(lambda: BackgroundJob.objects.get(pk=job_id).status == JobStatus.DONE, "the indexing job", workers)
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        broker.terminate()
        broker.wait(timeout=30)
    assert Submission.objects.get(pk=submission_id).candidates.exists()
    job = BackgroundJob.objects.get(pk=job_id)
    assert (job.done, job.failed, job.chunks.filter(finished=True).count()) == (3, 0, 2)
    # Each kind of work ran on its own cluster, and never through the database's queue table.
    clusters = dict(Task.objects.values_list("func", "cluster"))
    assert clusters == {
        "identification.tasks.process_submission": "obverse",
        "identification.tasks.index_chunk": "bulk",
    }
