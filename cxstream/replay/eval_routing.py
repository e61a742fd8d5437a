"""``cxstream eval routing``: replay the real bank call-centre log through the router core.

    python -m cxstream.replay.eval_routing --log FILE --policy fifo,skills,default --json OUT

Each policy replays the same calls (same arrivals, patience and service-time draws seeded
the same way) through :func:`cxstream.routing.simulate.simulate`, and the figures are
written with the log's own historical figures for the same calls.  Assumptions: see
:mod:`cxstream.replay.bank_log` and ``docs/ROUTING.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxstream.replay import bank_log
from cxstream.routing.config import RoutingConfig
from cxstream.routing.simulate import SimResult, simulate

#: Evaluated policies: router config and whether the call type is a required skill.
POLICIES: dict[str, tuple[RoutingConfig, bool]] = {
    # first come first served, longest-idle advisor, anyone takes any call type
    "fifo": (RoutingConfig(policy="fifo"), False),
    # the same, but the call type is a required skill (isolates the effect of skill gating)
    "fifo_skills": (RoutingConfig(policy="fifo"), True),
    # call type as skill; best learned handle time for that type wins
    "skills": (RoutingConfig(policy="skills"), True),
    # the engine's default: priorities with aging, SLA escalation, full score
    "default": (RoutingConfig(policy="default"), True),
}

ASSUMPTIONS = {
    "calls": "non-phantom calls that reached the advisor queue (queued or served); arrival = q_start, else IVR exit",
    "patience": "abandoned calls: observed wait; served calls: Kaplan-Meier per call type, conditional on exceeding the observed wait (infinite past the last abandonment)",
    "service_time": "resampled from the serving advisor's own real service times for the call type (>= 5 samples), else the type's pool scaled by the advisor's speed factor",
    "shifts": "advisor on shift from the first service start to the last service end of each day, split at gaps > 1 h; capacity 1 voice call",
    "skills": "call types the advisor served >= 5 times in the month (proficiency 3 for all; speed is learned online from completions)",
    "desktop": "offers accepted at once; after-call work = wrap_up_s (presence wrap_up) beyond the logged service time; overflow (callback) only announced",
    "service_level": "answered within 20 s / (answered + abandoned - abandoned before 5 s)",
    "p90_wait_s": "nearest-rank 90th percentile of answered calls' waits",
    "advisor_occupancy": "service seconds / staffed (shift) seconds",
}


class AccountingError(RuntimeError):
    """A simulation's counts do not add up (a call counted twice, or the router disagreeing): its figures are wrong."""


def check_accounting(result: SimResult) -> dict[str, int]:
    """answered / abandoned / unresolved calls of a run, after checking that they account for every call once.

    Each call is answered, abandoned or unresolved (neither), never two of them: answered +
    abandoned + unresolved == calls, each >= 0.  When the run has the router's statistics, the
    router's own answered and abandoned counts must be the same.  Raises :class:`AccountingError`
    (naming some of the calls concerned) otherwise.
    """
    n = len(result.outcomes)
    answered = sum(1 for o in result.outcomes if o.answered_at is not None)
    abandoned = sum(1 for o in result.outcomes if o.abandoned_at is not None)
    unresolved = sum(1 for o in result.outcomes if o.answered_at is None and o.abandoned_at is None)
    both = [o.call_id for o in result.outcomes if o.answered_at is not None and o.abandoned_at is not None]
    problems = []
    if both or answered + abandoned + unresolved != n or min(answered, abandoned, unresolved) < 0:
        problems.append(
            f"answered {answered} + abandoned {abandoned} + unresolved {unresolved} != calls {n}: "
            f"{len(both)} calls counted both answered and abandoned (e.g. {', '.join(both[:5])})"
        )
    total = result.router_stats.get("total") if result.router_stats else None
    if isinstance(total, dict) and (total.get("answered"), total.get("abandoned")) != (answered, abandoned):
        problems.append(
            f"the router counted answered {total.get('answered')} / abandoned {total.get('abandoned')}, "
            f"the simulation {answered} / {abandoned}"
        )
    if problems:
        raise AccountingError("simulation accounting is broken: " + "; ".join(problems))
    return {"answered": answered, "abandoned": abandoned, "unresolved": unresolved}


def figures(result: SimResult, sla_s: float = 20.0, short_abandon_s: float = 5.0) -> dict[str, Any]:
    """The standard figures of one simulation run (after :func:`check_accounting`, which raises if they cannot be right)."""
    counts = check_accounting(result)
    answered = [o for o in result.outcomes if o.answered_at is not None]
    abandoned = [o for o in result.outcomes if o.abandoned_at is not None]
    waits = sorted(o.answered_at - o.arrival for o in answered if o.answered_at is not None)
    short = sum(1 for o in abandoned if o.abandoned_at is not None and o.abandoned_at - o.arrival < short_abandon_s)
    service = sum(o.service_s or 0.0 for o in answered)
    n = len(result.outcomes)
    return {
        "calls": n,
        "answered": len(answered),
        "abandoned": len(abandoned),
        "unresolved": counts["unresolved"],
        "asa_s": sum(waits) / len(waits) if waits else 0.0,
        "aht_s": service / len(answered) if answered else 0.0,
        "abandon_rate": len(abandoned) / n if n else 0.0,
        "service_level_20s": sum(1 for w in waits if w <= sla_s) / max(1, len(answered) + len(abandoned) - short),
        "p90_wait_s": bank_log.percentile(waits, 0.9),
        "advisor_occupancy": service / result.staffed_s if result.staffed_s > 0 else 0.0,
    }


def fastest_possible_aht(calls: list[bank_log.BankCall], shifts: list[Any], times: bank_log.ServiceTimes) -> float:
    """AHT if every call went to the fastest advisor of the month skilled for its type, ignoring availability.

    A lower bound on what advisor choice alone could reach (with these service-time draws).
    """
    best: dict[str, float] = {}
    advisors = {s.advisor_id: s.skills for s in shifts}
    for t in {c.call_type for c in calls}:
        means = [times.mean(a, t) for a, skills in advisors.items() if t in skills]
        best[t] = min(means) if means else times.mean("", t)
    return sum(best[c.call_type] for c in calls) / len(calls) if calls else 0.0


def select_days(
    calls: list[bank_log.BankCall],
    days: str | None = None,
    *,
    date_from: str | None = None,
    date_to: str | None = None,
    half: str | None = None,
) -> list[bank_log.BankCall]:
    """The calls of some days: a list or ``first:N`` (*days*), a range of YYMMDD (*date_from*..*date_to*,
    both included), and/or *half* of the log's month (``first``: days 1-14, the tuning half; ``second``: 15-end).

    >>> mk = lambda d: bank_log.BankCall(key=d, customer_id="0", priority=0, call_type="PS", day=d, arrival=0.0, outcome="HANG", wait_s=1.0)
    >>> calls = [mk(f"9901{d:02d}") for d in (1, 14, 15, 31)]
    >>> [c.day for c in select_days(calls, half="second")], [c.day for c in select_days(calls, date_from="990114", date_to="990115")]
    (['990115', '990131'], ['990114', '990115'])
    """
    if days:
        all_days = sorted({c.day for c in calls})
        if days.startswith("first:"):
            keep = set(all_days[: int(days.split(":", 1)[1])])
        else:
            keep = set(days.split(","))
        calls = [c for c in calls if c.day in keep]
    if date_from:
        calls = [c for c in calls if c.day >= date_from]
    if date_to:
        calls = [c for c in calls if c.day <= date_to]
    if half == "first":
        calls = [c for c in calls if int(c.day[4:6]) <= HALF_DAYS]
    elif half == "second":
        calls = [c for c in calls if int(c.day[4:6]) > HALF_DAYS]
    elif half is not None:
        raise SystemExit(f"--half must be first or second, not {half!r}")
    return calls


#: The first half of a month (its first two weeks) is where the policy was tuned; the rest is held out.
HALF_DAYS = 14


def run(
    log: str | Path | None,
    policies: list[str],
    *,
    seed: int = 0,
    days: str | None = None,
    wrap_up_s: float = 0.0,
    date_from: str | None = None,
    date_to: str | None = None,
    half: str | None = None,
) -> dict[str, Any]:
    """Evaluate *policies* on the log; returns the JSON document written by :func:`main`."""
    calls = select_days(bank_log.read_calls(log), days, date_from=date_from, date_to=date_to, half=half)
    if not calls:
        raise SystemExit("no calls in the selected days")
    shifts = bank_log.shifts(calls)
    sims = bank_log.sim_calls(calls, seed=seed)
    times = bank_log.ServiceTimes(calls)
    hist = bank_log.historical(calls, shifts)
    runs = []
    for name in policies:
        if name not in POLICIES:
            raise SystemExit(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
        cfg, gated = POLICIES[name]
        t0 = time.perf_counter()
        result = simulate(
            sims, shifts, cfg, times.draw, seed=seed, skills_as_requirement=gated, group="bank", wrap_up_s=wrap_up_s
        )
        elapsed = time.perf_counter() - t0
        fig = figures(result)
        runs.append(
            {
                "policy": name,
                **fig,
                "aht_vs_historical": fig["aht_s"] / hist["aht_s"] - 1.0 if hist["aht_s"] else None,
                "router_events": result.events,
                "router_inputs": result.inputs,
                "sim_wall_s": round(elapsed, 2),
            }
        )
    fifo = next((r for r in runs if r["policy"] == "fifo"), None)
    for r in runs:  # relative to fifo (the table) and to what the bank achieved
        for k in ("aht_s", "asa_s", "abandon_rate", "service_level_20s"):
            if fifo is not None:
                r[f"{k}_vs_fifo"] = r[k] / fifo[k] - 1.0 if fifo[k] else None
            r[f"{k}_vs_historical"] = r[k] / hist[k] - 1.0 if hist[k] else None
    return {
        "log": str(log or bank_log.default_log_path()),
        "days": days or "all",
        "from": date_from,
        "to": date_to,
        "half": half,
        "first_day": calls[0].day,
        "last_day": calls[-1].day,
        "seed": seed,
        "wrap_up_s": wrap_up_s,
        "advisor_shifts": len(shifts),
        "historical": hist,
        "fastest_possible_aht_s": fastest_possible_aht(calls, shifts, times),
        "assumptions": ASSUMPTIONS,
        "runs": runs,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1%}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cxstream eval routing``; returns the process exit code."""
    p = argparse.ArgumentParser(prog="cxstream eval routing", description=__doc__.split("\n")[0])
    p.add_argument(
        "--log",
        default=None,
        help="the bank log (default: $CX_SHARED_DATA_DIR or ../shared/data, callcenter_anonymous_bank/january_1999.txt)",
    )
    p.add_argument("--policy", default="fifo,skills,default", help=f"comma-separated, of: {', '.join(POLICIES)}")
    p.add_argument("--json", dest="json_out", default=None, help="write the result here (default: stdout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--wrap-up", type=float, default=0.0, help="after-call work per call in seconds (calibration; default 0)"
    )
    p.add_argument("--days", default=None, help="YYMMDD,YYMMDD... or first:N (default: the whole log)")
    p.add_argument("--from", dest="date_from", default=None, help="first day (YYMMDD, included)")
    p.add_argument("--to", dest="date_to", default=None, help="last day (YYMMDD, included)")
    p.add_argument(
        "--half", choices=("first", "second"), default=None,
        help=f"first = days 1-{HALF_DAYS} of the month (where the default policy was tuned), second = the rest",
    )
    args = p.parse_args(argv)
    policies = [x.strip() for x in args.policy.split(",") if x.strip()]
    try:
        doc = run(
            args.log, policies, seed=args.seed, days=args.days, wrap_up_s=args.wrap_up,
            date_from=args.date_from, date_to=args.date_to, half=args.half,
        )
    except AccountingError as exc:
        print(f"cxstream eval routing: {exc}", file=sys.stderr)
        return 3
    if len(policies) == 1:  # the flat shape: policy figures at the top level
        doc = {**doc["runs"][0], **{k: v for k, v in doc.items() if k != "runs"}}
    text = json.dumps(doc, indent=2, sort_keys=False)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    for r in doc.get("runs", [doc]):
        print(
            f"{r['policy']:>12}: calls={r['calls']} asa={r['asa_s']:.1f}s aht={r['aht_s']:.1f}s "
            f"abandon={r['abandon_rate']:.3f} sl20={r['service_level_20s']:.3f} p90={r['p90_wait_s']:.0f}s occ={r['advisor_occupancy']:.3f}"
            + (
                f" | vs fifo: aht {_pct(r['aht_s_vs_fifo'])} asa {_pct(r['asa_s_vs_fifo'])}"
                f" abandon {_pct(r['abandon_rate_vs_fifo'])} sl {_pct(r['service_level_20s_vs_fifo'])}"
                if "aht_s_vs_fifo" in r else ""
            ),
            file=sys.stderr,
        )
    h = doc["historical"]
    print(
        f"{'historical':>12}: calls={h['calls']} asa={h['asa_s']:.1f}s aht={h['aht_s']:.1f}s abandon={h['abandon_rate']:.3f} "
        f"sl20={h['service_level_20s']:.3f} p90={h['p90_wait_s']:.0f}s occ={h['advisor_occupancy']:.3f}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
