"""bench/pipeline/rounds.py: the worker's CPU split per input and per loop round, read from a full run's steps."""

from __future__ import annotations

import doctest
import json

from tests.scripts import ROOT, load_script

rounds = load_script("bench/pipeline/rounds.py")


def test_its_examples_hold() -> None:
    assert doctest.testmod(rounds).failed == 0


def test_a_full_run_reads_as_fewer_fuller_rounds_as_the_rate_rises(capsys) -> None:
    result = json.loads((ROOT / "bench" / "results" / "pipeline-dec6-third-2.json").read_text())
    rows = rounds.steps_of(result, max_rate=1050)
    assert rows == sorted(rows, key=lambda r: r["rate"]) and {r["rate"] for r in rows} >= {208, 853, 1050}
    low = [r for r in rows if r["rate"] == 208]
    high = [r for r in rows if r["rate"] == 1050]
    assert min(r["rounds"] for r in low) > max(r["rounds"] for r in high)  # the rounds fill up
    assert min(r["ms_per_input"] for r in low) > max(r["ms_per_input"] for r in high)
    per_input, per_round = rounds.fit(rows)
    assert per_input > 0 and per_round > 0
    assert rounds.main([str(ROOT / "bench" / "results" / "pipeline-dec6-third-2.json"), "--max-rate", "1050"]) == 0
    out = capsys.readouterr().out
    assert f"{per_input} ms per input + {per_round} ms per round" in out and "drain: 2394 records/s" in out
