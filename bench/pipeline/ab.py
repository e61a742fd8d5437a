"""A/B runs of the pipeline bench: engine settings alternated at fixed rates, one JSON with every run.

    .venv/bin/python bench/pipeline/ab.py --variant local=CX_LOCAL_DELIVERY=1 --variant broker=CX_LOCAL_DELIVERY=0 \\
        --rates 200,500 --repeats 2 --json bench/results/pipeline-ab-local-delivery.json -- --duration 30
    .venv/bin/python bench/pipeline/ab.py --variant before= --src before=/tmp/old --variant after= --src after=/tmp/new ...
    .venv/bin/python bench/pipeline/ab.py --drain 30000 --variant before= --src before=/tmp/old --variant after= ...
    .venv/bin/python bench/pipeline/ab.py --variant old= --harness-src old=/tmp/old --variant new= ...   # the harness too
    .venv/bin/python bench/pipeline/ab.py --variant w5=--watch-wait-ms=5 --variant w100= ...          # a bench option
    .venv/bin/python bench/pipeline/ab.py --variant api1= --variant api2=CX_HTTP_WORKERS=2 --rates 80 \\
        --json out.json -- --duration 40 --lookup-rate 1000     # with the context lookups (in each run's summary)

Every run is a separate ``cxstream bench pipeline --rate R --skip-refs --lookup-rate 0`` (fresh
broker, Redis and engine, prefilled; with ``--drain N``, ``--drain-only``: the engine draining N
pre-produced records, measured like the references); the variants' order rotates from one repeat to the next
(A B, then B A) so neither the machine's drift nor the run before falls on one variant.  Options after ``--`` go to every run, after these (so ``--lookup-rate 1000`` there turns the lookups on).  Compare variants within one file only.

Each run first drains ``--yardstick`` records (20,000) with raw aiokafka on its own broker
(``--yardstick-events``, a few seconds): its ``raw_aiokafka_rate`` says how fast that moment was,
so that a variant's run on a slow minute can be told from a slow variant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def state_of(result: dict[str, Any]) -> dict[str, Any]:
    """The stored context's bytes per customer after the prefill and at the end of the run."""
    return {"after_prefill": result.get("table_bytes_per_customer"), "end": result.get("state_end")}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    final = result.get("final") or {}
    return {
        "offered_rate": result.get("offered_rate"),
        "achieved_rate": result.get("achieved_rate"),
        "e2e": final.get("e2e"),
        "e2e_on_arrival": final.get("e2e_on_arrival"),
        "lookups": final.get("lookups"),
        "harness_sched": final.get("harness_sched"),
        "hops": final.get("hops"),
        "engine_cpu_pct": final.get("engine_cpu_pct"),
        "machine_busy_pct": final.get("machine_busy_pct"),
        "cpu_by_process": final.get("cpu_by_process"),
        "changelog_records_per_s": final.get("changelog_records_per_s"),
        "missing": final.get("missing"),
        "lag_after": final.get("lag_after"),
        "stage_wait": final.get("stage_wait"),
        "loop_phases": final.get("loop_phases"),
        "loop_lag": final.get("loop_lag"),
        "gc_pauses": final.get("gc_pauses"),
        "broker_gc": final.get("broker_gc"),
        "fetch_hold_ms": final.get("fetch_hold_ms"),
        "fetch_wait_ms": final.get("fetch_wait_ms"),
        "identity_roads": final.get("identity_roads"),
        "early_sends": final.get("early_sends"),
        "broker_warmup": result.get("broker_warmup"),
        "cpu_slices_us": result.get("cpu_slices_us"),
        "state": state_of(result),
        "passed": final.get("passed"),
        "machine_speed": (result.get("environment") or {}).get("machine_speed_at_start"),
        "raw_aiokafka_rate": yardstick_of(result),
        "why": final.get("why"),
        "scrapes": result.get("scrapes"),
    }


def yardstick_of(result: dict[str, Any]) -> float | None:
    """The run's raw aiokafka drain rate (``--yardstick-events``), None where the run had none."""
    return (result.get("yardstick") or {}).get("raw_aiokafka_rate")


def knows_yardstick(tree: str | None) -> bool:
    """Whether the bench in *tree* (None: this one) takes ``--yardstick-events`` (a harness tree from before it does not)."""
    loadgen = Path(tree or Path(__file__).resolve().parents[2]) / "cxstream" / "bench" / "loadgen.py"
    return loadgen.is_file() and "--yardstick-events" in loadgen.read_text(encoding="utf-8")  # older trees: cxstream/replay/


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", action="append", required=True, metavar="NAME=CX_SETTING=VALUE[,CX_SETTING=VALUE]",
                   help="engine settings (CX_...=...) or the bench's own options (--watch-wait-ms=5), comma-separated")
    p.add_argument("--src", action="append", default=[], metavar="NAME=DIR",
                   help="run variant NAME's engine from this source tree (`git archive REV | tar -x -C DIR`)")
    p.add_argument("--harness-src", action="append", default=[], metavar="NAME=DIR",
                   help="run variant NAME's whole bench (harness and, without --src, engine) from this source tree")
    p.add_argument("--rates", default="200,500")
    p.add_argument("--drain", type=int, default=0, metavar="N",
                   help="instead of open-loop runs: the engine's drain of N pre-produced records (`--drain-only`)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--yardstick", type=int, default=20_000, metavar="N",
                   help="each run first drains N records with raw aiokafka on its broker (`raw_aiokafka_rate` per run): "
                        "the hour's speed, to read runs made minutes apart against; 0: none")
    p.add_argument("--json", dest="json_out", required=True)
    args, extra = p.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    variants = []
    for v in args.variant:
        name, _, settings = v.partition("=")
        variants.append((name, [s for s in settings.split(",") if s]))
    sources = dict(s.split("=", 1) for s in args.src)
    harnesses = {name: str(Path(d).resolve()) for name, d in (h.split("=", 1) for h in args.harness_src)}
    runs = []
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for rate in ([0.0] if args.drain else [float(r) for r in args.rates.split(",")]):
            for rep in range(args.repeats):
                # the order rotates from one repeat to the next (A B, B A, ...): a run can be
                # slowed by the one before it (its servers winding down), and that must not
                # fall on one variant
                k = rep % len(variants)
                for name, settings in variants[k:] + variants[:k]:
                    out = Path(tmp) / f"{name}-{rate}-{rep}.json"
                    if args.drain:
                        cmd = [sys.executable, "-m", "cxstream.cli", "bench", "pipeline", "--drain-only", "--ref-events",
                               str(args.drain), "--json", str(out), *extra]
                    else:
                        cmd = [sys.executable, "-m", "cxstream.cli", "bench", "pipeline", "--rate", str(rate), "--skip-refs",
                               "--lookup-rate", "0", "--final-contacts", "0", "--json", str(out), *extra]
                    for s in settings:  # CX_NAME=VALUE for the engine; --option=value for the bench itself
                        cmd += [s] if s.startswith("--") else ["--engine-env", s]
                    if name in sources:
                        cmd += ["--engine-src", sources[name]]
                    if args.yardstick and knows_yardstick(harnesses.get(name)):
                        cmd += ["--yardstick-events", str(args.yardstick)]
                    print(f"# {name} at {rate}/s, run {rep + 1}: {' '.join(cmd[3:])}", flush=True)
                    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=harnesses.get(name))
                    if proc.returncode != 0 or not out.exists():
                        print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
                        runs.append({"variant": name, "rate": rate, "repeat": rep, "error": proc.returncode})
                        continue
                    if args.drain:
                        doc_ = json.loads(out.read_text())
                        d = {**doc_["engine_drain"], "machine_speed": doc_["environment"].get("machine_speed_at_start"),
                             "raw_aiokafka_rate": yardstick_of(doc_), "state": state_of(doc_)}
                        print(f"  drained {d['rate']:.0f}/s, engine {d['engine_cpu_pct']} %, machine {d['machine_busy_pct']} %, "
                              f"cpu {d.get('cpu_by_process')}, raw aiokafka {d['raw_aiokafka_rate']}/s",
                              flush=True)
                        runs.append({"variant": name, "settings": settings, "repeat": rep, **d})
                        continue
                    s = summary(json.loads(out.read_text()))
                    e2e, on_arrival = s["e2e"] or {}, s["e2e_on_arrival"] or {}
                    lookups = s["lookups"] or {}
                    print(f"  achieved {s['achieved_rate']}/s, e2e p50 {e2e.get('p50_ms')} ms, p99 {e2e.get('p99_ms')} ms, "
                          f"on arrival p50 {on_arrival.get('p50_ms')} ms, p99 {on_arrival.get('p99_ms')} ms, "
                          f"engine {s['engine_cpu_pct']} %, cpu {s['cpu_by_process']}, raw aiokafka {s['raw_aiokafka_rate']}/s"
                          + (f", lookups p50 {lookups.get('p50_ms')} p99 {lookups.get('p99_ms')} ms, cache {lookups.get('cache')}" if lookups else "")
                          + (f", scrapes {s['scrapes']}" if s["scrapes"] else ""), flush=True)
                    runs.append({"variant": name, "settings": settings, "rate": rate, "repeat": rep, **s})
    doc = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "variants": {name: settings for name, settings in variants},
        "sources": sources,
        "harnesses": harnesses,
        "elapsed_s": round(time.time() - started, 1),
        "runs": runs,
    }
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
