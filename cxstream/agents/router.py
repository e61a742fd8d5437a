"""Router: one pure :class:`cxstream.routing.Router` per routing group, driven by ``cx.routing.v1``.

A batch stage (:mod:`cxstream.streams.batch`).  The topic is keyed by routing group, so
one worker owns each group and sees its inputs in one total order.  The router's state
is saved in the ``router_state`` table after a batch that touched the group (at most every
``CX_ROUTER_SAVE_INTERVAL_MS`` under load, at once when idle; the router's input offsets are not
committed past the last save), so a restarted worker resumes where it stopped, and outputs
carry deterministic ids for consumers to drop copies.  Each saved state carries the offset of the last input it
includes: an input redelivered after a crash (at-least-once) is recognised by its
offset and skipped.
The router's own bounded ring of event ids catches duplicates produced upstream.

A timer publishes :class:`RouterTick` records into the same topic so that SLA and
offer timers fire in a replayable order.  The tick's time is the group's event
clock advanced by the wall time elapsed since its last input.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import struct
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import msgspec
import orjson
import redis.asyncio as aioredis
from aiokafka.errors import KafkaError

from cxstream.routing import Router, RoutingConfig
from cxstream.schemas import Assignment, RouterInput, RouterTick
from cxstream.streams import metrics
from cxstream.streams import topics as t
from cxstream.streams.batch import BatchRuntime, BatchStage, Record
from cxstream.streams.codecs import InvalidInput, compress, decode, decompressed, encode
from cxstream.streams.keys import queues_key
from cxstream.streams.logs import OutageLog
from cxstream.streams.settings import Settings

log = logging.getLogger(__name__)

#: Routing events the customer's context hears about: the advisor's wrap-up (ground truth
#: for the learner), what the outreach triggers watch (abandoned contacts, breaches), and a
#: contact the router could not take (``rejected``: the context shows it, with the reason).
CUSTOMER_FACING = frozenset({"completed", "abandoned", "sla_breached", "rejected"})


_OFFSET = struct.Struct(">q")


def pack_saved(offset: int, state: bytes) -> bytes:
    """A table value: the input offset the state includes, then the state zstd-compressed.

    A group's state is mostly its advisors (~350 bytes of JSON each with what the router learned
    of their handle times: ~95 KB for 200); compressed it is about a quarter of that for the
    broker to store, compact and serve (docs/PERFORMANCE.md).

    >>> packed = pack_saved(41, b'{"advisors":[]}')
    >>> unpack_saved(packed), packed[8:12] == compress(b"")[:4]  # after the offset, a zstd frame
    ((41, b'{"advisors":[]}'), True)
    """
    return _OFFSET.pack(offset) + compress(state)


def unpack_saved(saved: bytes | None) -> tuple[int, bytes | None]:
    """(offset of the last input applied, state bytes); (-1, None) for a group never seen.

    A state saved uncompressed (by an engine before the compression) reads as it is."""
    if not saved:
        return -1, None
    return _OFFSET.unpack_from(saved)[0], decompressed(saved[_OFFSET.size :])


@dataclass
class RouterHost:
    """The routers this worker holds in memory, each with the table value it was last saved as."""

    config: RoutingConfig = field(default_factory=RoutingConfig)
    groups: dict[str, RoutingConfig] = field(default_factory=dict)  # per routing group, else ``config``
    routers: dict[str, tuple[bytes | None, Router]] = field(default_factory=dict)
    clocks: dict[str, tuple[float, float]] = field(default_factory=dict)  # group -> (event clock, wall at)

    def get(self, group: str, saved: bytes | None) -> Router:
        """A router restored from *saved* state bytes (a new one for None), with the group's configuration."""
        config = self.groups.get(group, self.config)
        if saved:
            router = Router.from_state(saved)
            router.reconfigure(config)  # the configuration in force wins over the one saved
        else:
            router = Router(group=group, config=config)
        return router

    def load(self, group: str, packed: bytes | None) -> Router:
        """The group's router as of the table value *packed* (:func:`pack_saved`); the one in memory if it is that value."""
        cached = self.routers.get(group)
        if cached is not None and cached[0] is packed:
            return cached[1]
        router = self.get(group, unpack_saved(packed)[1])
        self.routers[group] = (packed, router)
        return router

    def saved(self, group: str, router: Router, packed: bytes) -> None:
        self.routers[group] = (packed, router)
        self.touched(group, router)

    def touched(self, group: str, router: Router) -> None:
        """*router* of *group* applied inputs (saved or not): its clock ticks on from its event time now."""
        self.clocks[group] = (router.clock, time.time())

    def restored(self, group: str, packed: bytes) -> None:
        """This worker owns *group* again (its table partition was restored): its clock runs from now.

        So its timers (offer timeouts, SLA, escalation, holds) fire and its statistics reach Redis
        although no new record came for it: after a restart nothing else would start its ticks."""
        router = self.load(group, packed)
        self.clocks[group] = (router.clock, time.time())

    def dropped(self, group: str) -> None:
        """Another worker owns *group* now: stop ticking it, forget its router and stop exporting its statistics."""
        self.routers.pop(group, None)
        self.clocks.pop(group, None)
        forget_stats(group)

    def tick_time(self, group: str) -> float:
        clock, wall = self.clocks[group]
        return clock + max(0.0, time.time() - wall)


class RoutingConfigError(ValueError):
    """The routing configuration file cannot be used; the message says why."""


def host_from(settings: Settings) -> RouterHost:
    """Routers configured per routing group from ``CX_ROUTING_CONFIG_FILE`` (TOML or JSON).

    The file holds ``default`` and ``groups.NAME`` tables with the fields of
    :class:`cxstream.routing.RoutingConfig` (policy, SLA targets per channel, escalation,
    offer timeout, weights, ``intent_skills``...); a group not listed uses ``default``.
    """
    if not settings.routing_config_file:
        return RouterHost()
    path = Path(settings.routing_config_file)
    try:
        text = path.read_text()
        raw = tomllib.loads(text) if path.suffix == ".toml" else msgspec.json.decode(text)
        default = msgspec.convert(raw.get("default", {}), RoutingConfig)
        base = msgspec.to_builtins(default)
        groups = {name: msgspec.convert({**base, **cfg}, RoutingConfig) for name, cfg in raw.get("groups", {}).items()}
    except (OSError, ValueError, msgspec.ValidationError, AttributeError) as exc:
        raise RoutingConfigError(f"CX_ROUTING_CONFIG_FILE={path}: {exc}") from exc
    return RouterHost(config=default, groups=groups)


def publish_stats(group: str, stats: dict[str, Any]) -> None:
    """Export a group's live statistics as gauges (labels: routing group only)."""
    total = stats["total"]
    metrics.QUEUE_WAITING.labels(group).set(total.get("waiting") or 0)
    metrics.ADVISORS_AVAILABLE.labels(group).set(stats["advisors"]["available"])
    metrics.LONGEST_WAIT.labels(group).set(total.get("longest_wait_s") or 0)
    for gauge, key in (
        (metrics.SERVICE_LEVEL, "service_level"),
        (metrics.ASA, "asa_s"),
        (metrics.ABANDON_RATE, "abandon_rate"),
        (metrics.OCCUPANCY, "occupancy"),
    ):
        if total.get(key) is not None:
            gauge.labels(group).set(total[key])


#: The gauges :func:`publish_stats` sets per routing group.
GROUP_GAUGES = (
    metrics.QUEUE_WAITING, metrics.ADVISORS_AVAILABLE, metrics.LONGEST_WAIT, metrics.SERVICE_LEVEL, metrics.ASA,
    metrics.ABANDON_RATE, metrics.OCCUPANCY,
)


def forget_stats(group: str) -> None:
    """Remove a group's gauges (its new owner exports them): a stale copy here would count in every dashboard and alert."""
    for gauge in GROUP_GAUGES:
        with contextlib.suppress(KeyError):
            gauge.remove(group)


def stage(runtime: BatchRuntime, settings: Settings, host: RouterHost | None = None) -> tuple[BatchStage, RouterHost]:
    """The router stage and its table ``router_state`` (routing group -> offset + Router state).

    A group's state is saved whole (with the offset of the last input it includes), after a
    batch, at most every ``CX_ROUTER_SAVE_INTERVAL_MS`` while batches keep coming, and as soon as
    the loop finds nothing to fetch (``on_idle``).  Until it is saved, the runtime commits the
    router's input offsets only up to what the last save covers (``unsaved``), so a crash
    redelivers the inputs the saved state lacks.  Under exactly once it is saved after every
    batch (each batch is one transaction).
    """
    host = host or host_from(settings)
    table = runtime.table("router_state", settings.partitions)
    # Local delivery only while this worker is the only one: with several, another worker's
    # record could be applied after a local one it precedes in the log, and a replay of
    # cx.routing.v1 must reproduce every decision.
    st = runtime.stage("router", [t.ROUTING], tables=[table], local_when_alone=True)
    assignments = st.output(runtime.topic(t.ASSIGNMENTS))
    customer_events = st.output(runtime.topic(t.CUSTOMER_EVENTS))
    routing_events = st.output(runtime.topic(t.ROUTING_EVENTS))
    pending: dict[bytes, tuple[int, int, Router]] = {}  # group key -> (partition, last offset applied, router)
    every_s = 0.0 if settings.processing_guarantee == "exactly_once" else max(0, settings.router_save_interval_ms) / 1000.0
    last_save = 0.0
    duplicates = metrics.DUPLICATES.labels("router")
    assigned = functools.cache(metrics.ASSIGNMENTS.labels)  # children looked up once: labels() costs ~1.5 µs a call
    routing_events_of = functools.cache(metrics.ROUTING_EVENTS.labels)

    async def handle(rec: Record) -> None:
        if rec.key is None:
            raise InvalidInput("no_key", "a router input without a key (the routing group)")
        key = rec.key
        msg: RouterInput = decode(rec.value, RouterInput)
        group = key.decode()
        seen = pending.get(key)
        if seen is None:
            packed = table.get(key)
            applied = _OFFSET.unpack_from(packed)[0] if packed else -1
            r = host.load(group, packed)
        else:
            _, applied, r = seen
        if 0 <= rec.offset <= applied:  # redelivered after a crash: already applied and saved
            duplicates.inc()
            return
        outputs = r.apply(msg)
        # a record delivered locally (offset -1) leaves the saved offset alone: if it comes back
        # after a crash, the router's memory of input ids drops it
        pending[key] = (rec.partition, max(rec.offset, applied), r)
        now = time.time()
        for out in outputs:
            if isinstance(out, Assignment):
                await assignments.send(key=out.advisor_id.encode(), value=encode(out))
                await customer_events.send(key=out.customer_id.encode(), value=encode(out))
                assigned(out.channel).inc()
                lag = now - out.decided_at
                if 0 <= lag < 3600:
                    metrics.ROUTE_LATENCY.observe(lag)
            else:
                await routing_events.send(key=key, value=encode(out))
                routing_events_of(out.kind).inc()
                if out.customer_id and out.kind in CUSTOMER_FACING:
                    await customer_events.send(key=out.customer_id.encode(), value=encode(out))

    async def save() -> None:
        nonlocal last_save
        last_save = time.monotonic()
        for key, (partition, offset, r) in pending.items():
            packed = pack_saved(offset, r.to_state())
            table.partition = partition
            table[key] = packed
            host.saved(key.decode(), r, packed)
        pending.clear()

    async def after_batch() -> None:
        if pending and time.monotonic() - last_save < every_s:
            for key, (_, _, r) in pending.items():
                host.touched(key.decode(), r)
            st.unsaved = True
            return
        await save()
        st.unsaved = False

    def restored(partition: int, groups: Mapping[bytes, bytes]) -> None:
        for key, packed in groups.items():
            host.restored(key.decode(), packed)

    def dropped(partition: int, groups: Mapping[bytes, bytes]) -> None:
        for key in groups:
            host.dropped(key.decode())
        for key in [k for k, (p, _, _) in pending.items() if p == partition]:  # not ours to save any more
            host.dropped(key.decode())
            del pending[key]

    table.on_restored = restored
    table.on_dropped = dropped
    st.handler = handle
    st.on_batch = after_batch
    st.on_idle = save
    return st, host


def tick_timer(app: faust.App, runtime: BatchRuntime, settings: Settings, host: RouterHost, redis_client: aioredis.Redis | None) -> None:
    """The routers' clock on the Faust app: a :class:`RouterTick` per owned group into ``cx.routing.v1``.

    With *redis_client*, each tick also stores every owned group's live statistics in
    Redis (``cx:queues:{group}``, expiring after a minute), where any worker's
    ``GET /queues`` finds them.
    """
    routing = runtime.topic(t.ROUTING)
    outage = OutageLog(log, "router: queue statistics")
    broker_outage = OutageLog(log, "router: clock ticks", dependency="the broker")

    @app.timer(settings.tick_interval_s, name="cxstream.router.tick")
    async def tick() -> None:
        await tick_groups(host, runtime.send_now, routing, redis_client, outage, broker_outage)


async def tick_groups(
    host: RouterHost, send_now: Callable[[str, bytes, bytes], Awaitable[None]], routing: str, redis_client: aioredis.Redis | None,
    outage: OutageLog | None = None, broker_outage: OutageLog | None = None,
) -> None:
    """One tick of every group this worker owns: its statistics, and a :class:`RouterTick` sent with *send_now*.

    A group given up while the tick awaits a send (a rebalance drops it from *host*) is skipped:
    its KeyError stopped the whole engine (found by tests/integration/test_fuzz_engine.py).  A send
    that fails (the broker unreachable past ``CX_BROKER_OUTAGE_MAX_S``: the stages stop the engine)
    ends the tick: a clock must not crash the engine first.
    """
    snapshot = {}
    for group in list(host.clocks):
        entry = host.routers.get(group)
        if entry is None or group not in host.clocks:  # dropped by a rebalance during this tick
            continue
        stats = entry[1].stats()
        publish_stats(group, stats)
        snapshot[queues_key(group)] = orjson.dumps(stats)
        try:
            await send_now(routing, encode(RouterTick(routing_group=group, at=host.tick_time(group))), group.encode())
        except KafkaError as exc:
            if broker_outage is None:
                raise
            broker_outage.failed(exc)
            return
        if broker_outage is not None:
            broker_outage.ok()
    if redis_client is not None and snapshot:
        try:
            async with redis_client.pipeline(transaction=False) as pipe:
                for k, v in snapshot.items():
                    pipe.set(k, v, ex=60)
                await pipe.execute()
        except Exception as exc:  # the next tick retries; routing does not depend on it
            metrics.REDIS_ERRORS.inc()
            if outage is None:
                log.warning("could not store queue statistics in Redis: %r", exc)
            else:
                outage.failed(exc)
        else:
            if outage is not None:
                outage.ok()
