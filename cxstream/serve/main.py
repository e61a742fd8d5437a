"""``cxstream serve``: one HTTP API process, off the engine's event loop.

It runs :func:`cxstream.serve.http.build_app` against Redis (one connection pool per
process) and, for erasure requests, a producer to the broker.  Several processes share
``CX_HTTP_HOST:CX_HTTP_PORT`` through SO_REUSEPORT, so ``cxstream run`` starts
``CX_HTTP_WORKERS`` of them (:mod:`cxstream.serve.workers`); one can also run it by hand
next to an engine, pointed at the same Redis and broker (``CX_REDIS_URL``,
``CX_BROKER_URL``; ``CX_APP_ID`` names the engine whose heartbeat ``/healthz`` reads).

Options used by ``cxstream run`` for its children:

* ``--ready-fd N``: when listening, write one JSON line (``pid``, ``port``, ``probe_port``)
  to descriptor N and close it; ``probe_port`` is a private loopback port of this very
  process, for per-process health checks.
* ``--parent-pid P``: exit when process P (the engine) dies, even by ``kill -9``
  (``PR_SET_PDEATHSIG``).
* ``--engine-metrics URL``: where ``/metrics`` fetches the engine's metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys

import orjson

from cxstream.serve.common import resolve_api_keys
from cxstream.serve.erasure import ErasureRequests, KafkaErasurePublisher
from cxstream.serve.feed import LiveFeed
from cxstream.serve.http import EngineMetrics, HttpServer, build_app
from cxstream.serve.lookupcache import Invalidations, LookupCache
from cxstream.serve.publish import KafkaPublisher
from cxstream.streams.cpuslice import apply_latency_slice
from cxstream.streams.logs import configure_logging
from cxstream.streams.security import pipelined_redis, redis_pool
from cxstream.streams.settings import Settings

log = logging.getLogger("cxstream.serve")


def die_with(parent_pid: int) -> None:
    """Get SIGKILL when the process that started us dies (Linux), as the embedded servers do; exit now if it already has.

    (The engine stops its API processes with SIGTERM; this is for an engine that died without doing so.)
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it died before prctl took effect
        raise SystemExit(0)


def lookup_cache(settings: Settings) -> tuple[LookupCache, Invalidations] | None:
    """The process's context lookup cache and the connection that keeps it fresh (None: ``CX_LOOKUP_CACHE_MB=0``)."""
    if settings.lookup_cache_mb <= 0:
        return None
    cache = LookupCache(int(settings.lookup_cache_mb * 1024 * 1024), settings.lookup_cache_max_age_s)
    return cache, Invalidations(cache, lambda on_message: pipelined_redis(settings, on_message=on_message, reconnect=False))


async def serve(settings: Settings, *, ready_fd: int | None = None, engine_metrics_url: str | None = None, reuse_port: bool = True) -> None:
    """Serve until SIGTERM/SIGINT."""
    # one blocking pool per process: a burst waits for a connection instead of failing
    client = redis_pool(settings, max_connections=settings.http_redis_connections)
    publisher = KafkaErasurePublisher(settings) if settings.broker_url else None
    engine_metrics = EngineMetrics(engine_metrics_url) if engine_metrics_url else None
    desk_publisher = KafkaPublisher(settings) if settings.broker_url else None
    feed = LiveFeed(settings) if settings.broker_url else None
    app = build_app(
        client, resolve_api_keys(settings, lambda m: print(f"cxstream serve: {m}", flush=True)), settings.app_id,
        erasure=ErasureRequests(publisher, client) if publisher is not None else None, engine_metrics=engine_metrics,
        pipelined=pipelined_redis(settings) if settings.http_pipelined_lookups else None, lookup_cache=lookup_cache(settings),
        publisher=desk_publisher, feed=feed, advisor_key_secret=settings.advisor_key_secret, model_namespace=settings.topic_prefix,
    )
    server = HttpServer(app, settings.http_host, settings.http_port, reuse_port=reuse_port, probe_host="127.0.0.1",
                        lookup_front=bool(settings.http_lookup_front))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    connecting = None
    try:
        await server.start()
        if publisher is not None:
            connecting = asyncio.ensure_future(publisher.start())
        log.info("HTTP API pid %d listening on %s (probe port %s)", os.getpid(), server.url, server.probe_port)
        if ready_fd is not None:
            with os.fdopen(ready_fd, "wb") as ready:
                ready.write(orjson.dumps({"pid": os.getpid(), "port": server.port, "probe_port": server.probe_port}) + b"\n")
        await stop.wait()
    finally:
        await server.stop()
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
        if publisher is not None:
            with contextlib.suppress(Exception):
                await publisher.stop()
        if engine_metrics is not None:
            await engine_metrics.close()
        with contextlib.suppress(Exception):
            await client.aclose()


def main_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point of ``cxstream serve`` (arguments: ``engine_metrics``, ``ready_fd``, ``parent_pid``; see ``cxstream.cli``)."""
    if args.parent_pid is not None:
        die_with(args.parent_pid)
    configure_logging(settings.log_level)
    apply_latency_slice(settings.latency_slice_us, "HTTP API process")  # before uvloop's threads: they inherit it
    if not settings.redis_url:
        print("cxstream serve: no Redis: set CX_REDIS_URL (cxstream run passes its own)", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - it is a dependency
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(settings, ready_fd=args.ready_fd, engine_metrics_url=args.engine_metrics))
    except OSError as exc:
        print(f"cxstream serve: cannot listen on {settings.http_host}:{settings.http_port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    from cxstream.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
