"""`make run`: prepare everything, then run the web server and the django-q2 worker until Ctrl-C.

Steps: start the embedded PostgreSQL when DATABASE_URL is unset, migrate, load the synthetic demo
collection if the catalogue is empty, create demo users (printed), queue a first training of the
models when none is active (the worker runs it after indexing the demo), then run
``runserver 127.0.0.1:8000`` and ``qcluster`` side by side. Ctrl-C (or SIGTERM) stops both and the
embedded database cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from config import embedded_db

HOST = os.environ.get("OBVERSE_HOST", "127.0.0.1")
PORT = os.environ.get("OBVERSE_PORT", "8000")


def manage(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], check=check)


def _start_local_redis() -> subprocess.Popen | None:
    """With OBVERSE_BROKER=redis and a Redis URL on this machine, start redis-server (config.redis_server)."""
    from config import redis_server

    redis_url = os.environ.get("OBVERSE_REDIS_URL", "redis://127.0.0.1:6379/0")
    if os.environ.get("OBVERSE_BROKER") != "redis" or not redis_server.is_local(redis_url):
        return None
    var_dir = Path(os.environ.get("OBVERSE_VAR_DIR", embedded_db.BASE_DIR / "var"))
    process = redis_server.start(redis_url, var_dir / "redis")
    print(f"Started redis-server for the worker's queue ({redis_url}).", flush=True)
    return process


def main() -> int:
    embedded = not os.environ.get("DATABASE_URL")
    if embedded:
        print(f"Starting embedded PostgreSQL in {embedded_db.pgdata_dir()} …", flush=True)
        embedded_db.start()
    broker_process = _start_local_redis()
    manage("migrate", "--noinput")
    manage("load_demo")
    manage("create_demo_users")
    manage("train_models", "--background-if-untrained")

    # Each child leads its own process group, so stopping it also stops the workers qcluster forks.
    # The worker's two clusters: visitors' photos, and bulk work (indexing, training) that never delays them.
    commands = [
        (["runserver", f"{HOST}:{PORT}", "--noreload"], {}),
        (["qcluster"], {}),
        (["qcluster"], {"Q_CLUSTER_NAME": "bulk"}),
    ]
    children = [
        subprocess.Popen([sys.executable, "manage.py", *cmd], env={**os.environ, **env}, start_new_session=True)
        for cmd, env in commands
    ]
    print(
        f"\nObverse is running on http://{HOST}:{PORT}/  (Ctrl-C stops web server, worker and database)\n", flush=True
    )

    stopping = False

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for child in children:
            if child.poll() is not None:
                print(f"{child.args[2]} exited with {child.returncode}; stopping.", flush=True)
                exit_code = child.returncode or 1
                stopping = True
        time.sleep(0.5)

    print("Stopping: the worker finishes its current task first (up to a minute) …", flush=True)
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGINT)
    deadline = time.monotonic() + 60
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            # An interrupted task is safe: tasks are idempotent and the queue delivers it again.
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    if broker_process is not None:
        broker_process.terminate()  # redis-server saves its append-only file and exits
        broker_process.wait(timeout=30)
    if embedded:
        embedded_db.stop()
        print("Embedded PostgreSQL stopped.", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
