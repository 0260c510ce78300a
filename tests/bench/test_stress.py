"""The stress run: its parts (requests, memory sampling, the throw-away setup) and one small real run."""

from __future__ import annotations

import email
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from bench import stress
from config import embedded_db


class _Recorder(BaseHTTPRequestHandler):
    """A stand-in API: records each POST, answers 201 with an id (or the status the test asks for)."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        server = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with server.lock:
            server.active += 1
            server.peak = max(server.peak, server.active)
            server.bodies.append((self.headers["Content-Type"], body))
        time.sleep(server.delay_s)
        with server.lock:
            server.active -= 1
        payload = json.dumps({"id": str(uuid.uuid4())}).encode()
        self.send_response(server.status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    server = ThreadingHTTPServer((stress.HOST, 0), _Recorder)
    server.lock, server.active, server.peak, server.bodies = threading.Lock(), 0, 0, []
    server.delay_s, server.status = 0.3, 201
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _parts(content_type: str, body: bytes) -> dict[str, email.message.Message]:
    message = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {part.get_param("name", header="content-disposition"): part for part in message.get_payload()}


class TestMultipart:
    def test_it_encodes_fields_and_the_photo_so_a_parser_reads_them_back(self):
        body, content_type = stress.multipart({"requester_name": "Ada"}, [("images", "a.jpg", b"\xff\xd8jpeg\r\n")])
        parts = _parts(content_type, body)
        assert parts["requester_name"].get_payload() == "Ada"
        assert parts["images"].get_filename() == "a.jpg"
        assert parts["images"].get_payload(decode=True) == b"\xff\xd8jpeg\r\n"


class TestClientsRun:
    def test_it_sends_every_submission_from_concurrent_clients(self, recorder):
        uploads = stress.clients_run(port=recorder.server_port, photos=[b"p1", b"p2"], submissions=7, clients=3)
        assert len(uploads) == len(recorder.bodies) == 7
        assert all(upload.status == 201 and upload.submission_id for upload in uploads)
        emails = {_parts(ct, body)["requester_email"].get_payload() for ct, body in recorder.bodies}
        assert len(emails) == 3
        assert recorder.peak >= 2  # the clients really overlap
        assert min(upload.ms for upload in uploads) >= recorder.delay_s * 1000 * 0.9

    def test_it_records_a_refusal_without_an_id(self, recorder):
        recorder.status = 429
        uploads = stress.clients_run(port=recorder.server_port, photos=[b"p"], submissions=2, clients=2)
        assert [upload.status for upload in uploads] == [429, 429]
        assert not any(upload.submission_id for upload in uploads)

    def test_it_reports_a_refused_connection_as_status_zero(self):
        with stress.socket.socket() as sock:
            sock.bind((stress.HOST, 0))
            port = sock.getsockname()[1]  # bound but not listening: the connection is refused
            upload = stress.submission_post(port=port, photo=b"p", client=0, number=0, timeout_s=5)
        assert upload.status == 0
        assert upload.submission_id is None
        assert upload.error


class TestMemorySampler:
    CHILD = (
        "import subprocess, sys; subprocess.run([sys.executable, '-c', "
        '\'import time; b = bytearray(b"x") * (80 * 2**20); print("ready", flush=True); time.sleep(30)\'])'
    )

    def test_it_sums_the_whole_process_tree(self):
        root = subprocess.Popen([sys.executable, "-c", self.CHILD], stdout=subprocess.PIPE, start_new_session=True)
        try:
            assert root.stdout.readline().strip() == b"ready"
            sampler = stress.MemorySampler(root.pid)
            sampler.sample()
        finally:
            stress.process_group_stop(root, stress.signal.SIGKILL, wait_s=10)
        assert sampler.peak_processes == 2
        assert sampler.peak_tree_mb > 80
        assert sampler.peak_process_mb > 80

    def test_it_reads_nothing_for_a_process_that_has_gone(self):
        done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        pid = int(done.stdout)
        assert stress.proc_status_kb(pid) == {}
        assert stress.process_tree(pid) == []


class TestSetup:
    def test_it_finds_the_models_folder_as_the_settings_do(self, tmp_path, monkeypatch):
        monkeypatch.delenv("OBVERSE_MODELS_DIR", raising=False)
        monkeypatch.setenv("OBVERSE_VAR_DIR", str(tmp_path))
        assert stress.models_source() == tmp_path / "models"
        monkeypatch.setenv("OBVERSE_MODELS_DIR", str(tmp_path / "elsewhere"))
        assert stress.models_source() == tmp_path / "elsewhere"

    def test_the_children_use_only_the_throwaway_database_and_folders(self, tmp_path, monkeypatch):
        monkeypatch.setenv("DATABASE_URL", "postgresql://museum/production")
        monkeypatch.setenv("OBVERSE_MEDIA_ROOT", "/srv/museum/media")
        env = stress.child_env(work=tmp_path, database_url="postgresql://x/obverse_stress_1", workers=3)
        assert env["DATABASE_URL"] == "postgresql://x/obverse_stress_1"
        assert env["DJANGO_SETTINGS_MODULE"] == "config.settings"
        for name in ("OBVERSE_VAR_DIR", "OBVERSE_MEDIA_ROOT", "OBVERSE_PRIVATE_UPLOADS", "OBVERSE_MODELS_DIR"):
            assert env[name].startswith(str(tmp_path))
        assert env["OBVERSE_WORKERS"] == "3"
        assert int(env["OBVERSE_ANON_SUBMISSIONS_PER_HOUR"]) >= 10**6
        assert int(env["OBVERSE_API_ANON_RATE"].split("/")[0]) >= 10**6


@pytest.mark.slow
class TestStressRun:
    """A small real run: gunicorn, a qcluster worker (fake pipeline, for speed) and the embedded database."""

    def test_it_loses_nothing_reports_every_figure_and_leaves_nothing_behind(self, tmp_path, monkeypatch):
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        result = stress.stress_run(
            submissions=10,
            clients=3,
            workers=1,
            web_workers=2,
            types=1,
            examples=2,
            drain_timeout_s=120,
            manage_cmd=[sys.executable, "-m", "tests.bench.stress_fake_manage"],
            log=lambda line: None,
        )
        assert result["accepted"] == 10
        assert result["drained"] is True
        assert result["lost"] == 0
        assert result["processed"] + result["failed"] == 10
        assert result["duplicate_candidates"] == 0
        assert result["queue_left"] == 0
        assert 0 < result["upload_ms_p50"] <= result["upload_ms_p95"] <= result["upload_ms_max"]
        assert result["throughput_per_min"] > 0
        assert result["peak_worker_rss_mb"] > 0
        assert result["peak_worker_process_hwm_mb"] > 0
        assert result["worker_processes"] >= 2  # qcluster's sentinel and at least one worker
        assert list(tmp_path.glob("obverse-stress-*")) == []  # its temporary folder was removed
        with psycopg.connect(embedded_db.database_url("postgres")) as conn:
            left = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"obverse_stress_{stress.os.getpid()}_%",)
            ).fetchall()
        assert left == []

    def test_a_run_stopped_with_sigterm_drops_its_database_and_folder(self, tmp_path):
        run = subprocess.Popen(
            [sys.executable, "-m", "bench.stress", "--submissions", "1", "--clients", "1", "--types", "1",
             "--examples", "1", "--out", str(tmp_path / "stress.json")],
            cwd=stress.BASE_DIR,
            env={**stress.os.environ, "TMPDIR": str(tmp_path)},
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            line = run.stderr.readline()  # printed once the database and folder exist
            assert "throw-away database" in line, line
            db_name = line.split("database ")[1].split(",")[0]
            assert list(tmp_path.glob("obverse-stress-*"))
            run.send_signal(stress.signal.SIGTERM)
            assert run.wait(timeout=90) == 128 + stress.signal.SIGTERM
        finally:
            if run.poll() is None:
                run.kill()
        assert list(tmp_path.glob("obverse-stress-*")) == []
        assert not (tmp_path / "stress.json").exists()
        with psycopg.connect(embedded_db.database_url("postgres")) as conn:
            left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db_name,)).fetchall()
        assert left == []
