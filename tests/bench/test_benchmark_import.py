"""Tests for manage.py benchmark_import: a small run in a throw-away database that is dropped afterwards."""

from __future__ import annotations

import json
import os

import psycopg
import pytest
from django.core.management import call_command

from bench.management.commands.benchmark_import import _admin_connection


def bench_database_exists() -> bool:
    """Whether the command's throw-away database is there (named after this process: it runs in it).

    Only this one: other runs' databases (a parallel test worker, a developer's benchmark) come and go.
    """
    with _admin_connection() as conn:
        name = f"obverse_bench_{os.getpid()}"
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


@pytest.mark.slow
def test_it_imports_twice_into_a_throwaway_database_and_reports(ans_dir, tmp_path, capsys):
    try:
        assert not bench_database_exists()
    except psycopg.Error as exc:  # pragma: no cover - only without a reachable server
        pytest.skip(f"no PostgreSQL server to create a benchmark database on: {exc}")
    out = tmp_path / "import.json"
    call_command("benchmark_import", dataset=ans_dir, out=out, limit=3)

    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["records"] == 3
    assert report["import"]["created"] == 3 and report["import"]["failed"] == 0
    assert report["import"]["images_added"] == 6
    assert report["import"]["wall_s"] > 0 and 0 < report["import"]["peak_rss_mib"] < 1024
    assert report["reimport"]["updated"] == 3 and report["reimport"]["images_unchanged"] == 6
    assert report["rows"]["specimens"] == 3 and report["rows"]["images"] == 6
    assert report["rows_unchanged_by_reimport"] is True
    assert not bench_database_exists()  # dropped again
