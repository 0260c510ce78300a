"""``manage.py benchmark_import``: time the NUDS import of the ANS set in a throw-away database.

The user's data is never touched: a database ``obverse_bench_<pid>`` is created on the same server,
migrated and imported into by child processes (``DATABASE_URL`` points at it, media go to a
temporary folder), then dropped. Wall time and the child's peak RSS (``wait4`` rusage) are measured
for a first import and a re-import (which must update, not duplicate). The PostgreSQL server's own
memory is not part of the figure.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.throwaway_db import database_url, drop, server_params

TARGET_WALL_S = 180
TARGET_RSS_MIB = 1024


class Command(BaseCommand):
    help = "Import the ANS NUDS set into a throw-away database and report wall time and peak memory as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", type=Path, default=None, help="Folder with nuds/ and images/ (ans-roman).")
        parser.add_argument("--out", type=Path, default=Path("var/bench/import.json"), help="Where to write the JSON.")
        parser.add_argument("--limit", type=int, default=None, help="Import only the first N records.")

    def handle(self, *args, dataset: Path | None, out: Path, limit: int | None, **options):
        dataset = Path(dataset or Path(settings.OBVERSE_SHARED_DATA_DIR) / "ans-roman")
        nuds_dir, images_dir = dataset / "nuds", dataset / "images"
        if not nuds_dir.is_dir():
            raise CommandError(f"no nuds/ folder in {dataset}")
        records = len(list(nuds_dir.glob("*.xml")))
        if limit is not None:
            records = min(records, limit)

        name = f"obverse_bench_{os.getpid()}"
        work = Path(tempfile.mkdtemp(prefix="obverse-bench-"))
        env = {
            **os.environ,
            "DATABASE_URL": database_url(name),
            "OBVERSE_MEDIA_ROOT": str(work / "media"),
            "OBVERSE_INDEX_ON_IMPORT": "0",
            "DJANGO_DEBUG": "0",  # DEBUG would keep every query in memory and skew the RSS figure
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        import_cmd = [sys.executable, manage, "import_nuds", str(nuds_dir), "--images", str(images_dir)]
        import_cmd += ["--no-progress", "-v", "0"] + (["--limit", str(limit)] if limit is not None else [])
        load_before = [round(x, 1) for x in os.getloadavg()]
        _create_database(name)
        try:
            migrate = _measure([sys.executable, manage, "migrate", "--noinput", "-v", "0"], env)
            if migrate["returncode"]:
                raise CommandError(f"migrate failed in the benchmark database:\n{migrate['output']}")
            first = _measure([*import_cmd, "--report", str(work / "first.json")], env)
            counts_after_first = _row_counts(name)
            again = _measure([*import_cmd, "--report", str(work / "again.json")], env)
            counts_after_again = _row_counts(name)
            first_report = _read_json(work / "first.json")
            again_report = _read_json(work / "again.json")
            media_bytes = sum(path.stat().st_size for path in (work / "media").rglob("*") if path.is_file())
        finally:
            drop(name, **server_params())
            shutil.rmtree(work, ignore_errors=True)

        if not first_report:
            raise CommandError(f"the import did not finish:\n{first['output']}")
        result = {
            "dataset": str(dataset),
            "records": records,
            "cpu_count": os.cpu_count(),
            # Other work on the machine slows the import down; the load average says how busy it was.
            "load_average_before": load_before,
            "load_average_after": [round(x, 1) for x in os.getloadavg()],
            "python": platform.python_version(),
            "migrate_s": migrate["wall_s"],
            "import": {
                "wall_s": first["wall_s"],
                "peak_rss_mib": first["peak_rss_mib"],
                "cpu_s": first["cpu_s"],
                "records_per_s": round(records / first["wall_s"], 1) if first["wall_s"] else None,
                **_report_counts(first_report),
            },
            "reimport": {
                "wall_s": again["wall_s"],
                "peak_rss_mib": again["peak_rss_mib"],
                "cpu_s": again["cpu_s"],
                **_report_counts(again_report),
            },
            "rows": counts_after_first,
            "rows_unchanged_by_reimport": counts_after_first == counts_after_again,
            "media_mib": round(media_bytes / 2**20, 1),
            "targets": {"wall_s": TARGET_WALL_S, "peak_rss_mib": TARGET_RSS_MIB},
            "within_targets": first["wall_s"] < TARGET_WALL_S and first["peak_rss_mib"] < TARGET_RSS_MIB,
        }
        text = json.dumps(result, indent=2)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        self.stdout.write(text)


def _admin_connection():
    """A connection to the server's ``postgres`` database (to create the benchmark's own)."""
    import psycopg

    return psycopg.connect(**server_params(), dbname="postgres", autocommit=True)


def _create_database(name: str) -> None:
    try:
        with _admin_connection() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        raise CommandError(f"cannot create the benchmark database {name} (needs CREATEDB): {exc}") from exc


def _row_counts(name: str) -> dict[str, int]:
    import psycopg

    tables = {
        "sources": "collection_source",
        "concepts": "collection_concept",
        "items": "collection_item",
        "specimens": "collection_specimen",
        "images": "collection_specimenimage",
    }
    with psycopg.connect(database_url(name)) as conn:
        return {key: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for key, table in tables.items()}


def _measure(cmd: list[str], env: dict[str, str]) -> dict:
    """Run a child process; its wall time, CPU time and peak RSS.

    The peak is the child's VmHWM (high-water mark of its own address space, reset by exec), polled
    while it runs: rusage's ru_maxrss would also count the parent's memory copied at fork, which
    makes the figure meaningless when the parent is large (a test process that loaded torch).
    """
    started = time.monotonic()
    peak_kib = 0
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(cmd, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting for it again
        wall_s = time.monotonic() - started
        output.seek(0)
        text = output.read().decode("utf-8", "replace")[-4000:]
    return {
        "wall_s": round(wall_s, 1),
        "peak_rss_mib": round((peak_kib or usage.ru_maxrss) / 1024, 1),  # Linux reports kilobytes
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "returncode": proc.returncode,
        "output": text,
    }


def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _report_counts(report: dict) -> dict:
    keys = ("created", "updated", "images_added", "images_replaced", "images_unchanged", "images_linked")
    counts = {key: report.get(key) for key in keys}
    counts["failed"] = len(report.get("failed", []))
    counts["failures"] = report.get("failed", [])[:10]
    return counts
