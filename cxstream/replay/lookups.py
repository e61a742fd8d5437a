"""Open-loop load on ``GET /customers/{id}/context``, run in its own process by the pipeline bench.

Each request has a planned time (``rate`` per second from ``start_at``); its latency
is measured from that planned time to the end of the response, so a slow server (or
a late client) shows as latency, not as a lower rate.  The first ``warmup_s`` are
discarded.  Prints one JSON object: counts by status and p50/p95/p99/p99.9/max (ms).

    python -m cxstream.replay.lookups --url http://127.0.0.1:PORT --key KEY --rate 1000 --duration 20 --customers 10000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence

import aiohttp
import orjson

from cxstream.replay.publish import LatencySummary
from cxstream.replay.workload import customer_ref


async def run_lookups(
    url: str, key: str, rate: float, duration_s: float, customers: int, seed: int = 11,
    start_at: float | None = None, warmup_s: float = 1.0, max_outstanding: int = 512,
) -> dict[str, object]:
    """Send ``rate * duration_s`` lookups open-loop; returns the summary dict."""
    rng = random.Random(seed)
    n = int(rate * duration_s)
    latencies: list[float] = []
    late: list[float] = []
    status: Counter[str] = Counter()
    outstanding: set[asyncio.Task[None]] = set()
    skipped = 0
    conn = aiohttp.TCPConnector(limit=64, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=5.0)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout, headers={"X-API-Key": key}) as session:
        t0 = start_at if start_at is not None else time.time() + 0.2
        measure_from = t0 + warmup_s

        async def one(planned: float, cid: str) -> None:
            try:
                async with session.get(f"{url}/customers/{cid}/context") as resp:
                    await resp.read()
                    code = str(resp.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                code = type(exc).__name__
            if planned >= measure_from:
                latencies.append(time.time() - planned)
                status[code] += 1

        for i in range(n):
            planned = t0 + i / rate
            delay = planned - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if planned >= measure_from:
                late.append(max(0.0, time.time() - planned))
            if len(outstanding) >= max_outstanding:  # the server is far behind: count, do not pile up
                skipped += 1
                continue
            task = asyncio.ensure_future(one(planned, customer_ref(rng.randrange(customers))))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
        if outstanding:
            await asyncio.wait(outstanding, timeout=10.0)
    summary = LatencySummary.of(latencies).as_dict()
    lateness = LatencySummary.of(late)
    return {
        "planned": n,
        "measured": len(latencies),
        "rate": rate,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "status": dict(status),
        "skipped_overload": skipped,
        **{f"{k}": v for k, v in summary.items() if k != "count"},
        "client_send_lag_p99_ms": lateness.p99_ms,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cxstream.replay.lookups", description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--customers", type=int, required=True)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--start-at", type=float, default=None, help="epoch seconds of the first planned request")
    p.add_argument("--warmup", type=float, default=1.0)
    a = p.parse_args(argv)
    result = asyncio.run(
        run_lookups(a.url, a.key, a.rate, a.duration, a.customers, a.seed, start_at=a.start_at, warmup_s=a.warmup)
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
