"""The embedded PostgreSQL bootstrap: URLs, reuse of a running server, recovery after a kill."""

from __future__ import annotations

import os
import signal
import time

import psutil
import psycopg
import pytest

from config import embedded_db


class TestDatabaseUrl:
    def test_it_percent_encodes_the_socket_folder_as_host(self, tmp_path, monkeypatch):
        monkeypatch.setenv("OBVERSE_PGDATA", str(tmp_path / "pg data"))
        url = embedded_db.database_url("obverse")
        assert (
            url
            == "postgresql://postgres@" + str(tmp_path / "pg data").replace("/", "%2F").replace(" ", "%20") + "/obverse"
        )

    def test_it_reads_the_socket_folder_from_the_pid_file(self, tmp_path, monkeypatch):
        monkeypatch.setenv("OBVERSE_PGDATA", str(tmp_path))
        (tmp_path / "postmaster.pid").write_text("123\n/data\n1700000000\n5432\n/run/sockets\n\n")
        assert embedded_db.socket_dir() == embedded_db.Path("/run/sockets")


@pytest.mark.slow
class TestEmbeddedServer:
    """A throw-away cluster in a temporary folder (the project's own server is left alone)."""

    def test_it_starts_reuses_and_recovers_after_the_server_is_killed(self, tmp_path, monkeypatch):
        tmp_path.chmod(0o755)
        monkeypatch.setenv("OBVERSE_PGDATA", str(tmp_path / "pgdata"))
        try:
            url = embedded_db.start("throwaway")
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT current_database()").fetchone()[0] == "throwaway"
            pid = int((tmp_path / "pgdata" / "postmaster.pid").read_text().split()[0])
            assert embedded_db.start("throwaway") == url  # second start reuses the running server
            assert int((tmp_path / "pgdata" / "postmaster.pid").read_text().split()[0]) == pid

            os.kill(pid, signal.SIGKILL)  # a crash leaves a stale postmaster.pid behind
            for _ in range(50):
                if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
                time.sleep(0.1)
            assert not embedded_db.is_running()
            url = embedded_db.start("throwaway")
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT 1").fetchone()[0] == 1
        finally:
            embedded_db.stop()
        assert not embedded_db.is_running()
