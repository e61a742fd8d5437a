"""The identity stage's own max rate on one core: the single total order's ceiling (issue 17).

Identity resolution reads ``cx.resolve.v1``, ONE partition: whatever the number of workers, this
stage runs on one of them, so its rate on one core is the ceiling of the whole engine's input
rate (docs/IDENTITY.md, "Throughput").  Measured here, on the embedded Apache Kafka and Redis:

1. **workload**: the benchmark workload's customer events (``cxstream.bench.workload``) for
   ``--customers`` customers, turned into resolve requests by ingest's own validation
   (``route_customer_event``: normalised identifiers, refusals), the anonymous ones left out;
2. **resolver**: the pure :class:`~cxstream.context.resolver.Resolver` over those requests, in
   memory, no I/O: the logic's own cost per event; the same pass counts the *settled* events
   (every identifier already with one owner: ``settled_owner``), which the fast path designed
   in docs/IDENTITY.md would take off this stage;
3. **stage**: the real identity stage (``cxstream.agents.identity.stage`` in a
   :class:`~cxstream.streams.batch.BatchRuntime`, with the Redis write-behind on its pipelined
   connection, flushed every ``CX_REDIS_FLUSH_MS`` as in the engine) in this process, alone, over the requests produced to
   ``cx.resolve.v1`` beforehand.  The clock runs from the stage's first record to the group's
   committed offset reaching the end; the process's CPU time over the same span says how much
   of one core it used.  Its outputs (``cx.customer-events.v1``, ``cx.identity.v1``) are produced
   and acknowledged as in the engine; nothing reads them.

Usage::

    .venv/bin/python bench/identity/max_rate.py --json bench/results/identity-max-rate.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from cxstream.agents import context as context_agent
from cxstream.agents import identity as identity_agent
from cxstream.agents.ingest import route_customer_event
from cxstream.bench.loadgen import GroupLag
from cxstream.bench.workload import Workload, WorkloadConfig
from cxstream.context.resolver import Resolver, settled_owner
from cxstream.schemas import InteractionEvent, OutcomeEvent, ResolveRequest
from cxstream.streams import topics as t
from cxstream.streams.admin import ensure_topics
from cxstream.streams.batch import BatchRuntime, Record
from cxstream.streams.codecs import decode, encode
from cxstream.streams.embedded import EmbeddedBroker, EmbeddedRedis
from cxstream.streams.security import pipelined_redis, redis_pool
from cxstream.streams.settings import Settings


def requests(customers: int, events: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of the resolve requests ingest makes of *events* workload records (anonymous and advisor ones left out)."""
    wl = Workload(WorkloadConfig(customers=customers, seed=seed))
    base = time.time() - 3600.0
    out: list[tuple[bytes, bytes]] = []
    for i, ev in enumerate(wl.events(events)):
        if not isinstance(ev, (InteractionEvent, OutcomeEvent)):
            continue
        kind = type(ev)
        ev = msgspec.structs.replace(ev, occurred_at=base + i * 0.01)
        routed = route_customer_event(encode(ev), kind, 1 << 20)
        if routed.to == "resolve":
            out.append((routed.key, routed.value))
    return out


def resolver_pass(reqs: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The pure resolver over the requests in memory: µs per event, and the share the fast path would settle."""
    decoded = [decode(v, ResolveRequest) for _, v in reqs]
    r = Resolver({})
    settled = 0
    t0 = time.perf_counter()
    for req in decoded:
        ids = req.event.customer.present()
        r.resolve(ids, event_id=req.event.event_id, at=req.event.occurred_at, refused=req.refused)
    took = time.perf_counter() - t0
    r2 = Resolver({})
    for req in decoded:  # a second pass for the settled share, so that its lookups do not count in the timing
        ids = req.event.customer.present()
        if not req.refused and settled_owner(ids, r2.index_value) is not None:
            settled += 1
        r2.resolve(ids, event_id=req.event.event_id, at=req.event.occurred_at, refused=req.refused)
    return {
        "events": len(decoded), "seconds": round(took, 3), "rate": round(len(decoded) / took, 1),
        "us_per_event": round(1e6 * took / len(decoded), 2), "settled": settled,
        "settled_share": round(settled / max(1, len(decoded)), 4),
    }


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def stage_run(broker: str, redis_url: str, reqs: list[tuple[bytes, bytes]], tag: str) -> dict[str, Any]:
    """The identity stage alone in this process over the pre-produced requests."""
    settings = Settings(topic_prefix=f"idmax{tag}.", app_id=f"cx-idmax-{tag}")
    prefix = settings.topic_prefix
    await ensure_topics(broker, settings, prefix=prefix)
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5, acks=1)
    await producer.start()
    try:
        futures = [await producer.send(prefix + t.RESOLVE.name, v, key=k) for k, v in reqs]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    client = redis_pool(settings, redis_url, max_connections=16, timeout=5, socket_timeout=10, socket_connect_timeout=5)
    pipelined = pipelined_redis(settings, redis_url) if settings.redis_pipelined_writes else None  # as the engine does
    writer = context_agent.RedisContextWriter(client, settings.redis_ttl_s, pipelined=pipelined,
                                              max_pending=settings.redis_max_pending)
    rt = BatchRuntime(broker, settings, linger_ms=settings.producer_linger_ms, local_delivery=False)
    st = identity_agent.stage(rt, writer)
    handle = st.handler
    first: list[tuple[float, float]] = []

    async def timed(rec: Record) -> None:
        if not first:
            first.append((time.perf_counter(), cpu_s()))
        await handle(rec)

    st.handler = timed
    stop = asyncio.Event()

    async def flusher() -> None:
        while not stop.is_set():
            await writer.flush()
            await asyncio.sleep(settings.redis_flush_ms / 1000.0)

    progress = GroupLag(broker, settings.app_id, prefix, [t.RESOLVE])
    flushing = asyncio.ensure_future(flusher())
    await rt.start()
    await progress.start()
    try:
        deadline = time.monotonic() + 120 + len(reqs) / 200
        while True:
            done = await progress.committed()
            if done >= len(reqs):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"identity stage: {done} of {len(reqs)} committed")
            await asyncio.sleep(0.05)
        ended, cpu_end = time.perf_counter(), cpu_s()
    finally:
        stop.set()
        await flushing
        await writer.flush()
        await progress.stop()
        await rt.stop()
        await client.aclose()
        if pipelined is not None:
            await pipelined.close()
    began, cpu0 = first[0]
    took = ended - began
    return {
        "events": len(reqs), "seconds": round(took, 3), "rate": round(len(reqs) / took, 1),
        "cpu_pct_of_one_core": round(100 * (cpu_end - cpu0) / took, 1),
        "cpu_us_per_event": round(1e6 * (cpu_end - cpu0) / len(reqs), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--customers", default="10000,100000", help="comma-separated customer counts")
    p.add_argument("--events", type=int, default=60_000, help="workload records per run (the resolve requests are fewer)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args(argv)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cx-idmax-") as tmp, \
            EmbeddedBroker(Path(tmp) / "broker") as broker, EmbeddedRedis(Path(tmp) / "redis") as rds:
        for customers in (int(c) for c in args.customers.split(",")):
            reqs = requests(customers, args.events, args.seed)
            for rep in range(args.repeats):
                pure = resolver_pass(reqs)
                staged = asyncio.run(stage_run(broker.url, rds.url, reqs, f"{customers}r{rep}"))
                run = {"customers": customers, "repeat": rep, "resolver": pure, "stage": staged}
                print(f"{customers} customers, run {rep}: resolver {pure['rate']:.0f}/s ({pure['us_per_event']} µs), "
                      f"stage {staged['rate']:.0f}/s at {staged['cpu_pct_of_one_core']}% of a core "
                      f"({staged['cpu_us_per_event']} µs CPU/event); settled {pure['settled_share']:.1%}", flush=True)
                runs.append(run)
    best = max(runs, key=lambda r: r["stage"]["rate"])
    out = {
        "benchmark": "identity stage max rate on one core",
        "command": "bench/identity/max_rate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
        "stage_max_rate": best["stage"]["rate"],
        "method": {
            "resolver": "the pure Resolver over the decoded requests in memory (a dict store): its logic alone",
            "stage": "identity_agent.stage in a BatchRuntime in this process, the only stage, over requests produced "
                     "beforehand to cx.resolve.v1 (one partition); clock from its first record to the group's committed "
                     "offset reaching the end; CPU of this process over the same span",
            "settled_share": "events every identifier of which already had one owner (settled_owner on the index "
                             "before the event): what the fast path of docs/IDENTITY.md would not send to this stage",
        },
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
