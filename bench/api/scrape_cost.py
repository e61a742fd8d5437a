"""What one scrape of an engine's metrics costs its stream worker: CPU per ``GET /metrics`` and per ``GET /live`` of its loopback endpoint.

Starts ``cxstream run`` (its embedded broker and Redis, its learner and API processes) from each
source tree given (``--src NAME=DIR``, e.g. ``git archive REV | tar -x -C DIR``; default: this
tree), alternated ``--rounds`` times, waits until it has settled, then asks its loopback endpoint
(the URL its API processes were given, ``--engine-metrics``) ``--scrapes`` times in a row.  The
worker's CPU over the scrapes, less its idle rate measured just before, divided by their number,
is the CPU per scrape; the same for ``/live``, the liveness probe's question since December 7
(a tree from before it answers any path with the whole metrics, which is what its ``/livez``
fetched, so its ``live`` figures are those of its probe).  An idle engine has
fewer series than a loaded one (~600-700 against ~1,200): compare trees within one file.

    .venv/bin/python bench/api/scrape_cost.py --src thread=/tmp/old --src loop=/tmp/new --json bench/results/api-scrape-cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from cxstream.bench.loadgen import stat_cpu_s

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost import report  # bench/api/cost.py, beside this file

ROOT = Path(__file__).resolve().parents[2]


def _engine_metrics_url(engine: psutil.Process) -> str | None:
    for child in engine.children(recursive=True):
        try:
            args = child.cmdline()
        except psutil.Error:
            continue
        if "--engine-metrics" in args:
            return args[args.index("--engine-metrics") + 1]
    return None


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return bytes(resp.read())


def _asked(stat: Path, url: str, n: int, idle_per_s: float) -> dict[str, float]:
    """*url* asked *n* times in a row: the worker's CPU per answer (its /proc *stat*, less its idle rate) and the wall p50."""
    walls = []
    cpu0, t0 = stat_cpu_s(stat), time.monotonic()
    for _ in range(n):
        started = time.perf_counter()
        _get(url)
        walls.append((time.perf_counter() - started) * 1000)
    used = stat_cpu_s(stat) - cpu0 - idle_per_s * (time.monotonic() - t0)
    return {"worker_cpu_ms": round(used / n * 1000, 2), "wall_p50_ms": round(statistics.median(walls), 2)}


def one(name: str, src: Path, scrapes: int, settle_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cx-scrape-") as tmp:
        env = dict(os.environ, CX_DATA_DIR=tmp, CX_HTTP_PORT="0", CX_API_KEYS="k", CX_LOG_LEVEL="warning")
        run = subprocess.Popen([sys.executable, "-m", "cxstream.cli", "run"], cwd=src, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            engine = psutil.Process(run.pid)
            deadline = time.monotonic() + 180
            url = None
            while url is None:
                if time.monotonic() > deadline or run.poll() is not None:
                    raise RuntimeError(f"{name}: the engine did not start")
                time.sleep(1)
                url = _engine_metrics_url(engine)
            time.sleep(settle_s)  # the learner up, the first publications and clocks done
            body = _get(url)
            stat = Path(f"/proc/{run.pid}/stat")
            cpu0, t0 = stat_cpu_s(stat), time.monotonic()
            time.sleep(5)
            idle = (stat_cpu_s(stat) - cpu0) / (time.monotonic() - t0)
            out: dict[str, Any] = {
                "variant": name, "src": str(src), "bytes": len(body),
                "samples": sum(1 for line in body.decode().splitlines() if line and not line.startswith("#")),
                "idle_cpu_pct": round(idle * 100, 1), "metrics": _asked(stat, url, scrapes, idle),
            }
            live = url.rsplit("/", 1)[0] + "/live"
            out["live"] = _asked(stat, live, scrapes, idle)
            return out
        finally:
            run.terminate()
            run.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--src", action="append", default=[], metavar="NAME=DIR", help="a source tree to run the engine from (default: this one)")
    ap.add_argument("--scrapes", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--settle", type=float, default=15.0, help="seconds between the engine's start and the measure")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    sources = [(n, Path(d).resolve()) for n, d in (s.split("=", 1) for s in args.src)] or [("this", ROOT)]
    runs = []
    for r in range(args.rounds):
        for name, src in sources if r % 2 == 0 else sources[::-1]:
            runs.append(one(name, src, args.scrapes, args.settle))
            print(json.dumps(runs[-1]), flush=True)
    result = {"command": " ".join(sys.argv), "scrapes": args.scrapes, "runs": runs,
              "worker_cpu_ms_per_scrape": {n: statistics.median(r["metrics"]["worker_cpu_ms"] for r in runs if r["variant"] == n) for n, _ in sources},
              "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()}}
    return report(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
