"""The engine: one worker process with every stage, its HTTP API and, by default, its own servers.

``cxstream run`` builds an :class:`Engine` and calls :meth:`Engine.run`, which

1. starts the embedded broker and Redis unless ``CX_BROKER_URL`` / ``CX_REDIS_URL`` name real ones,
2. creates the catalogue's topics,
3. runs the Faust worker (ingest, context, router agents) and the HTTP API until SIGINT/SIGTERM,
4. stops everything it started, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import redis.asyncio as aioredis
from mode import Service

from cxstream.agents import context as context_agent
from cxstream.agents import erasure as erasure_agent
from cxstream.agents import identity as identity_agent
from cxstream.agents import ingest as ingest_agent
from cxstream.agents import router as router_agent
from cxstream.serve.http import HttpServer, build_app
from cxstream.streams.admin import ensure_topics
from cxstream.streams.app import Topics, bind_topics, create_app
from cxstream.streams.embedded import EmbeddedBroker, EmbeddedRedis
from cxstream.streams.settings import Settings

log = logging.getLogger("cxstream")


def say(message: str) -> None:
    """A line for the operator on stdout (flushed: tests and supervisors read it live)."""
    print(f"cxstream: {message}", flush=True)


class Wiring:
    """The Faust app with every agent registered, plus the services around it."""

    def __init__(self, settings: Settings, broker_url: str, redis_url: str) -> None:
        self.settings = settings
        self.app = create_app(settings, broker_url)
        self.topics: Topics = bind_topics(self.app, settings)
        # A blocking pool: a burst of lookups waits for a connection instead of failing.
        self.redis = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=128, timeout=5))
        self.writer = context_agent.RedisContextWriter(self.redis, settings.redis_ttl_s)
        ingest_agent.register(self.app, self.topics, settings)
        self.identity_table = identity_agent.register(self.app, self.topics, settings, self.writer)
        resolve = identity_agent.identity_topics(self.app, settings).resolve
        self.erasure = erasure_agent.ErasureRequests(lambda k, v: resolve.send(key=k, value=v), self.redis)
        self.context_table = context_agent.register(self.app, self.topics, settings, self.writer)
        self.routers = router_agent.register(self.app, self.topics, settings, self.redis)


class EngineService(Service):
    """Runs the HTTP API beside the Faust worker and flushes Redis on the way out."""

    def __init__(
        self, wiring: Wiring, api_keys: frozenset[str], on_ready: Any = None, on_stop: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.wiring = wiring
        self.serving = False
        self.http = HttpServer(
            build_app(wiring.redis, api_keys, self.health, erasure=wiring.erasure),
            wiring.settings.http_host,
            wiring.settings.http_port,
        )
        self.on_ready = on_ready
        self.on_stopping = on_stop

    def health(self) -> dict[str, Any]:
        return {"engine": "ok" if self.serving else "starting", "pending_redis_writes": self.wiring.writer.pending}

    async def on_started(self) -> None:
        await self.http.start()
        self.serving = True
        say(f"HTTP API on {self.http.url} (GET /healthz, /metrics, /customers/{{id}}/context)")
        if self.on_ready is not None:
            await self.on_ready()

    async def on_stop(self) -> None:
        self.serving = False
        if self.on_stopping is not None:
            await self.on_stopping()
        await self.http.stop()
        with contextlib.suppress(Exception):
            await self.wiring.writer.flush()
        with contextlib.suppress(Exception):
            await self.wiring.redis.aclose()


class Engine:
    """Everything one worker process runs."""

    def __init__(self, settings: Settings, *, demo: bool = False) -> None:
        self.settings = settings
        self.demo = demo

    @contextlib.contextmanager
    def servers(self) -> Iterator[tuple[str, str]]:
        """Start the embedded broker/Redis that are needed; yield (broker_url, redis_url)."""
        s = self.settings
        with contextlib.ExitStack() as stack:
            broker_url, redis_url = s.broker_url, s.redis_url
            if s.embedded_broker:
                broker = stack.enter_context(EmbeddedBroker(s.path("broker")))
                broker_url = broker.url
                say(f"embedded broker (Tansu) pid {broker.pid} on {broker_url}")
            if s.embedded_redis:
                redis_server = stack.enter_context(EmbeddedRedis(s.path("redis")))
                redis_url = redis_server.url
                say(f"embedded redis pid {redis_server.pid} on {redis_url}")
            yield broker_url, redis_url
            say("stopping embedded servers")

    def api_keys(self) -> frozenset[str]:
        keys = self.settings.api_key_set
        if keys:
            return keys
        path = Path(self.settings.data_dir) / "api-key"
        if path.exists():
            key = path.read_text().strip()
        else:
            key = secrets.token_urlsafe(24)
            self.settings.path()
            path.write_text(key + "\n")
            os.chmod(path, 0o600)
        say(f"no CX_API_KEYS set: generated API key in {path}: {key}")
        return frozenset({key})

    def run(self) -> int:
        """Run until SIGINT/SIGTERM; returns the exit code."""
        logging.basicConfig(level=self.settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        code = 0
        try:
            with self.servers() as (broker_url, redis_url):
                loop.run_until_complete(ensure_topics(broker_url, self.settings, prefix=self.settings.topic_prefix))
                wiring = Wiring(self.settings, broker_url, redis_url)
                on_ready = on_stop = None
                if self.demo:
                    from cxstream.replay.demo import install_demo

                    on_ready, on_stop = install_demo(wiring)
                service = EngineService(wiring, self.api_keys(), on_ready=on_ready, on_stop=on_stop, loop=loop)
                worker = faust.Worker(
                    wiring.app, service, loop=loop, loglevel=self.settings.log_level, redirect_stdouts=False
                )
                try:
                    worker.execute_from_commandline()
                except SystemExit as exc:
                    code = int(exc.code or 0)
        finally:
            with contextlib.suppress(Exception):
                loop.close()
            say("stopped")
        return code


def main_run(settings: Settings, demo: bool) -> int:
    return Engine(settings, demo=demo).run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_run(Settings.from_env(), demo="--demo" in sys.argv))
