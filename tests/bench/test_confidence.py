"""bench.confidence: the check of "no confident match" against a benchmark's per-query lines."""

from __future__ import annotations

import json

import pytest

from bench import confidence


def _line(rank, totals):
    return json.dumps({"rank": rank, "scores": [{"score": t, "agreement": 0.0} for t in totals]})


@pytest.fixture
def details(tmp_path):
    path = tmp_path / "details.jsonl"
    rows = [
        _line(1, [0.9, 0.5, 0.4]),  # right, far ahead
        _line(1, [0.8, 0.75, 0.7]),  # right, close
        _line(3, [0.6, 0.58, 0.5]),  # wrong, close
        _line(None, [0.7, 0.45, 0.4]),  # wrong, far ahead
        json.dumps({"rank": None, "scores": []}),  # no candidates: left out
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_it_reports_what_a_gap_rule_calls_and_how_often_it_is_right(details):
    queries = confidence.read_queries(details)
    assert len(queries) == 4

    def gap_of(totals):
        first, second = sorted(totals, reverse=True)[:2]
        return first - second

    result = confidence.report(queries, current=0.2, gap_of=gap_of)
    assert (result["queries"], result["right_at_1"]) == (4, 2)
    assert result["current_rule"] == {
        "threshold": 0.2,
        "called": 2,
        "right": 1,
        "precision": 0.5,
        "recall": 0.5,
        "right_among_the_rest": 1,
        "rest": 2,
    }
    # The right ones' gaps (0.4, 0.05) against the wrong ones' (0.02, 0.25): 3 of 4 pairs ordered.
    assert result["auc_of_the_gap"] == 0.75


def test_the_command_line_reads_the_rule_from_the_product(details, capsys):
    assert confidence.main([str(details)]) == 0
    printed = json.loads(capsys.readouterr().out)
    from identification.results import CONFIDENT_GAP

    assert printed["current_rule"]["threshold"] == CONFIDENT_GAP
