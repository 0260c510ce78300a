"""`make bench`: run every benchmark on the real data in ../shared/data and collect the figures.

Each benchmark is its own command that prints JSON and writes it under ``var/bench/``; this runner
only sequences them and prints a summary. Set ``BENCH_ONLY=name[,name]`` to run a subset and
``BENCH_LIMIT=N`` for a quick run on N coins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("OBVERSE_SHARED_DATA_DIR", BASE_DIR.parent / "shared" / "data"))
OUT = BASE_DIR / "var" / "bench"


def benchmarks(limit: str | None) -> dict[str, list[str]]:
    ans = str(DATA / "ans-roman")
    lim = ["--limit", limit] if limit else []
    py = sys.executable
    return {
        "import": [py, "manage.py", "benchmark_import", "--dataset", ans, "--out", str(OUT / "import.json"), *lim],
        "segmentation": [py, "-m", "bench.segmentation", "--data", str(DATA), "--out", str(OUT / "segment.json")],
        "mlcore": [py, "-m", "bench.evaluate", "--dataset", ans, "--out", str(OUT / "mlcore.json"), *lim],
        "identification": [
            py, "manage.py", "benchmark_identification", "--catalogue", ans,
            "--out", str(OUT / "identification.json"), *lim,
        ],
    }  # fmt: skip


def main() -> int:
    if not (DATA / "ans-roman" / "labels.csv").exists():
        print(f"bench: real data not found in {DATA}; nothing to measure (see ../shared/data/README.md).")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    only = {name for name in os.environ.get("BENCH_ONLY", "").split(",") if name}
    results = {}
    for name, cmd in benchmarks(os.environ.get("BENCH_LIMIT") or None).items():
        if only and name not in only:
            continue
        print(f"\n== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        code = subprocess.run(cmd, cwd=BASE_DIR).returncode
        results[name] = {"exit_code": code, "wall_s": round(time.monotonic() - started, 1)}
    (OUT / "summary.json").write_text(json.dumps(results, indent=2))
    print("\n== summary (figures in var/bench/*.json)\n" + json.dumps(results, indent=2))
    return 0 if all(r["exit_code"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
