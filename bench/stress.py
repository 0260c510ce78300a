"""`make stress`: many anonymous submissions against a local gunicorn + django-q2 worker, then the figures.

What runs is the deployed shape on one machine: gunicorn (sync workers) serving the API on
127.0.0.1, ``manage.py qcluster`` processing with the real pipeline (mlcore), PostgreSQL with
pgvector. The user's data is never touched: everything lives in a throw-away database on the
embedded server and a temporary folder (media, private uploads, a models folder linking the
pretrained files, a small synthetic demo catalogue indexed before the run), all removed afterwards.

Each client posts its share of the submissions one after another through ``POST
/api/v1/submissions/`` (anonymous, so rate limits are raised for the run through the environment);
when all are sent, the run waits for the queue to drain and reads the outcome from the database.
``lost`` counts submissions the API accepted that are neither ready for review nor failed with a
reason after the drain: it must be 0.

This is a process orchestrator, not a Django command: every child needs the throw-away database in
its environment before Django reads its settings, so this module never imports Django itself.
Run: ``python -m bench.stress [--submissions 200] [--clients 20] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import psycopg

from config import embedded_db, throwaway_db
from config.stopping import SigtermExit
from mlcore.modelfiles import link_pretrained

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_OUT = BASE_DIR / "var" / "bench" / "stress.json"
HOST = "127.0.0.1"  # every request of the run goes here, nowhere else
SUBMIT_PATH = "/api/v1/submissions/"
READY_STATUSES = ("awaiting_review", "in_review", "proposed", "resolved", "needs_expert")
PENDING_STATUSES = ("received", "processing")


@dataclass
class Upload:
    """One client request: the HTTP status, how long the response took, and the submission id if accepted."""

    status: int
    ms: float
    submission_id: str | None = None
    error: str = ""


@dataclass
class MemorySampler:
    """Samples the resident memory of a process tree from /proc until stopped (a background thread).

    ``peak_tree_mb`` is the largest sum of VmRSS over the tree seen at one moment; ``peak_process_mb``
    the largest VmHWM (the kernel's own high-water mark) of any single process in it.
    """

    root_pid: int
    interval_s: float = 0.25
    peak_tree_mb: float = 0.0
    peak_process_mb: float = 0.0
    peak_processes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, name="stress-memory", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def sample(self) -> None:
        pids = process_tree(self.root_pid)
        total = 0.0
        for pid in pids:
            status = proc_status_kb(pid)
            total += status.get("VmRSS", 0) / 1024
            self.peak_process_mb = max(self.peak_process_mb, status.get("VmHWM", 0) / 1024)
        self.peak_tree_mb = max(self.peak_tree_mb, total)
        self.peak_processes = max(self.peak_processes, len(pids))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)


def process_tree(root_pid: int) -> list[int]:
    """The root process and all its descendants (empty when the root is gone)."""
    try:
        root = psutil.Process(root_pid)
        return [root_pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return []


def proc_status_kb(pid: int) -> dict[str, int]:
    """The ``Vm*`` lines of /proc/<pid>/status in kB (empty when the process has gone)."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Vm"):
                    key, _, rest = line.partition(":")
                    parts = rest.split()
                    if parts and parts[0].isdigit():
                        values[key] = int(parts[0])
    except OSError:
        pass
    return values


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type; files are (field, filename, JPEG bytes)."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        )
        chunks.extend([head.encode(), data, b"\r\n"])
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def submission_post(*, port: int, photo: bytes, client: int, number: int, timeout_s: float = 120) -> Upload:
    """POST one anonymous submission to the local server and time the response."""
    body, content_type = multipart(
        {"requester_name": f"Stress client {client}", "requester_email": f"stress-{client}@example.org"},
        [("images", f"stress-{client}-{number}.jpg", photo)],
    )
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    started = time.monotonic()
    try:
        connection.request("POST", SUBMIT_PATH, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        payload = response.read()
        ms = (time.monotonic() - started) * 1000
    except (OSError, http.client.HTTPException) as exc:
        return Upload(status=0, ms=(time.monotonic() - started) * 1000, error=exc.__class__.__name__)
    finally:
        connection.close()
    if response.status != 201:
        return Upload(status=response.status, ms=ms, error=payload[:200].decode("utf-8", "replace"))
    return Upload(status=201, ms=ms, submission_id=json.loads(payload)["id"])


def clients_run(*, port: int, photos: list[bytes], submissions: int, clients: int) -> list[Upload]:
    """``clients`` concurrent clients, each posting its share of ``submissions`` one after another."""
    shares = [submissions // clients + (1 if i < submissions % clients else 0) for i in range(clients)]

    def client(index: int) -> list[Upload]:
        return [
            submission_post(port=port, photo=photos[(index + k * clients) % len(photos)], client=index, number=k)
            for k in range(shares[index])
        ]

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return [upload for uploads in pool.map(client, range(clients)) for upload in uploads]


# --- The throw-away installation ----------------------------------------------------------------


def models_source() -> Path:
    """The installation's models folder, found as the settings would (read only: files are linked)."""
    var_dir = Path(os.environ.get("OBVERSE_VAR_DIR") or BASE_DIR / "var")
    return Path(os.environ.get("OBVERSE_MODELS_DIR") or var_dir / "models")


def child_env(*, work: Path, database_url: str, workers: int) -> dict[str, str]:
    """The environment of every child: the throw-away database and folders, limits raised for the run."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": database_url,
            "OBVERSE_ENV": "production",  # measure what is deployed (DEBUG off)
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
            "DJANGO_SECURE_SSL_REDIRECT": "0",  # plain HTTP on the loopback
            "DJANGO_ALLOWED_HOSTS": HOST,
            "OBVERSE_VAR_DIR": str(work),
            "OBVERSE_MEDIA_ROOT": str(work / "media"),
            "OBVERSE_PRIVATE_UPLOADS": str(work / "uploads"),
            "OBVERSE_MODELS_DIR": str(work / "models"),
            "OBVERSE_DEMO_DIR": str(work / "demo"),
            "OBVERSE_INDEX_ON_IMPORT": "0",  # indexed synchronously before the run instead
            "OBVERSE_WORKERS": str(workers),
            "OBVERSE_Q_SYNC": "0",
            "OBVERSE_ANON_SUBMISSIONS_PER_HOUR": str(10**9),
            "OBVERSE_API_ANON_RATE": "1000000/hour",
            "LOG_LEVEL": "WARNING",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def manage(args: list[str], *, manage_cmd: list[str], env: dict[str, str], log: Path, timeout_s: float) -> None:
    with log.open("ab") as out:
        code = subprocess.run(
            [*manage_cmd, *args], cwd=BASE_DIR, env=env, stdout=out, stderr=out, timeout=timeout_s
        ).returncode
    if code != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} exited with {code}:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def process_group_stop(process: subprocess.Popen, sig: int, wait_s: float) -> None:
    """Stop a child that leads its own process group (and so everything it forked)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def wait_http(port: int, timeout_s: float) -> None:
    """Bounded wait until the server answers on the loopback."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.3)
        finally:
            connection.close()
    raise RuntimeError(f"gunicorn did not answer on {HOST}:{port} within {timeout_s:.0f} s")


def outcome_read(conn: psycopg.Connection, ids: list[uuid.UUID]) -> Counter:
    rows = conn.execute(
        "SELECT status, count(*) FROM identification_submission WHERE id = ANY(%s) GROUP BY status", (ids,)
    ).fetchall()
    return Counter(dict(rows))


# --- The run -----------------------------------------------------------------------------------


def stress_run(
    *,
    submissions: int = 200,
    clients: int = 20,
    workers: int = 2,
    web_workers: int = 4,
    types: int = 4,
    examples: int = 8,
    drain_timeout_s: float = 7200,
    manage_cmd: list[str] | None = None,
    log=print,
    stopping: SigtermExit | None = None,
) -> dict:
    """Set up a throw-away installation, run the load, wait for the drain, tear down; return the figures.

    ``manage_cmd`` runs Django commands (setup and the worker); the default is this interpreter's
    ``manage.py``. Tests pass a wrapper that swaps in a fake pipeline. ``stopping`` (the installed
    SIGTERM handler of ``main``) is told when the teardown begins, so that nothing interrupts it.
    """
    manage_cmd = list(manage_cmd or [sys.executable, "manage.py"])
    if submissions < 1 or clients < 1 or workers < 1 or web_workers < 1:
        raise ValueError("--submissions, --clients, --workers and --web-workers must be at least 1.")
    clients = min(clients, submissions)
    work = Path(tempfile.mkdtemp(prefix="obverse-stress-"))
    db_name = f"obverse_stress_{os.getpid()}_{secrets.token_hex(3)}"
    children: list[tuple[subprocess.Popen, int]] = []  # (process, the signal that stops it cleanly)
    logs: list = []
    sampler: MemorySampler | None = None
    try:
        timings: dict[str, float] = {}
        load_start = round(os.getloadavg()[0], 2)  # the machine may be shared: figures depend on it
        started = time.monotonic()
        database_url = embedded_db.start(db_name)  # starts the embedded server if needed, creates the database
        link_pretrained(models_source(), work / "models")
        (work / "staticfiles").mkdir()  # whitenoise warns on every start when STATIC_ROOT is missing
        env = child_env(work=work, database_url=database_url, workers=workers)
        setup_log = work / "setup.log"
        log(f"stress: throw-away database {db_name}, folder {work}")
        demo_args = ["load_demo", "--types", str(types), "--examples", str(examples), "--out", str(work / "demo")]
        for step, args, timeout_s in (
            ("migrate_s", ["migrate", "--noinput"], 600),
            ("demo_s", demo_args, 900),
            ("index_s", ["reindex"], 1800),
        ):
            step_started = time.monotonic()
            manage(args, manage_cmd=manage_cmd, env=env, log=setup_log, timeout_s=timeout_s)
            timings[step] = round(time.monotonic() - step_started, 1)
        timings["setup_s"] = round(time.monotonic() - started, 1)
        photos = [path.read_bytes() for path in sorted((work / "demo" / "examples").glob("*.jpg"))]
        if not photos:
            raise RuntimeError("load_demo wrote no example photos to upload.")
        with psycopg.connect(database_url, autocommit=True) as conn:
            catalogue_images = conn.execute("SELECT count(*) FROM collection_imageembedding").fetchone()[0]
        log(f"stress: catalogue of {types} demo types indexed ({catalogue_images} images) in {timings['setup_s']} s")

        # The worker first, so its model loading overlaps the server's start.
        worker_log = (work / "worker.log").open("ab")
        logs.append(worker_log)
        worker = subprocess.Popen(
            [*manage_cmd, "qcluster"],
            cwd=BASE_DIR,
            env=env,
            stdout=worker_log,
            stderr=worker_log,
            start_new_session=True,
        )
        children.append((worker, signal.SIGINT))  # qcluster lets a running task finish on SIGINT
        sampler = MemorySampler(worker.pid).start()
        # A socket bound here on an ephemeral port and handed to gunicorn: no port guessing, no race.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((HOST, 0))
        listener.listen(256)
        port = listener.getsockname()[1]
        listener.set_inheritable(True)
        web_log = (work / "web.log").open("ab")
        logs.append(web_log)
        web = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "config.wsgi:application",
                "--bind", f"fd://{listener.fileno()}", "--workers", str(web_workers),
                "--timeout", "120", "--graceful-timeout", "10", "--log-level", "warning",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=web_log,
            stderr=web_log,
            pass_fds=(listener.fileno(),),
            start_new_session=True,
        )  # fmt: skip
        children.append((web, signal.SIGTERM))
        listener.close()  # gunicorn holds its own copy
        wait_http(port, timeout_s=120)

        log(f"stress: {submissions} submissions from {clients} clients to http://{HOST}:{port}{SUBMIT_PATH}")
        first_upload_wall = time.time()
        started = time.monotonic()
        uploads = clients_run(port=port, photos=photos, submissions=submissions, clients=clients)
        timings["upload_wall_s"] = round(time.monotonic() - started, 1)
        accepted = [uuid.UUID(u.submission_id) for u in uploads if u.submission_id]

        # Drain: bounded wait until no accepted submission is received or processing.
        drained = False
        with psycopg.connect(database_url, autocommit=True) as conn:
            deadline = time.monotonic() + drain_timeout_s
            last_report = 0.0
            while time.monotonic() < deadline:
                counts = outcome_read(conn, accepted)
                pending = sum(counts.get(status, 0) for status in PENDING_STATUSES)
                if pending == 0:
                    drained = True
                    break
                if worker.poll() is not None:
                    log(f"stress: the worker exited with {worker.returncode}; stopping the wait")
                    break
                if time.monotonic() - last_report > 30:
                    log(f"stress: {pending} of {len(accepted)} still pending …")
                    last_report = time.monotonic()
                time.sleep(1)
            timings["drain_wait_s"] = round(time.monotonic() - started - timings["upload_wall_s"], 1)
            sampler.sample()
            counts = outcome_read(conn, accepted)
            span = conn.execute(
                "SELECT max(processed_at), percentile_cont(ARRAY[0.5, 0.95]) "
                "WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - created_at)) "
                "FROM identification_submission WHERE id = ANY(%s) AND processed_at IS NOT NULL",
                (accepted,),
            ).fetchone()
            reasons = conn.execute(
                "SELECT error, count(*) FROM identification_submission WHERE id = ANY(%s) AND status = 'failed' "
                "GROUP BY error ORDER BY count(*) DESC LIMIT 5",
                (accepted,),
            ).fetchall()
            queue_left = conn.execute("SELECT count(*) FROM django_q_ormq").fetchone()[0]
            duplicate_candidates = conn.execute(
                "SELECT count(*) FROM (SELECT submission_id, rank FROM identification_candidate "
                "WHERE submission_id = ANY(%s) GROUP BY submission_id, rank HAVING count(*) > 1) AS d",
                (accepted,),
            ).fetchone()[0]
        sampler.stop()

        processed = sum(counts.get(status, 0) for status in READY_STATUSES)
        failed = counts.get("failed", 0)
        last_done, ready_quantiles = span
        processing_s = (last_done.timestamp() - first_upload_wall) if last_done else None
        latencies = [u.ms for u in uploads]
        statuses = Counter(str(u.status) for u in uploads if u.status != 201)
        return {
            "submissions": submissions,
            "clients": clients,
            "workers": workers,
            "web_workers": web_workers,
            "catalogue": {"demo_types": types, "indexed_images": catalogue_images, "upload_photos": len(photos)},
            "accepted": len(accepted),
            "rejected": dict(statuses),
            "processed": processed,
            "failed": failed,
            "lost": len(accepted) - processed - failed,
            "pending": sum(counts.get(status, 0) for status in PENDING_STATUSES),  # > 0 only when not drained
            "drained": drained,
            "queue_left": queue_left,
            "duplicate_candidates": duplicate_candidates,
            "failure_reasons": dict(reasons),
            "upload_ms_p50": percentile(latencies, 50),
            "upload_ms_p95": percentile(latencies, 95),
            "upload_ms_max": round(max(latencies), 1) if latencies else None,
            "ready_s_p50": round(ready_quantiles[0], 1) if ready_quantiles else None,
            "ready_s_p95": round(ready_quantiles[1], 1) if ready_quantiles else None,
            "processing_s": round(processing_s, 1) if processing_s else None,
            "throughput_per_min": round((processed + failed) / processing_s * 60, 1) if processing_s else None,
            "peak_worker_rss_mb": round(sampler.peak_tree_mb, 1),
            "peak_worker_process_hwm_mb": round(sampler.peak_process_mb, 1),
            "worker_processes": sampler.peak_processes,
            **timings,
            "cpu_count": os.cpu_count(),
            "load_average_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        }
    finally:
        if stopping is not None:
            stopping.cleanup()
        if sampler is not None:
            sampler.stop()
        for child, sig in reversed(children):
            process_group_stop(child, sig, wait_s=60)
        for handle in logs:
            handle.close()
        _database_drop(db_name)
        shutil.rmtree(work, ignore_errors=True)


def _database_drop(name: str) -> None:
    try:
        throwaway_db.drop(name, embedded_db.database_url("postgres"))
    except psycopg.Error as exc:
        print(f"stress: could not drop the throw-away database {name}: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="django-q2 worker processes")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--types", type=int, default=4, help="demo coin types in the throw-away catalogue")
    parser.add_argument("--examples", type=int, default=8, help="phone-like demo photos used as uploads")
    parser.add_argument("--drain-timeout", type=float, default=7200, help="seconds to wait for the queue (bounded)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    # Stopping the run (Ctrl-C, or SIGTERM, even where a shell started it with SIGINT ignored) still
    # stops its server and worker and drops the throw-away database: both unwind through `finally`.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stopping = SigtermExit().install()
    result = stress_run(
        submissions=args.submissions,
        clients=args.clients,
        workers=args.workers,
        web_workers=args.web_workers,
        types=args.types,
        examples=args.examples,
        drain_timeout_s=args.drain_timeout,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        stopping=stopping,
    )
    stopping.restore()
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0 if result["lost"] == 0 and result["accepted"] == args.submissions else 1


if __name__ == "__main__":
    sys.exit(main())
