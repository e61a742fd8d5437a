"""The long run's per-minute figures: the trend test and the plot (issue 17: "p99 per minute plotted, no upward trend")."""

from __future__ import annotations

import json
from pathlib import Path

from cxstream.bench.loadgen import by_minute_summary, minute_trend
from tests.scripts import load_script

plot_minutes = load_script("bench/pipeline/plot_minutes.py")


def _rows(p99s: list[float], count: int = 1000) -> list[dict]:
    return [{"minute": m, "count": count, "p50_ms": v / 2, "p99_ms": v} for m, v in enumerate(p99s)]


def test_a_noisy_flat_run_has_no_upward_trend_and_a_steady_climb_has_one() -> None:
    flat = minute_trend(_rows([24, 19, 23, 20, 25, 18, 22, 21, 24, 19]))
    assert flat is not None and flat["upward"] is False and flat["minutes"] == 10
    climbing = minute_trend(_rows([18, 19, 19, 21, 22, 22, 24, 25, 27, 28]))
    assert climbing is not None and climbing["upward"] is True
    assert climbing["slope_ms_per_minute"] > 0.9
    assert climbing["second_half_median"] > climbing["first_half_median"]


def test_a_falling_run_is_not_upward() -> None:
    falling = minute_trend(_rows([30, 28, 27, 25, 24, 22, 21, 20]))
    assert falling is not None and falling["upward"] is False and falling["kendall_tau"] < 0


def test_a_partial_last_minute_is_left_out_and_too_few_minutes_give_no_test() -> None:
    rows = [*_rows([20, 21, 20, 21, 20]), {"minute": 5, "count": 12, "p50_ms": 40, "p99_ms": 400.0}]
    trend = minute_trend(rows)
    assert trend is not None and trend["minutes"] == 5 and trend["max"] == 21
    assert minute_trend(_rows([20, 30, 40])) is None


def test_the_minutes_carry_the_decision_latency_and_the_on_arrival_e2e_of_the_same_contacts() -> None:
    rows = by_minute_summary({"a": (0, 0.010, 0.004), "b": (0, 0.030, 0.006), "c": (1, 0.020, 0.005)}, queued={"b"})
    assert [r["minute"] for r in rows] == [0, 1]
    assert rows[0]["count"] == 2 and rows[0]["decision"]["count"] == 2 and rows[0]["on_arrival"]["count"] == 1
    assert 29.9 < rows[0]["max_ms"] < 30.1 and 5.9 < rows[0]["decision"]["max_ms"] < 6.1  # HDR: 3 significant digits
    assert 9.9 < rows[0]["on_arrival"]["max_ms"] < 10.1  # b was queued at the router: not on arrival
    assert "on_arrival" not in by_minute_summary({"a": (0, 0.010, 0.004)})[0]  # queued contacts not known


def test_the_plot_is_written_as_a_png(tmp_path: Path) -> None:
    minutes = by_minute_summary({f"c{m}-{i}": (m, 0.010 + 0.001 * (i % 7), 0.005) for m in range(6) for i in range(200)},
                                queued={"c3-5"})
    final = {"rate": 128, "e2e_by_minute": minutes,
             "e2e_trend": {"e2e": minute_trend(minutes),
                           "decision": minute_trend([{"minute": r["minute"], **r["decision"]} for r in minutes]),
                           "on_arrival": minute_trend([{"minute": r["minute"], **r["on_arrival"]} for r in minutes])}}
    src = tmp_path / "run.json"
    src.write_text(json.dumps({"final": final, "steps": []}))
    out = tmp_path / "minutes.png"
    assert plot_minutes.main([str(src), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
