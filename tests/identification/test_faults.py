"""Faults: a full or unwritable disk is a clear error, a lost enqueue is left for the sweep, and a killed
`qcluster` and a restarted PostgreSQL lose nothing (the last two are slow and use subprocesses).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from collection import services as collection_services
from collection.importers.tabular import import_csv_file
from collection.models import Specimen, SpecimenImage
from identification import services, sweep, uploads
from identification.models import Candidate, Submission, SubmissionImage, SubmissionStatus
from tests.factories import catalogue_image, make_item, make_specimen, pattern_png, png_bytes

ROOT = Path(__file__).resolve().parents[2]


def _submit(seed: int = 42) -> Submission:
    upload = SimpleUploadedFile("coin.png", pattern_png(seed), content_type="image/png")
    return services.submission_create(files=[upload], requester_name="Ada", requester_email="ada@example.org")


class BrokenDisk:
    """FileSystemStorage on a disk that fills up (or refuses writes) after ``room`` more files.

    A full disk is simulated the way Django's FileSystemStorage._save really fails: the next file is
    created and half written, then the write raises ENOSPC, leaving the partial file behind. An
    unwritable folder raises PermissionError before anything is written. (Tests run as root, for whom
    chmod does not stop writes, so the storage raising stands in for a read-only folder.)
    """

    def __init__(self, monkeypatch, *, room: int = 0, error: int = errno.ENOSPC) -> None:
        self.room, self.error, self.partial = room, error, []
        original = FileSystemStorage._save

        def _save(storage, name, content):
            if self.room > 0:
                self.room -= 1
                return original(storage, name, content)
            full_path = Path(storage.path(name))
            if self.error == errno.EACCES:
                raise PermissionError(errno.EACCES, "Permission denied", str(full_path))
            full_path.parent.mkdir(parents=True, exist_ok=True)
            content.seek(0)
            data = content.read()
            full_path.write_bytes(data[: max(1, len(data) // 2)])
            self.partial.append(full_path)
            raise OSError(errno.ENOSPC, "No space left on device", str(full_path))

        monkeypatch.setattr(FileSystemStorage, "_save", _save)


def _files_under(*folders) -> list[str]:
    return [os.path.join(root, name) for folder in folders for root, _, names in os.walk(folder) for name in names]


def _nothing_stored(settings) -> None:
    assert Submission.objects.count() == 0 and SubmissionImage.objects.count() == 0
    assert _files_under(settings.OBVERSE_PRIVATE_UPLOADS, settings.MEDIA_ROOT) == []


def _photos(n: int = 2) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(f"coin{i}.png", pattern_png(i), content_type="image/png") for i in range(n)]


@pytest.mark.django_db
class TestSubmissionCreateOnABrokenDisk:
    def test_a_full_disk_on_the_second_photo_stores_nothing(self, monkeypatch, settings):
        disk = BrokenDisk(monkeypatch, room=1)  # the first photo fits, the second is cut off half-way
        with pytest.raises(services.StorageUnavailable) as raised:
            services.submission_create(files=_photos(2), requester_name="Ada", requester_email="ada@example.org")
        assert raised.value.status == 507 and "no room" in raised.value.message
        assert len(disk.partial) == 1 and not disk.partial[0].exists()  # the half-written file is gone
        _nothing_stored(settings)

    def test_an_unwritable_uploads_folder_is_a_503(self, monkeypatch, settings):
        BrokenDisk(monkeypatch, error=errno.EACCES)
        with pytest.raises(services.StorageUnavailable) as raised:
            services.submission_create(files=_photos(1), requester_name="Ada", requester_email="ada@example.org")
        assert raised.value.status == 503 and "cannot store photos" in raised.value.message
        _nothing_stored(settings)

    def test_the_form_shows_the_reason_instead_of_an_error_page(self, client, monkeypatch, settings):
        BrokenDisk(monkeypatch)
        photo, _ = _photos(2)
        data = {"photo_1": photo, "side_1": "obverse", "requester_name": "Ada", "requester_email": "ada@example.org"}
        response = client.post(reverse("identification:identify"), data)
        assert response.status_code == 507
        assert "no room to store photos" in response.content.decode()
        assert 'name="photo_1"' in response.content.decode()  # the form again, to retry
        _nothing_stored(settings)

    def test_an_example_photo_on_a_full_disk_redirects_with_the_reason(self, client, monkeypatch, settings, tmp_path):
        settings.OBVERSE_DEMO_DIR = str(tmp_path / "demo")
        (tmp_path / "demo" / "examples").mkdir(parents=True)
        (tmp_path / "demo" / "examples" / "coin-1.png").write_bytes(pattern_png(1))
        (tmp_path / "demo" / "examples" / "examples.json").write_text('[{"file": "coin-1.png", "label": "A coin"}]')
        BrokenDisk(monkeypatch)
        response = client.post(reverse("identification:identify_example", kwargs={"key": "coin-1"}), follow=True)
        assert response.status_code == 200
        assert "no room to store photos" in response.content.decode()
        _nothing_stored(settings)

    @pytest.mark.parametrize(("error", "status"), [(errno.ENOSPC, 507), (errno.EACCES, 503)])
    def test_the_api_answers_json_with_the_reason(self, client, monkeypatch, settings, error, status):
        BrokenDisk(monkeypatch, error=error)
        data = {"images": _photos(1), "requester_name": "Ada", "requester_email": "ada@example.org"}
        response = client.post("/api/v1/submissions/", data)
        assert response.status_code == status
        assert response["Content-Type"].startswith("application/json")
        assert "store photos" in response.json()["errors"]["non_field_errors"][0]
        _nothing_stored(settings)


@pytest.mark.django_db(transaction=True)
def test_a_failed_enqueue_after_commit_keeps_the_submission_for_the_sweep(monkeypatch, settings):
    def lost(submission_id):
        raise OperationalError("server closed the connection unexpectedly")  # PostgreSQL restarting

    monkeypatch.setattr(services, "submission_enqueue", lost)
    submission = services.submission_create(files=_photos(1), requester_name="Ada", requester_email="ada@example.org")
    kept = Submission.objects.get(pk=submission.pk)
    assert kept.status == SubmissionStatus.RECEIVED
    assert uploads.private_uploads().exists(kept.images.get().upload_path)  # its photo was not deleted
    Submission.objects.filter(pk=submission.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    queued = []
    monkeypatch.setattr(services, "submission_enqueue", lambda submission_id: queued.append(submission_id))
    assert sweep.submission_sweep_stuck().requeued == [submission.pk]
    assert queued == [submission.pk]


@pytest.mark.django_db
class TestImageImportOnABrokenDisk:
    def test_attaching_an_image_to_a_full_disk_leaves_no_row_and_no_partial_file(self, monkeypatch, settings, tmp_path):
        specimen = make_specimen(make_item())
        source = tmp_path / "coin.png"
        source.write_bytes(png_bytes())
        disk = BrokenDisk(monkeypatch, room=1)  # the image fits, its thumbnail is cut off
        with pytest.raises(OSError):
            collection_services.specimen_image_attach(specimen=specimen, side="obverse", path=source)
        assert len(disk.partial) == 1 and not disk.partial[0].exists()
        assert SpecimenImage.objects.count() == 0
        assert _files_under(settings.MEDIA_ROOT) == []

    def test_a_csv_import_reports_the_full_disk_and_keeps_nothing(self, monkeypatch, settings, tmp_path):
        (tmp_path / "img").mkdir()
        (tmp_path / "img" / "1.obv.png").write_bytes(png_bytes())
        (tmp_path / "coins.csv").write_text("record_id,title,obverse_image\nMUS.1,Denarius,img/1.obv.png\n")
        BrokenDisk(monkeypatch)
        result = import_csv_file(tmp_path / "coins.csv")
        assert [key for key, _ in result.failed] and "No space left on device" in result.failed[0][1]
        assert "cannot store the image" in result.failed[0][1]
        assert Specimen.objects.count() == 0 and SpecimenImage.objects.count() == 0
        assert _files_under(settings.MEDIA_ROOT) == []


# --- A real qcluster killed mid-processing (slow) -------------------------------------------------

# A `manage.py qcluster` with the test settings, made real (sync off) and quick: short timeout and
# retry, one worker, no scheduler (the sweep has its own tests). The pipeline is the fake one,
# hanging at BLOCK_AT when set (the worker is killed there), or slowed by STEP_DELAY seconds per step.
CLUSTER = """
import os, sys, time
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings_test"
import config.settings_test as test_settings
test_settings.Q_CLUSTER = {
    **test_settings.Q_CLUSTER, "sync": False, "workers": 1, "timeout": 8, "retry": 10, "poll": 0.2,
    "scheduler": False, "catch_up": False,
}
test_settings.DATABASES["default"]["CONN_MAX_AGE"] = 60  # as deployed: kept connections, health-checked
import django
django.setup()
from identification import pipeline_cache
from tests.fakes import FakePipeline, fake_get_pipeline

class Pipeline(FakePipeline):
    def process(self, source, *, on_step=None, **kwargs):
        def step(name):
            on_step and on_step(name)
            time.sleep(float(os.environ.get("STEP_DELAY") or 0))
        return super().process(source, on_step=step, **kwargs)

pipeline_cache.get_pipeline = fake_get_pipeline(Pipeline(block_at=os.environ.get("BLOCK_AT") or None))
from django.core.management import call_command
call_command(*sys.argv[1:])
"""


def _start(args: list[str], *, env: dict, log: Path) -> subprocess.Popen:
    """A subprocess in its own process group (a cluster forks workers; all of them must die together)."""
    return subprocess.Popen(
        [sys.executable, "-c", CLUSTER, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _wait_for(predicate, *, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_qcluster_finishes_the_submission_exactly_once_after_restart(
    fake_pipeline, monkeypatch, settings, tmp_path, test_database_url
):
    from django_q.conf import Conf
    from django_q.models import Task

    catalogue_image(make_item(), seed=42, pipeline=fake_pipeline)
    catalogue_image(make_item(), seed=44, pipeline=fake_pipeline)
    monkeypatch.setattr(Conf, "SYNC", False)  # a real enqueue into the ORM broker, as the web does
    env = {
        "DATABASE_URL": test_database_url,
        "OBVERSE_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "OBVERSE_PRIVATE_UPLOADS": str(settings.OBVERSE_PRIVATE_UPLOADS),
        "OBVERSE_PROCESSING_TIMEOUT_S": "5",  # below the queue's retry (10 s): the redelivery may take over
    }
    log = tmp_path / "cluster.log"
    started = time.monotonic()
    first = _start(["qcluster"], env={**env, "BLOCK_AT": "classifying"}, log=log)
    try:
        submission = _submit()
        assert OrmQ.objects.count() == 1  # enqueued on commit, not run inline
        _wait_for(
            lambda: Submission.objects.get(pk=submission.pk).step == "classifying",
            timeout=60,
            what="the worker to reach the blocking step",
            log=log,
        )
    finally:
        _kill(first)  # SIGKILL the whole cluster: sentinel, pusher, monitor and worker
    stuck = Submission.objects.get(pk=submission.pk)
    assert stuck.status == SubmissionStatus.PROCESSING and stuck.attempts == 1
    assert OrmQ.objects.count() == 1  # the task was taken but never acknowledged

    second = _start(["qcluster"], env=env, log=log)
    try:
        _wait_for(
            lambda: Submission.objects.get(pk=submission.pk).status != SubmissionStatus.PROCESSING,
            timeout=60,
            what="the restarted cluster to finish the submission",
            log=log,
        )
        _wait_for(lambda: not OrmQ.objects.exists(), timeout=20, what="the task to be acknowledged", log=log)
        time.sleep(1)  # a duplicate delivery, if any, would show now
    finally:
        _kill(second)
    elapsed = time.monotonic() - started
    done = Submission.objects.get(pk=submission.pk)
    assert done.status == SubmissionStatus.AWAITING_REVIEW, (done.status, done.error)
    assert done.attempts == 2  # the killed run and the one that finished
    assert SubmissionImage.objects.filter(submission=done).count() == 1
    assert Candidate.objects.filter(submission=done).count() == 2
    assert sorted(os.listdir(Path(settings.MEDIA_ROOT) / "submissions" / str(done.pk))) == [
        "0-cutout.png",
        "0-original.jpg",
        "0-upright.jpg",
    ]
    runs = Task.objects.filter(func="identification.tasks.process_submission")
    assert [(run.success, run.result) for run in runs] == [(True, True)]  # finished once, recorded once
    print(f"killed-qcluster test: {elapsed:.1f} s")


# --- PostgreSQL restarted under a running web server and worker (slow) ----------------------------


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    for key, (filename, data) in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{filename}"\r\n'
        parts.append(head.encode() + b"Content-Type: image/png\r\n\r\n" + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, never a proxy


def _http_submit(base: str, seed: int) -> tuple[int, dict]:
    body, content_type = _multipart(
        {"requester_name": "Ada", "requester_email": f"ada{seed}@example.org"},
        {"images": (f"{seed}.png", pattern_png(seed))},
    )
    request = urllib.request.Request(f"{base}/api/v1/submissions/", data=body, headers={"Content-Type": content_type})
    try:
        with LOCAL.open(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {"body": exc.read()[:500].decode(errors="replace")}


def _http_status(base: str, pk: str) -> int:
    """The status of a submission's API page; 0 while nothing listens yet."""
    try:
        with LOCAL.open(f"{base}/api/v1/submissions/{pk}/", timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:
        return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def throwaway_postgres(monkeypatch):
    """A PostgreSQL cluster of its own in a temporary folder (never the shared one in var/pgdata)."""
    from config import embedded_db

    pgdata = Path(tempfile.mkdtemp(prefix="obverse-faults-pg-"))
    monkeypatch.setenv("OBVERSE_PGDATA", str(pgdata))
    assert embedded_db.pgdata_dir() == pgdata.resolve()
    try:
        yield embedded_db
    finally:
        assert embedded_db.pgdata_dir() == pgdata.resolve()  # stop only our own server
        embedded_db.stop()
        shutil.rmtree(pgdata, ignore_errors=True)


@pytest.mark.slow
def test_web_and_worker_reconnect_after_a_postgresql_restart_and_lose_nothing(throwaway_postgres, tmp_path):
    import psycopg

    started = time.monotonic()
    url = throwaway_postgres.start("obverse_faults")
    env = {
        "DATABASE_URL": url,
        "OBVERSE_MEDIA_ROOT": str(tmp_path / "media"),
        "OBVERSE_PRIVATE_UPLOADS": str(tmp_path / "uploads"),
        "OBVERSE_PROCESSING_TIMEOUT_S": "5",  # below the cluster's retry (10 s)
        "STEP_DELAY": "0.3",  # about 2 s per submission, so the restart meets one mid-processing
    }
    log = tmp_path / "servers.log"
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, **env, "DJANGO_SETTINGS_MODULE": "config.settings_test"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]

    def rows() -> dict[str, tuple[str, int]]:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return {
                str(pk): (status, attempts)
                for pk, status, attempts in conn.execute("SELECT id, status, attempts FROM identification_submission")
            }

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    # One thread, so the web process keeps one connection across requests (CONN_MAX_AGE) and has to
    # notice that the restart broke it (CONN_HEALTH_CHECKS).
    web = _start(["runserver", f"127.0.0.1:{port}", "--noreload", "--nothreading"], env=env, log=log)
    worker = _start(["qcluster"], env=env, log=log)
    try:
        _wait_for(lambda: _http_status(base, uuid.uuid4().hex) == 404, timeout=60, what="the web server", log=log)
        before = [_http_submit(base, seed) for seed in (1, 2)]
        assert [status for status, _ in before] == [201, 201], before
        ids = [body["id"] for _, body in before]
        _wait_for(
            lambda: rows()[ids[0]][0] == SubmissionStatus.PROCESSING, timeout=30, what="processing to start", log=log
        )

        down = time.monotonic()
        assert throwaway_postgres.stop()
        throwaway_postgres.start("obverse_faults")
        downtime = time.monotonic() - down

        after = [_http_submit(base, seed) for seed in (3, 4)]  # the very first request after the restart too
        assert [status for status, _ in after] == [201, 201], after
        ids += [body["id"] for _, body in after]
        assert _http_status(base, ids[0]) == 200

        def all_done() -> bool:
            states = rows()
            return all(states[pk][0] not in (SubmissionStatus.RECEIVED, SubmissionStatus.PROCESSING) for pk in ids)

        _wait_for(all_done, timeout=60, what="every submission to finish", log=log)

        def queued() -> int:
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT count(*) FROM django_q_ormq").fetchone()[0]

        # The last task is acknowledged just after its submission is saved; a failed attempt's task
        # stays until the queue's retry hands it out again (and its claim then finds nothing to do).
        _wait_for(lambda: queued() == 0, timeout=30, what="the queue to drain", log=log)
        with psycopg.connect(url) as conn:
            images = dict(
                conn.execute("SELECT submission_id::text, count(*) FROM identification_submissionimage GROUP BY 1")
            )
    finally:
        _kill(web)
        _kill(worker)
    states = rows()
    assert sorted(states) == sorted(ids)  # none lost, none extra
    assert {pk: states[pk][0] for pk in ids} == dict.fromkeys(ids, SubmissionStatus.AWAITING_REVIEW)
    assert all(1 <= states[pk][1] <= 3 for pk in ids)
    assert images == dict.fromkeys(ids, 1)
    print(
        f"postgres-restart test: {time.monotonic() - started:.1f} s, PostgreSQL down {downtime:.1f} s, "
        f"attempts {[states[pk][1] for pk in ids]}"
    )
