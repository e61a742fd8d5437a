"""Engine workers started at the same moment, over and over: are they all ready, how soon, after how many rebalances?

This is how ``deploy/k8s`` (``podManagementPolicy: Parallel``), ``docker compose --scale`` and the
chaos harness start workers (``--workers``, 2 by default).  Each start is a new app (its own topics
and groups) on one set of embedded servers.  Per start: whether every worker said it was ready
within ``--timeout``, the seconds until they had, and the stages' group's generation then and ``--quiet`` seconds later
(from the workers' logs: aiokafka's "Joined group '<app>.stages' (generation N)").  A group still
rebalancing after the workers were ready shows as a later generation.

Each source tree given (``--src NAME=DIR``, e.g. ``git archive REV | tar -x -C DIR``; default: this
one) runs its workers, in turns, the order swapped every round:

    .venv/bin/python bench/chaos/parallel_start.py --src before=/tmp/old --src after=/tmp/new --rounds 6 \\
        --json bench/results/parallel-start.json
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cxstream.bench.chaos import Servers, Workers, log  # noqa: E402
from cxstream.bench.loadgen import environment  # noqa: E402
from cxstream.streams.logs import EngineNotReady  # noqa: E402


def generation(logs: list[str], group: str) -> int:
    """The highest generation any of the worker *logs* says it joined *group* at (0: none)."""
    pattern = re.compile(rf"Joined group '{re.escape(group)}' \(generation (\d+)\)")
    return max((int(g) for text in logs for g in pattern.findall(text)), default=0)


def one(servers: Servers, base: Path, name: str, src: Path, n: int, timeout_s: float, quiet_s: float, workers_n: int = 2) -> dict[str, Any]:
    tag = f"{n:03d}{int(time.time()) % 100000:05d}"
    app_id = f"cxpstart-{tag}"
    workers = Workers(servers, base / f"{name}-{n}", workers_n, prefix=f"pstart{tag}.", app_id=app_id, engine_src=str(src))
    began = time.monotonic()
    ready_s: float | None = None
    try:
        try:
            workers.start_all(timeout=timeout_s)
            ready_s = time.monotonic() - began
        except EngineNotReady as exc:
            log(f"{name}: not ready: {str(exc).splitlines()[0]}")
        logs = [e.output() for e in workers.live()]
        at_ready = generation(logs, f"{app_id}.stages")
        time.sleep(quiet_s)
        after = generation([e.output() for e in workers.live()], f"{app_id}.stages")
    finally:
        workers.stop()
    shutil.rmtree(base / f"{name}-{n}", ignore_errors=True)
    row = {"variant": name, "src": str(src), "round": n, "workers": workers_n, "ready": ready_s is not None,
           "ready_s": None if ready_s is None else round(ready_s, 1),
           "generation_at_ready": at_ready, "generation_after_quiet": after}
    log(orjson.dumps(row).decode())
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ready = [r for r in rows if r["ready"]]
    return {
        "starts": len(rows), "ready": len(ready),
        "ready_s_median": statistics.median(r["ready_s"] for r in ready) if ready else None,
        "generation_at_ready_median": statistics.median(r["generation_at_ready"] for r in rows),
        "generation_at_ready_max": max(r["generation_at_ready"] for r in rows),
        "still_rebalancing_after_quiet": sum(r["generation_after_quiet"] != r["generation_at_ready"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", action="append", default=[], metavar="NAME=DIR", help="a source tree to run the workers from (default: this one)")
    ap.add_argument("--rounds", type=int, default=6, help="starts of each source tree")
    ap.add_argument("--workers", type=int, default=2, help="workers started together each time")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds every worker has to be ready")
    ap.add_argument("--quiet", type=float, default=10.0, help="seconds after ready to see whether the group still rebalances")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    sources = [(n, Path(d).resolve()) for n, d in (s.split("=", 1) for s in args.src)] or [("this", ROOT)]
    env_at_start = environment()
    base = Path(tempfile.mkdtemp(prefix="cxpstart-"))
    servers = Servers(base)
    rows: list[dict[str, Any]] = []
    try:
        servers.start()
        log(f"servers: kafka {servers.broker_url}, redis {servers.redis_url}")
        for r in range(args.rounds):
            for name, src in sources if r % 2 == 0 else sources[::-1]:
                rows.append(one(servers, base, name, src, r, args.timeout, args.quiet, args.workers))
    finally:
        servers.stop()
        shutil.rmtree(base, ignore_errors=True)
    result = {
        "what": f"{args.workers} engine workers started at the same moment, each round a new app on the same embedded servers: "
                "ready or not within the timeout, seconds to ready, the stages' group's generation (from the workers' logs)",
        "command": " ".join([".venv/bin/python", "bench/chaos/parallel_start.py", *(argv if argv is not None else sys.argv[1:])]),
        "options": vars(args),
        "summary": {name: summary([r for r in rows if r["variant"] == name]) for name, _ in sources},
        "starts": rows,
        "environment": {**env_at_start, **{k: v for k, v in environment().items() if k.endswith("_at_end")}},
    }
    for name, s in result["summary"].items():
        log(f"{name}: {orjson.dumps(s).decode()}")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
