"""The identity fast path's replica: its memory per customer, and ingest's cost of choosing a road per event.

With ``CX_IDENTITY_FAST_PATH=1`` every worker keeps a replica of the identity table
(:class:`cxstream.agents.fastpath.Replica`, the table's records as the changelog carries them) and
asks :class:`~cxstream.agents.fastpath.Road` for each customer event which road it takes.  Here, in
memory, for ``--customers`` customers of the benchmark workload:

1. the identity table the one resolver builds from the workload's resolve requests (ingest's own
   validation: ``bench/identity/max_rate.py``'s ``requests``);
2. **memory**: a replica fed a copy of every record of that table (as read from the changelog),
   measured with ``tracemalloc``: bytes per customer and per table record;
3. **choice**: ``Road.choose`` on every request again, on one open input partition with nothing
   pending (what ingest does per event; the events are settled now, so most take the fast road):
   µs per event, against the resolver's own µs per event on the same requests.

Usage::

    .venv/bin/python bench/identity/replica.py --customers 10000,100000 --json bench/results/identity-replica.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from cxstream.agents.fastpath import Replica, Road
from cxstream.context.resolver import Resolver
from cxstream.schemas import ResolveRequest
from cxstream.streams.codecs import decode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from max_rate import requests


def measure(customers: int, events: int, seed: int) -> dict[str, Any]:
    reqs = [decode(v, ResolveRequest) for _, v in requests(customers, events, seed)]
    table: dict[bytes, bytes] = {}
    resolver = Resolver(table)
    t0 = time.perf_counter()
    for req in reqs:
        resolver.resolve(req.event.customer.present(), event_id=req.event.event_id, at=req.event.occurred_at, refused=req.refused)
    resolve_s = time.perf_counter() - t0
    known = sum(1 for k in table if k.startswith(b"c:"))
    records = list(table.items())
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    replica = Replica()
    for k, v in records:
        replica.apply(bytes(bytearray(k)), bytes(bytearray(v)))  # new objects, as a consumer hands them over
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    replica.ready = True
    road = Road(replica)
    road.choose("in", 0, 1, reqs[0].event, False)
    road.barrier("in", 0, 0)
    state = road.inputs["in", 0]
    fast = 0
    t0 = time.perf_counter()
    for req in reqs:
        way = road.choose("in", 0, 1, req.event, bool(req.refused))
        way.tracked.acked = True  # (as the broker would, soon after)
        if way.fast:
            fast += 1
        elif state.slow:  # (nothing pending: each slow choice is forgotten at once, as if committed at once)
            state.slow.clear()
            state.ids.clear()
            state.owners.clear()
    choose_s = time.perf_counter() - t0
    return {
        "customers": customers, "resolve_requests": len(reqs), "table_records": len(table), "customers_in_table": known,
        "replica_bytes": held, "bytes_per_customer": round(held / max(1, known), 1),
        "bytes_per_record": round(held / max(1, len(table)), 1),
        "resolver_us_per_event": round(1e6 * resolve_s / len(reqs), 2),
        "choose_us_per_event": round(1e6 * choose_s / len(reqs), 2), "fast_share_when_settled": round(fast / len(reqs), 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--customers", default="10000,100000")
    p.add_argument("--events", type=int, default=0, help="workload records per run (default: 3 per customer, at least 60,000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args(argv)
    runs = []
    for customers in (int(c) for c in args.customers.split(",")):
        run = measure(customers, args.events or max(60_000, 3 * customers), args.seed)
        print(json.dumps(run), flush=True)
        runs.append(run)
    out = {
        "benchmark": "identity fast path: replica memory and the choice of road",
        "command": "bench/identity/replica.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
