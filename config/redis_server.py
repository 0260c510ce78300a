"""A local redis-server for the worker's broker, when ``OBVERSE_BROKER=redis`` points at this machine.

``make run`` starts one (Debian's ``redis-server``; ``make redis`` installs it) with its data in
``var/redis`` (append-only file: queued tasks survive a restart) and stops it with the rest. A
museum that runs Redis itself (another machine, a managed service) sets ``OBVERSE_REDIS_URL`` to
it and nothing is started (docs/deploy.md).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def is_local(url: str) -> bool:
    return (urlparse(url).hostname or "") in LOCAL_HOSTS


def start(url: str, directory: Path) -> subprocess.Popen:
    """Start redis-server for ``url`` (its port) with its files in ``directory``; wait until it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "OBVERSE_BROKER=redis needs redis-server on this machine: `make redis` installs Debian's "
            "(or point OBVERSE_REDIS_URL at a Redis elsewhere)."
        )
    port = urlparse(url).port or 6379
    directory.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    args += ["--appendonly", "yes", "--save", "", "--protected-mode", "yes"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
    wait_ready(url, process)
    return process


def wait_ready(url: str, process: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    """Return when Redis at ``url`` answers PING; raise when it does not within ``timeout`` seconds."""
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            if redis.from_url(url, socket_timeout=1).ping():
                return
        except redis.exceptions.ConnectionError:
            pass
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"Redis at {url} did not start (is the port taken?)")
        time.sleep(0.1)
