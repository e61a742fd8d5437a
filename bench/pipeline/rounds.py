"""The worker's CPU per input and per loop round at each step of a full run: what the max rate is made of.

    python bench/pipeline/rounds.py bench/results/pipeline-dec6-third-2.json [--max-rate 1050]

For each open-loop step of a ``cxstream bench pipeline`` result: the inputs a second (the
workload's records and the desktops' answers), the worker's loop rounds a second (rounds that
processed records: ``loop_phases.process.count`` over the step), its CPU (``cpu_by_process.engine``),
the CPU per input and the inputs per round, and the contacts' on-arrival e2e.  Then a
least-squares fit of the worker's CPU as ``a`` ms per input plus ``b`` ms per round over the steps
up to ``--max-rate``, and the drain's CPU per record for comparison.  The fit is a reading of the
run, not a model of the engine: rate and rounds move together, so ``a`` and ``b`` trade off
against each other (say which steps went in).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def steps_of(result: dict[str, Any], max_rate: float | None = None) -> list[dict[str, float]]:
    """One row per step with its CPU and its rounds, by offered rate (steps without either left out).

    >>> steps_of({"steps": [{"rate": 100, "duration_s": 10, "offered_total_rate": 130, "loop_phases": {"process": {"count": 2000}},
    ...                      "cpu_by_process": {"engine": 32.0}, "e2e_on_arrival": {"p50_ms": 7, "p99_ms": 18}}]})
    [{'rate': 100, 'inputs': 130, 'rounds': 200.0, 'worker_pct': 32.0, 'ms_per_input': 2.462, 'inputs_per_round': 0.65, 'p50_ms': 7, 'p99_ms': 18}]
    """
    rows = []
    for s in result.get("steps") or []:
        rounds = ((s.get("loop_phases") or {}).get("process") or {}).get("count")
        worker = (s.get("cpu_by_process") or {}).get("engine")
        if not rounds or worker is None or (max_rate is not None and s["rate"] > max_rate):
            continue
        per_s = rounds / s["duration_s"]
        on_arrival = s.get("e2e_on_arrival") or {}
        rows.append({
            "rate": s["rate"], "inputs": s["offered_total_rate"], "rounds": round(per_s, 1), "worker_pct": worker,
            "ms_per_input": round(worker * 10 / s["offered_total_rate"], 3), "inputs_per_round": round(s["offered_total_rate"] / per_s, 2),
            "p50_ms": on_arrival.get("p50_ms"), "p99_ms": on_arrival.get("p99_ms"),
        })
    return sorted(rows, key=lambda r: r["rate"])


def fit(rows: list[dict[str, float]]) -> tuple[float, float]:
    """(ms per input, ms per round): the least-squares split of the worker's CPU (ms a second) over the steps.

    >>> fit([{"inputs": 100, "rounds": 50, "worker_pct": 10.0}, {"inputs": 200, "rounds": 50, "worker_pct": 15.0},
    ...      {"inputs": 100, "rounds": 100, "worker_pct": 15.0}])
    (0.5, 1.0)
    """
    a = np.array([[r["inputs"], r["rounds"]] for r in rows], dtype=float)
    y = np.array([r["worker_pct"] * 10 for r in rows], dtype=float)
    (per_input, per_round), *_ = np.linalg.lstsq(a, y, rcond=None)
    return round(float(per_input), 3), round(float(per_round), 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("result", type=Path)
    p.add_argument("--max-rate", type=float, default=None, help="fit only the steps offered at most this rate")
    args = p.parse_args(argv)
    result = json.loads(args.result.read_text())
    every = steps_of(result)
    for r in every:
        print(f"{r['rate']:7.0f}/s  inputs {r['inputs']:6.0f}/s  rounds {r['rounds']:5.0f}/s  worker {r['worker_pct']:5.1f} %  "
              f"{r['ms_per_input']:.3f} ms/input  {r['inputs_per_round']:7.1f} inputs/round  "
              f"on arrival p50 {r['p50_ms']} p99 {r['p99_ms']} ms")
    fitted = steps_of(result, args.max_rate)
    if len(fitted) >= 2:
        per_input, per_round = fit(fitted)
        print(f"fit over {len(fitted)} steps{f' up to {args.max_rate:.0f}/s' if args.max_rate else ''}: "
              f"{per_input} ms per input + {per_round} ms per round")
    drain = (result.get("references") or {}).get("engine_drain")
    if drain:
        worker = drain["cpu_by_process"]["engine"]
        print(f"drain: {drain['rate']:.0f} records/s, worker {worker} %, {worker * 10 / drain['rate']:.3f} ms per record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
