"""Tests for manage.py benchmark_import: a small run in a throw-away database that is dropped afterwards."""

from __future__ import annotations

import json

import psycopg
import pytest
from django.core.management import call_command

from collection.management.commands.benchmark_import import _admin_connection


def bench_databases() -> set[str]:
    with _admin_connection() as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'obverse_bench_%%'").fetchall()
    return {name for (name,) in rows}


@pytest.mark.slow
def test_it_imports_twice_into_a_throwaway_database_and_reports(ans_dir, tmp_path, capsys):
    try:
        before = bench_databases()
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
    assert bench_databases() == before  # dropped again
