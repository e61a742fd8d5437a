"""Router configurations against fifo on part of the bank log: the tuning sweep and the ceiling.

    .venv/bin/python bench/routing/sweep.py --half first --wrap-up 0,50 \
        --variants '[{"policy": "default"}, {"policy": "default", "hold_sla_fraction": 0}]' \
        --json bench/results/routing-sweep-first-half.json
    .venv/bin/python bench/routing/sweep.py --half second --oracle --json bench/results/routing-oracle.json

Each variant is a set of :class:`cxstream.routing.RoutingConfig` fields (plus ``"gated": false``
to send no call type as a required skill); every run replays the same calls with the same seed as
``cxstream eval routing`` (same patience, common random numbers for service times).

``--oracle`` replaces the learned expected handle time by the true one (the mean the simulation
draws from, for that advisor and call type): what the policy would do if it knew every advisor
perfectly from the first call — an upper bound for learning, not something the engine can do.
The default policy was tuned with this script on the first half of January only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from cxstream.replay import bank_log, eval_routing
from cxstream.routing import RoutingConfig, policy
from cxstream.routing.simulate import simulate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--log", default=None)
    p.add_argument("--half", choices=("first", "second"), default=None)
    p.add_argument("--wrap-up", default="0,50", help="comma-separated after-call work seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default='[{"policy": "default"}]')
    p.add_argument("--oracle", action="store_true", help="true expected handle times instead of learned ones")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args()
    calls = eval_routing.select_days(bank_log.read_calls(args.log), half=args.half)
    shifts = bank_log.shifts(calls)
    sims = bank_log.sim_calls(calls, seed=args.seed)
    times = bank_log.ServiceTimes(calls)
    if args.oracle:
        def oracle(adv: Any, key: str, group: Any, cfg: RoutingConfig) -> float:
            return times.mean(adv.advisor_id, key.split(":")[-1])

        policy.expected_handle = oracle  # type: ignore[assignment]  # hold_target and the score use it
    results: list[dict[str, Any]] = []
    for wrap in (float(x) for x in args.wrap_up.split(",")):
        def run(cfg: RoutingConfig, gated: bool, wrap: float = wrap) -> dict[str, Any]:
            r = simulate(sims, shifts, cfg, times.draw, seed=args.seed, skills_as_requirement=gated, group="bank", wrap_up_s=wrap)
            return {**eval_routing.figures(r), "holds": r.router_stats["total"].get("holds")}  # type: ignore[union-attr]

        fifo = run(RoutingConfig(policy="fifo"), False)
        results.append({"wrap_up_s": wrap, "variant": {"policy": "fifo", "gated": False}, **fifo})
        for v in json.loads(args.variants):
            fields = dict(v)
            gated = bool(fields.pop("gated", True))
            fig = run(msgspec.convert(fields, RoutingConfig), gated)
            rel = {f"{k}_vs_fifo": fig[k] / fifo[k] - 1.0 if fifo[k] else None
                   for k in ("aht_s", "asa_s", "abandon_rate", "service_level_20s")}
            results.append({"wrap_up_s": wrap, "variant": v, "oracle": args.oracle, **fig, **rel})
            print(
                f"wrap {wrap:g} {json.dumps(v)}: AHT {rel['aht_s_vs_fifo']:+.1%} ASA {rel['asa_s_vs_fifo']:+.1%} "
                f"abandon {fig['abandon_rate']:.4f} (fifo {fifo['abandon_rate']:.4f}) SL {fig['service_level_20s']:.3f} "
                f"(fifo {fifo['service_level_20s']:.3f}) holds {fig['holds']}",
                file=sys.stderr, flush=True,
            )
    doc = {"half": args.half, "seed": args.seed, "oracle": args.oracle, "calls": len(calls), "results": results}
    text = json.dumps(doc, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
