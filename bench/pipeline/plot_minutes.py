"""Plot a pipeline run's e2e per minute (issue 17: "p99 per minute plotted, no upward trend").

Reads the ``final`` run of a ``cxstream bench pipeline`` JSON (``final.e2e_by_minute``, and
``final.e2e_trend``: the Mann-Kendall test of the per-minute p99) and writes a PNG: p50 and
p99 of the e2e and of ``e2e_decision``, and the p99 of the e2e of the contacts the router offered on
arrival (not queued), by minute of planned time, the target line, and the tests' verdicts in the title.  Or ``--step N``: the N-th step of ``steps`` instead.
A run that has them (since December 5, sixth session) gets a second panel: the p99 per minute of each
hop (``final.hops.by_minute``) and the engine's CPU per input (``final.work_by_minute``).

    .venv/bin/python bench/pipeline/plot_minutes.py bench/results/pipeline-final-10min.json \\
        --out bench/results/pipeline-final-10min.png --target-ms 25
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cxstream.bench.loadgen import whole_minutes


def series(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[float | None]]:
    """The plotted series of ``e2e_by_minute`` rows: minute, e2e p50/p99, decision p50/p99, on-arrival p99, contacts.

    >>> s = series([{"minute": 0, "count": 3, "p50_ms": 10.0, "p99_ms": 20.0, "decision": {"p50_ms": 5.0, "p99_ms": 9.0}}])
    >>> s["minute"], s["e2e_p99"], s["decision_p50"], s["contacts"]
    ([0], [20.0], [5.0], [3])
    """
    out: dict[str, list[Any]] = {
        k: [] for k in ("minute", "e2e_p50", "e2e_p99", "decision_p50", "decision_p99", "on_arrival_p99", "contacts")
    }
    for r in rows:
        d = r.get("decision") or {}
        out["minute"].append(r["minute"])
        out["on_arrival_p99"].append((r.get("on_arrival") or {}).get("p99_ms"))
        out["e2e_p50"].append(r.get("p50_ms"))
        out["e2e_p99"].append(r.get("p99_ms"))
        out["decision_p50"].append(d.get("p50_ms"))
        out["decision_p99"].append(d.get("p99_ms"))
        out["contacts"].append(r.get("count"))
    return out


def verdict(trend: dict[str, Any] | None, name: str) -> str:
    """One line saying what the Mann-Kendall test found.

    >>> verdict({"upward": False, "kendall_tau": -0.1, "p_value": 0.6, "slope_ms_per_minute": -0.2}, "e2e p99")
    'e2e p99: no upward trend (tau -0.1, p 0.6, slope -0.2 ms/min)'
    >>> verdict(None, "e2e p99")
    'e2e p99: too few minutes for a trend test'
    """
    if not trend:
        return f"{name}: too few minutes for a trend test"
    what = "upward trend" if trend["upward"] else "no upward trend"
    return f"{name}: {what} (tau {trend['kendall_tau']}, p {trend['p_value']}, slope {trend['slope_ms_per_minute']} ms/min)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path, help="a cxstream bench pipeline result")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--step", type=int, default=None, help="plot steps[N] instead of the final run")
    p.add_argument("--target-ms", type=float, default=25.0, help="the p99 target drawn as a line")
    a = p.parse_args(argv)
    result = json.loads(a.json.read_text())
    run = result["final"] if a.step is None else result["steps"][a.step]
    rows = whole_minutes(run.get("e2e_by_minute") or [])  # as the trend test: a last partial minute left out
    if not rows:
        p.error(f"{a.json}: the run has no e2e_by_minute")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = series(rows)
    trend = run.get("e2e_trend") or {}
    hop_rows = whole_minutes((run.get("hops") or {}).get("by_minute") or [])
    work = run.get("work_by_minute") or []
    if hop_rows or work:  # a second panel: which hop the tail is in, and the engine's CPU per input
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 8), dpi=110, sharex=True)
        for name, style in (("ingest", "o-"), ("identity_to_router", "s-"), ("to_consumer", "^-"), ("send_to_ack", "x--")):
            points = [(r["minute"], r["p99_ms"][name]) for r in hop_rows if r["p99_ms"].get(name) is not None]
            if points:
                ax2.plot(*zip(*points, strict=True), style, label=f"{name} p99 (offered on arrival)")
        ax2.set_ylabel("ms")
        ax2.set_ylim(bottom=0)
        ax2.grid(alpha=0.3)
        ax2.legend(loc="upper left", fontsize=8)
        cost = [(r["minute"], r["engine_ms_per_input"]) for r in work if r.get("engine_ms_per_input") is not None and r["seconds"] >= 30]
        if cost:
            ax3 = ax2.twinx()
            ax3.plot(*zip(*cost, strict=True), "d:", color="black", label="engine CPU per input (ms, right)")
            ax3.set_ylim(0, 1.5 * max(v for _, v in cost))
            ax3.set_ylabel("engine CPU ms per input")
            ax3.legend(loc="upper right", fontsize=8)
        ax2.set_xlabel("minute of planned time after the warm-up")
    else:
        fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    ax.plot(s["minute"], s["e2e_p99"], "o-", color="tab:red", label="e2e p99")
    ax.plot(s["minute"], s["e2e_p50"], "o-", color="tab:orange", label="e2e p50")
    if any(v is not None for v in s["on_arrival_p99"]):
        ax.plot(s["minute"], s["on_arrival_p99"], "^-", color="tab:green", label="e2e p99, offered on arrival")
    ax.plot(s["minute"], s["decision_p99"], "s--", color="tab:blue", label="e2e_decision p99")
    ax.plot(s["minute"], s["decision_p50"], "s--", color="tab:cyan", label="e2e_decision p50")
    ax.axhline(a.target_ms, color="grey", linestyle=":", label=f"target p99 {a.target_ms:g} ms")
    ax.set_xlabel("minute of planned time after the warm-up")
    ax.set_ylabel("ms")
    tallest = max((v for v in s["e2e_p99"] if v is not None), default=0.0)
    if tallest > 10 * a.target_ms:  # the contacts the router held would flatten the rest: a log scale
        ax.set_yscale("log")
        ax.set_ylabel("ms (log scale)")
    else:
        ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    rate = run.get("rate")
    contacts = sum(c or 0 for c in s["contacts"])
    ax.set_title(f"{a.json.name}: {rate}/s offered, {contacts:,} contacts in {len(rows)} whole minutes\n"
                 f"{verdict(trend.get('e2e'), 'e2e p99')}; {verdict(trend.get('on_arrival'), 'on arrival p99')}\n"
                 f"{verdict(trend.get('decision'), 'decision p99')}", fontsize=8)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
