"""Check "no confident match" against a benchmark run: how often a first candidate called a likely match was right.

Reads the per-query lines that ``manage.py benchmark_identification --details FILE`` writes (truth,
rank, and each candidate's ``score`` and ``agreement``) and prints JSON: how many first candidates
were right, how well the gap between the first two totals tells right from wrong (AUC), what the
current rule (``identification.results.CONFIDENT_GAP``) calls and how often it is right, and the gap
that would best balance precision and recall (F1) on these queries. docs/confidence.md says how
the constant was chosen; run this after retraining the model:

    python -m bench.confidence var/bench/calibration-details.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def read_queries(path: Path) -> list[tuple[list[float], bool]]:
    """[(the candidates' totals, whether the first was the true type)] of every query with candidates."""
    queries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        totals = [float(c["score"]) + float(c["agreement"]) for c in row.get("scores") or []]
        if totals:
            queries.append((totals, row.get("rank") == 1))
    return queries


def auc(positives: list[float], negatives: list[float]) -> float | None:
    """The probability that a right query's gap exceeds a wrong one's (ties count half)."""
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def called(gaps: list[tuple[float, bool]], threshold: float) -> dict:
    """What a rule "gap ≥ threshold" calls a likely match, and how often it is right."""
    chosen = [right for gap, right in gaps if gap >= threshold]
    right = sum(right for _, right in gaps)
    hits = sum(chosen)
    return {
        "threshold": round(threshold, 4),
        "called": len(chosen),
        "right": hits,
        "precision": round(hits / len(chosen), 3) if chosen else None,
        "recall": round(hits / right, 3) if right else None,
        "right_among_the_rest": right - hits,
        "rest": len(gaps) - len(chosen),
    }


def report(queries: list[tuple[list[float], bool]], *, current: float, gap_of) -> dict:
    gaps = [(gap_of(totals), right) for totals, right in queries]
    gaps = [(gap, right) for gap, right in gaps if gap is not None]

    def f1(row: dict) -> float:
        p, r = row["precision"] or 0.0, row["recall"] or 0.0
        return 2 * p * r / (p + r) if p + r else 0.0

    candidates = [called(gaps, gap) for gap in sorted({gap for gap, _ in gaps})]
    best = max(candidates, key=f1) if candidates else None
    return {
        "queries": len(gaps),
        "right_at_1": sum(right for _, right in gaps),
        "auc_of_the_gap": None
        if not gaps
        else round(auc([g for g, r in gaps if r], [g for g, r in gaps if not r]) or 0.0, 3),
        "current_rule": called(gaps, current),
        "best_f1_rule": best,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("details", type=Path, help="The --details file of benchmark_identification.")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from identification.results import CONFIDENT_GAP, confidence_gap

    print(json.dumps(report(read_queries(args.details), current=CONFIDENT_GAP, gap_of=confidence_gap), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
