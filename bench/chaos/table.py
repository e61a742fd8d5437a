"""Print the figures of a ``make chaos`` result as the Markdown table of docs/RELIABILITY.md.

    .venv/bin/python bench/chaos/table.py [bench/results/chaos.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _s(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def notes(e: dict[str, Any]) -> str:
    """What matters of each fault beside the accounting."""
    out = []
    if e.get("workers_died"):
        out.append(f"workers exited: {len(e['workers_died'])}")
    kind = e["fault"]
    if "recovery_with_router_queue_s" in e:
        out.append(f"with the router's queue {_s(e['recovery_with_router_queue_s'])} s")
    if kind == "kill9":
        out += [f"since the kill {_s(e.get('recovery_since_kill_s'))} s", f"restarted worker ready after {_s(e.get('restart_ready_s'))} s",
                f"advisors left busy {_s(e.get('advisors_left_busy'))}"]
    elif kind in ("broker_outage", "redis_outage"):
        out.append(f"outage {_s(e.get('outage_s'))} s")
        if kind == "redis_outage":
            out.append(f"contacts assigned during it {e.get('contacts_assigned_during')}/{e.get('contacts_opened_during')}")
    elif kind == "duplicates":
        out.append(f"assignment ids stable: {e.get('assignment_ids_stable')}")
    elif kind == "overload":
        out += [
            f"{_s(e.get('rate'))}/s for {_s(e.get('overload_s'))} s (sustainable {_s(e.get('sustainable_rate'))}/s)",
            f"overloaded: {e.get('overloaded')} (lag +{_s(e.get('lag_growth_per_s'))}/s)",
            f"catch-up {_s(e.get('catch_up_s'))} s",
            f"RSS first 30 s {_s(e.get('rss_mb_first_30s_max'))} MB, peak {_s(e.get('rss_mb_peak_workers'))} MB",
        ]
    if e.get("lag_peak") is not None:
        out.append(f"lag peak {_s(e['lag_peak'])}")
    return "; ".join(out)


def table(result: dict[str, Any]) -> str:
    env = result.get("environment", {})
    sus, base = result.get("sustainable", {}), result.get("baseline", {})
    lines = [
        f"Run of {env.get('when')} at commit {env.get('git_head')}, {result.get('elapsed_s', 0) / 60:.0f} min, load average "
        f"{env.get('loadavg_at_start')} at start; sustainable rate {_s(sus.get('rate'))}/s (first failing "
        f"{_s(sus.get('first_failing_rate'))}/s), background during faults {_s(base.get('rate'))}/s; baseline e2e p50 "
        f"{_s(base.get('e2e_p50_ms'))} ms, p99 {_s(base.get('e2e_p99_ms'))} ms.",
        "",
        "| fault | customers | inputs sent | processed | dead-lettered | lost | contacts (assigned) | assigned twice "
        "| completed, left open | counted twice | recovery_s | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in result.get("faults", []):
        lines.append(
            f"| {e['fault']} | {_s(e.get('customers'))} | {_s(e['events_sent'])} | {_s(e['processed'])} | {_s(e['dead_lettered'])} "
            f"| {_s(e['lost'])} | {_s(e.get('contacts_opened'))} ({_s(e.get('contacts_assigned'))}) | {_s(e['duplicate_assignments'])} "
            f"| {_s(e.get('contacts_completed'))}, {_s(e.get('contacts_left_open'))} "
            f"| {_s(e['counted_twice'])} | {_s(e.get('recovery_s'))} | {notes(e)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else REPO / "bench" / "results" / "chaos.json"
    print(table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
