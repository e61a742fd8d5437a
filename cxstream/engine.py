"""The engine: one worker process with every stage, its HTTP API processes and, by default, its own servers.

``cxstream run`` builds an :class:`Engine` and calls :meth:`Engine.run`, which

1. starts the embedded broker and Redis unless ``CX_BROKER_URL`` / ``CX_REDIS_URL`` name real ones,
2. creates the catalogue's topics,
3. runs the batch stages of the hot path (ingest, identity, context, router:
   :mod:`cxstream.streams.batch`) and the Faust worker (the clocks) until
   SIGINT/SIGTERM, and beside them the learner's process (``cxstream learn``, :mod:`cxstream.agents.learnproc`)
   and ``CX_HTTP_WORKERS`` HTTP API processes (``cxstream serve``, :mod:`cxstream.serve.workers`),
   a heartbeat in Redis for their ``/healthz`` and a loopback endpoint for their ``/metrics`` and ``/livez``,
4. stops everything it started, in reverse order.

The HTTP API is not served from this process: a lookup costs the event loop ~0.5 ms and
would wait behind stream work (bench/results/performance-history.md, "The HTTP API in its own processes").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import faust
import redis.asyncio as aioredis
from mode import Service

from cxstream.agents import context as context_agent
from cxstream.agents import identity as identity_agent
from cxstream.agents import ingest as ingest_agent
from cxstream.agents import learner as learner_agent
from cxstream.agents import nba as nba_agent
from cxstream.agents import router as router_agent
from cxstream.agents.learnproc import LearnerProcess
from cxstream.agents.scoring import Scorer, language_detector
from cxstream.context import sentiment
from cxstream.context.language import LanguageDetector
from cxstream.serve.common import HEARTBEAT_EVERY_S, HEARTBEAT_TTL_S, heartbeat_key, heartbeat_value, resolve_api_keys
from cxstream.serve.http import ENGINE_ONLY
from cxstream.serve.loopback import LoopbackEndpoint
from cxstream.serve.workers import ApiWorkers
from cxstream.streams import metrics
from cxstream.streams.admin import ensure_topics
from cxstream.streams.app import Topics, bind_topics, create_app
from cxstream.streams.batch import BatchRuntime
from cxstream.streams.embedded import DataDirLock, EmbeddedBroker, EmbeddedRedis
from cxstream.streams.endpoints import remove_endpoints, update_endpoints, write_endpoints
from cxstream.streams.faust_stages import FaustStageRuntime
from cxstream.streams.logs import OutageLog, configure_logging
from cxstream.streams.looplag import LoopMonitor
from cxstream.streams.security import TransportError, check_kafka, check_redis, pipelined_redis, redis_pool
from cxstream.streams.settings import Settings, SettingsError

log = logging.getLogger("cxstream")


def page_urls(base: str, settings: Settings) -> str:
    """The web pages' addresses, as ``cxstream run`` prints them (keys are never printed: the pages ask for one).

    >>> print(page_urls("http://127.0.0.1:8080", Settings(api_keys="secret", data_dir="var")))
    pages: advisor desktop http://127.0.0.1:8080/desk (sign in with a desk key: POST /advisors/{id}/key, or an API key)
           supervisor wallboard http://127.0.0.1:8080/wallboard (an API key with the read scope)
           customer chat http://127.0.0.1:8080/chat (an API key with the advisor scope)
    >>> print(page_urls("http://h:1", Settings(data_dir="var")).splitlines()[-1])
           with no CX_API_KEYS: the generated key is in var/api-key; open a page as /wallboard#key=$(cat var/api-key)
    """
    text = (
        f"pages: advisor desktop {base}/desk (sign in with a desk key: POST /advisors/{{id}}/key, or an API key)\n"
        f"       supervisor wallboard {base}/wallboard (an API key with the read scope)\n"
        f"       customer chat {base}/chat (an API key with the advisor scope)"
    )
    if not settings.api_key_set:
        path = Path(settings.data_dir) / "api-key"
        text += f"\n       with no CX_API_KEYS: the generated key is in {path}; open a page as /wallboard#key=$(cat {path})"
    return text


def say(message: str) -> None:
    """A line for the operator on stdout (flushed: tests and supervisors read it live)."""
    print(f"cxstream: {message}", flush=True)


def process_age_s() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere since this module was imported)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks since boot
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()


def tune_gc() -> None:
    """Keep the cyclic garbage collector's full passes off the hot path.

    The long-lived objects built at start (models, routers, the libraries' own) are moved out
    of the collector's view (``gc.freeze``), and a generation-0 pass runs every 50,000 net
    allocations instead of 700, so a full pass is rare.  Our records are freed by reference
    counting; cycles still get collected, later.  Measured at 400 events/s offered
    (bench/results/performance-history.md): e2e p99 2.0-4.2 s -> 0.49 s, the slowest batch 250 -> 50 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    watch_gc()


def watch_gc() -> None:
    """Time every pass of the cyclic collector into ``cx_gc_pause_seconds{generation}`` (once per process).

    A pass stops every thread; these are the pauses a latency tail can be checked against.
    """
    if any(getattr(cb, "__name__", "") == "_gc_timer" for cb in gc.callbacks):
        return
    pause = [metrics.GC_PAUSE.labels(str(g)) for g in range(3)]
    started = [0.0]

    def _gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pause[info["generation"]].observe(time.perf_counter() - started[0])

    gc.callbacks.append(_gc_timer)


class Wiring:
    """The hot path's batch stages, the Faust app with the timers (and the learner), and the services around them.

    Ingest, identity, context and router are batch stages (:mod:`cxstream.streams.batch`); the
    clocks stay on Faust, and so does the learner (one partition), in a process of its own
    (:mod:`cxstream.agents.learnproc`) unless ``CX_LEARNER_PROCESS=0``.
    """

    def __init__(
        self, settings: Settings, broker_url: str, redis_url: str, languages: LanguageDetector | bool | None = True
    ) -> None:
        """*languages*: the message language detector (True: build the one ``CX_LANGUAGES`` asks for)."""
        self.settings = settings
        self.app = create_app(settings, broker_url)
        self.topics: Topics = bind_topics(self.app, settings)
        # A blocking pool: a burst of lookups waits for a connection instead of failing.
        # Socket timeouts: a Redis that hangs (rather than refusing connections) fails a call in
        # seconds instead of holding a timer (the router's clock, the learner's publication) forever.
        self.redis: aioredis.Redis = redis_pool(
            settings, redis_url, max_connections=128, timeout=5, socket_timeout=10, socket_connect_timeout=5
        )
        pipelined = pipelined_redis(settings, redis_url) if settings.redis_pipelined_writes else None
        self.writer = context_agent.RedisContextWriter(
            self.redis, settings.redis_ttl_s, pipelined=pipelined, max_pending=settings.redis_max_pending,
        )
        self.runtime: BatchRuntime | FaustStageRuntime
        if settings.stage_runtime == "faust":  # the benchmark's naive reference (faust_stages.py)
            self.runtime = FaustStageRuntime(self.app, settings)
        else:
            self.runtime = BatchRuntime(
                broker_url, settings, linger_ms=settings.producer_linger_ms, local_delivery=bool(settings.local_delivery),
                echo_linger_ms=settings.local_echo_linger_ms,
            )
        scorer = Scorer(
            language_detector(settings) if languages is True else languages or None,
            nba=nba_agent.NBA(
                nba_agent.config_from(settings), window_s=settings.nba_window_days * 86400.0, namespace=settings.topic_prefix
            ),
            namespace=settings.topic_prefix,  # the models of this engine's labels, not those of another on the same Redis
        )
        # the stages are declared on either runtime: FaustStageRuntime offers the methods the stage
        # functions call on a BatchRuntime (stage, output, table, topic, send_now), duck-typed
        runtime = cast(BatchRuntime, self.runtime)
        # in pipeline order: a fetched batch goes through them in this order
        ingest_agent.stage(runtime, settings)
        identity_agent.stage(runtime, self.writer)
        context_agent.stage(runtime, settings, self.writer, scorer)
        _, self.routers = router_agent.stage(runtime, settings)
        context_agent.timers(self.app, settings, self.writer, scorer)
        router_agent.tick_timer(self.app, runtime, settings, self.routers, self.redis)
        # the learner: in a child process of its own (EngineService starts it), or here with CX_LEARNER_PROCESS=0
        self.learner = None if settings.learner_process else learner_agent.register(self.app, self.topics, settings, self.redis)
        self.loop_monitor = LoopMonitor(stall_ms=settings.loop_stall_log_ms)  # cx_event_loop_lag_seconds

    async def start_stages(self, timeout_s: float = 60.0) -> None:
        """Start the batch stages and wait until they have their partitions (and their tables restored)."""
        sentiment.preload()  # before the first message, which would otherwise wait for the lexicon
        tune_gc()
        self.loop_monitor.start()
        await self.runtime.start()
        try:
            await asyncio.wait_for(self.runtime.ready.wait(), timeout_s)
        except TimeoutError:
            log.warning("the stream stages have no partition assignment after %.0f s; going on", timeout_s)

    async def stop_stages(self) -> None:
        await self.runtime.stop()
        await self.loop_monitor.stop()

    def failed_stage(self) -> BaseException | None:
        """The exception that ended the stages' loop, if it died."""
        task = self.runtime.task
        if task is not None and task.done() and not task.cancelled():
            return task.exception()
        return None


class EngineService(Service):
    """Beside the Faust worker: the HTTP API processes, the heartbeat they report, the metrics they proxy.

    Flushes the Redis write-behind on the way out.
    """

    def __init__(
        self,
        wiring: Wiring,
        api_keys: frozenset[str],
        broker_url: str,
        redis_url: str,
        on_ready: Any = None,
        on_stop: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.wiring = wiring
        self.serving = False
        self.heartbeat_key = heartbeat_key(wiring.settings.app_id)
        self.api_settings = wiring.settings.replace(broker_url=broker_url, redis_url=redis_url, api_keys=",".join(sorted(api_keys)))
        self.api: ApiWorkers | None = None
        self.learner: LearnerProcess | None = None
        self._metrics: LoopbackEndpoint | None = None
        self._beating: asyncio.Task[None] | None = None
        self.on_ready = on_ready
        self.on_stopping = on_stop
        self.failed = False

    def _learner_metrics_url(self) -> str | None:
        return self.learner.metrics_url if self.learner is not None else None

    def health(self) -> dict[str, Any]:
        """The heartbeat's details: ``/healthz`` shows them (the broker's state does not make it unhealthy:
        lookups still work while it is away; docs/OPERATIONS.md, "Outages")."""
        down = self.wiring.runtime.broker_down_since
        broker = "ok" if down is None else f"unreachable for {time.time() - down:.0f} s: stages and desk actions wait for it"
        return {"engine_pid": os.getpid(), "pending_redis_writes": self.wiring.writer.pending, "broker": broker}

    async def beat(self, state: str) -> None:
        """Write the heartbeat ``/healthz`` reads (``cx:engine:heartbeat:{app_id}``, TTL 10 s)."""
        value = heartbeat_value(state, **self.health())
        await self.wiring.redis.set(self.heartbeat_key, value, px=int(HEARTBEAT_TTL_S * 1000))

    async def _heartbeat(self) -> None:
        outage = OutageLog(log, "engine heartbeat")
        while True:
            failed = self.wiring.failed_stage()
            if failed is not None:  # a stage's loop died (the broker refused our output): stop, do not limp on
                log.critical("a stream stage stopped: %r; stopping the engine", failed, exc_info=failed)
                self.failed = True
                with contextlib.suppress(Exception):
                    await self.beat("failed")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                await self.beat("ok" if self.serving else "starting")
            except Exception as exc:  # Redis is down: /healthz says so; keep trying
                outage.failed(exc)
            else:
                outage.ok()
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    async def on_started(self) -> None:
        self._beating = asyncio.ensure_future(self._heartbeat())
        await self.wiring.start_stages()
        if self.wiring.settings.learner_process:
            self.learner = LearnerProcess(self.api_settings, say=say)
            await self.learner.start()
            say(f"learner in its own process, pid {self.learner.pids[0]}")
        # The engine's metrics for the API's /metrics, and its liveness for /livez: a loopback endpoint
        # answered by this event loop, the render cut into slices (cxstream/serve/loopback.py).
        endpoint = LoopbackEndpoint(
            ENGINE_ONLY, learner_url=self._learner_metrics_url if self.learner is not None else None, keep=ENGINE_ONLY.keep
        )
        await endpoint.start()
        self._metrics = endpoint
        self.api = ApiWorkers(self.api_settings, engine_metrics_url=endpoint.url, say=say)
        await self.api.start()
        self.serving = True
        with contextlib.suppress(Exception):
            await self.beat("ok")  # before Faust reports Ready: /healthz answers ok from then on
        n = len(self.api.pids)
        say(
            f"HTTP API on {self.api.url} (GET /healthz, /metrics, /customers/{{id}}/context, /queues; "
            f"{n} process{'es' if n > 1 else ''}, pid {', '.join(map(str, self.api.pids))}); "
            f"ready {process_age_s():.1f} s after the process started"
        )
        say(page_urls(self.api.url, self.wiring.settings))
        update_endpoints(self.wiring.settings, http_url=self.api.url)  # for commands run beside it
        if self.on_ready is not None:
            await self.on_ready()

    async def on_stop(self) -> None:
        self.serving = False
        if self.on_stopping is not None:
            await self.on_stopping()
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(BaseException):
                await self._beating
        with contextlib.suppress(Exception):
            await self.beat("stopping")
        if self.api is not None:
            await self.api.stop()
        if self.learner is not None:
            await self.learner.stop()
        with contextlib.suppress(Exception):
            await self.wiring.stop_stages()
        if self._metrics is not None:
            endpoint, self._metrics = self._metrics, None
            with contextlib.suppress(Exception):
                await endpoint.stop()
        with contextlib.suppress(Exception):
            await self.wiring.writer.flush()
        with contextlib.suppress(Exception):
            if self.wiring.writer.pipelined is not None:
                await self.wiring.writer.pipelined.close()
        with contextlib.suppress(Exception):
            await self.wiring.redis.aclose()


class Engine:
    """Everything one worker process runs."""

    def __init__(self, settings: Settings, *, demo: bool = False) -> None:
        self.settings = settings
        self.demo = demo

    @contextlib.contextmanager
    def servers(self) -> Iterator[tuple[str, str]]:
        """Start the embedded broker/Redis that are needed; yield (broker_url, redis_url).

        Their data lives under ``CX_DATA_DIR``, which one engine holds at a time (a lock file).
        """
        s = self.settings
        with contextlib.ExitStack() as stack:
            broker_url, redis_url = s.broker_url, s.redis_url
            if s.embedded_broker or s.embedded_redis:
                stack.enter_context(DataDirLock(s.path()))
            if s.embedded_broker:
                broker = stack.enter_context(EmbeddedBroker(s.path("broker"), heap_mb=s.embedded_broker_heap_mb, gc=s.embedded_broker_gc))
                broker_url = broker.url
                zk, kafka = broker.pids
                say(
                    f"embedded broker (Apache Kafka 2.3) pid {kafka} on {broker_url}, its zookeeper pid {zk}; "
                    f"ready in {broker.ready_s:.1f} s, data in {broker.data_dir}"
                )
            if s.embedded_redis:
                redis_server = stack.enter_context(EmbeddedRedis(s.path("redis"), cpu_slice_us=s.latency_slice_us))
                redis_url = redis_server.url
                say(f"embedded redis pid {redis_server.pid} on {redis_url}")
            write_endpoints(s, broker_url, redis_url)
            try:
                yield broker_url, redis_url
            finally:
                remove_endpoints(s)
            say("stopping embedded servers")

    def api_keys(self) -> frozenset[str]:
        return resolve_api_keys(self.settings, say)

    def run(self) -> int:
        """Run until SIGINT/SIGTERM; returns the exit code."""
        try:  # the language detector's model loads before anything starts; a bad CX_LANGUAGES fails at once
            languages = language_detector(self.settings)
        except SettingsError as exc:
            print(f"cxstream: {exc}", file=sys.stderr)
            return 2
        configure_logging(self.settings.log_level)
        loop = new_event_loop(self.settings.event_loop)
        asyncio.set_event_loop(loop)
        code = 0
        try:
            with self.servers() as (broker_url, redis_url):
                try:  # a refused certificate or password stops the engine here, saying which setting to check
                    loop.run_until_complete(check_kafka(broker_url, self.settings))
                    loop.run_until_complete(check_redis(self.settings, redis_url))
                except TransportError as exc:
                    say(str(exc))
                    return 1
                loop.run_until_complete(ensure_topics(broker_url, self.settings, prefix=self.settings.topic_prefix))
                wiring = Wiring(self.settings, broker_url, redis_url, languages=languages)
                on_ready = on_stop = None
                if self.demo:
                    from cxstream.replay.demo import install_demo

                    on_ready, on_stop = install_demo(wiring)
                service = EngineService(
                    wiring, self.api_keys(), broker_url, redis_url, on_ready=on_ready, on_stop=on_stop, loop=loop
                )
                worker = faust.Worker(
                    wiring.app, service, loop=loop, loglevel=self.settings.log_level, redirect_stdouts=False
                )
                try:
                    worker.execute_from_commandline()
                except SystemExit as exc:
                    code = int(exc.code or 0)
                if service.failed:
                    code = code or 1
        finally:
            with contextlib.suppress(Exception):
                loop.close()
            say("stopped")
        return code


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """The engine's event loop: ``uvloop`` (``CX_EVENT_LOOP``, the default) or the standard library's ``asyncio``.

    The engine is a few hundred network round trips a second even at low rates (a fetch and a
    produce request per hop, Redis writes): on libuv's loop and transports it drained 9 % faster
    than on the standard library's selector loop in alternated runs, with no clear difference in
    latency (docs/PERFORMANCE.md).

    >>> loops = [new_event_loop(kind) for kind in ("uvloop", "asyncio")]
    >>> [type(loop).__module__.split(".")[0] for loop in loops]
    ['uvloop', 'asyncio']
    >>> for loop in loops:
    ...     loop.close()
    """
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main_run(settings: Settings, demo: bool) -> int:
    return Engine(settings, demo=demo).run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_run(Settings.from_env(), demo="--demo" in sys.argv))
