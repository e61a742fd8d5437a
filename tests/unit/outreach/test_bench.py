"""The outreach bench on a small synthetic Telco-like table (the real one is read by bench/outreach/run.sh)."""

from __future__ import annotations

import random

from cxstream.outreach.bench import choose_threshold, main, run, synth


def _rows(n: int, seed: int = 1) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        monthly = rng.random() < 0.5
        churn = rng.random() < (0.5 if monthly else 0.1)
        rows.append({"customerID": f"C{i:04d}", "tenure": str(rng.randint(0, 72)),
                     "Contract": "Month-to-month" if monthly else "Two year", "MonthlyCharges": "70.0",
                     "TotalCharges": "700", "Churn": "Yes" if churn else "No"})
    return rows


def test_run_reports_the_issue_keys_and_is_consistent() -> None:
    r = run(_rows(400))
    for key in ("precision", "recall", "outreach_events", "suppressed", "threshold", "base_churn_rate", "lift", "sweep_second_half"):
        assert key in r
    assert set(r["suppressed"]) >= {"erased", "opted_out", "consent", "open_contact", "frequency_cap", "quiet_hours"}
    assert r["sweep_consistent_with_run"] and r["loop"]["matches_bench_precision"]
    assert r["held_out"]["customers"] == 200 and r["first_half"]["customers"] == 200
    assert r["outreach_events"] <= r["held_out"]["trigger"]["fired"]


def test_run_is_deterministic() -> None:
    a, b = run(_rows(200), seed=3), run(_rows(200), seed=3)
    for r in (a, b):
        r.pop("elapsed_s")
        r.pop("evaluate_us_mean")
    assert a == b


def test_synth_depends_on_seed_and_id_only() -> None:
    assert synth(1, "X") == synth(1, "X")
    assert len({repr(synth(s, "X")) for s in range(20)}) > 1


def test_choose_threshold_uses_only_given_scores() -> None:
    assert choose_threshold([0.2, 0.3, 0.8], [False, False, True]) == 0.8


def test_main_missing_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert main(["--data", str(tmp_path / "nope.csv")]) == 2
