"""Fault injection and accounting by event id: the parts of ``make chaos`` (bench/chaos/chaos.py) and its tests.

* :class:`Servers`: the engine's own embedded ZooKeeper + Apache Kafka and Redis
  (:mod:`cxstream.streams.embedded`) on fixed ports and data folders, so the broker or Redis
  can be stopped and started again where the engines expect them.
* :class:`Workers`: engine worker processes (``python -m cxstream.cli run``, one consumer
  group), each can be ``kill -9``-ed and started again.
* :class:`Traffic`: the channel systems and advisor desktops.  It publishes input records and
  keeps, by event id, every one the broker acknowledged (a record whose send failed is sent
  again, as a channel system would); it reads every assignment and answers it like a desktop
  (:func:`cxstream.replay.desktop.respond`: accept, complete, close), through the same tracked
  producer; and it samples the workers' lag (``cx_consumer_lag_records``) and RSS.
* :func:`account`: after the engine caught up, each acknowledged input is

  - *processed*: a customer event (interaction or outcome) whose id is in its customer's
    context (the dedupe ring ``recent_event_ids`` of the Redis copy of the ``customer_context``
    table); an advisor event whose id is on ``cx.routing.v1`` (ingest's output) below the
    offset the stages' consumer group committed there (the router finished it);
  - *dead-lettered* (if not processed): its id is in the raw payload of a ``cx.dead-letter.v1`` record;
  - else *lost*.

  and each context is checked for counting twice (``interactions_total`` against the
  interaction ids in its ring), and ``cx.assignments.v1`` for contacts assigned twice (two
  assignment ids for one contact with no offer timeout, rejection or transfer between them).
* :func:`left_open`: each contact a desktop completed (its ``contact_completed`` acknowledged)
  must have ended at the router: a ``completed`` or ``abandoned`` event on ``cx.routing-events.v1``.
  An advisor event on ``cx.routing.v1`` below the committed offset counts as processed even if
  the router dropped what it had applied (the rebalance defect of December 7: the advisor left
  busy for good); this looks at what the router did instead.

The ring is bounded (``CX_DEDUPE_IDS_PER_CUSTOMER``, 64 by default): the harness raises it so
that no customer's ring overflows in a run, and reports customers whose ring is full (their
events that fell out of it are *unverified*, not processed nor lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cxstream.bench.loadgen import API_KEY, EngineProc, Options, parse_metrics, start_engine, stop_process, wait_ready
from cxstream.context.model import context_json
from cxstream.replay.desktop import DesktopProfile, respond
from cxstream.replay.publish import read_to_end
from cxstream.replay.recording import Planned
from cxstream.schemas import AdvisorEvent, Assignment, InteractionEvent
from cxstream.streams import topics as t
from cxstream.streams.admin import partitions_of
from cxstream.streams.embedded import EmbeddedKafka, EmbeddedRedis, EmbeddedZooKeeper, free_port, kafka_home

#: Event kinds the accounting tells apart (what proves each was processed differs).
CUSTOMER, ADVISOR = "customer", "advisor"


def log(msg: str) -> None:
    print(f"chaos: {msg}", flush=True)


# --------------------------------------------------------------------------- servers
class Servers:
    """ZooKeeper + Kafka and Redis under *base*, on ports fixed at the first start, each stoppable and restartable."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self.home = kafka_home()
        self.zk = EmbeddedZooKeeper(self.base / "broker" / "zookeeper", home=self.home)
        self.kafka_port = free_port()
        self.kafka: EmbeddedKafka | None = None
        self.redis_port = free_port()
        self.redis: EmbeddedRedis | None = None

    @property
    def broker_url(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start(self) -> None:
        self.zk.start(60)
        self.start_broker()
        self.start_redis()

    def start_broker(self, timeout: float = 120.0) -> float:
        """Start Kafka on its port and data; returns the seconds until it answered with every partition led."""
        began = time.monotonic()
        self.zk.wait_ephemeral_gone(b"/brokers/ids/0", 30)
        self.kafka = EmbeddedKafka(self.base / "broker" / "kafka", self.zk.url, port=self.kafka_port, home=self.home)
        self.kafka.start(timeout)
        return time.monotonic() - began

    def stop_broker(self) -> None:
        """A clean stop of the Kafka broker (SIGTERM: it writes its checkpoints); ZooKeeper runs on."""
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None

    def start_redis(self, timeout: float = 60.0) -> float:
        began = time.monotonic()
        self.redis = EmbeddedRedis(self.base / "redis", port=self.redis_port)
        self.redis.start(timeout)
        return time.monotonic() - began

    def stop_redis(self) -> None:
        """A clean stop of Redis (SIGTERM: it fsyncs its append-only file)."""
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def stop(self) -> None:
        self.stop_redis()
        self.stop_broker()
        self.zk.stop()


# --------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class Endpoints:
    """Where servers started elsewhere listen (what :class:`Workers` needs of :class:`Servers`)."""

    broker_url: str
    redis_url: str


class Workers:
    """*n* engine workers of one consumer group (one topic prefix, one app id) on :class:`Servers` (or :class:`Endpoints`)."""

    def __init__(self, servers: Servers | Endpoints, base: Path, n: int, *, prefix: str, app_id: str, partitions: int = 4,
                 env: dict[str, str] | None = None, engine_src: str | None = None) -> None:
        self.servers = servers
        self.base = Path(base)
        self.prefix = prefix
        self.app_id = app_id
        self.opts = Options(partitions=partitions, engine_env=dict(env or {}), engine_src=engine_src)  # engine_src: another tree's engine
        self.procs: list[EngineProc | None] = [None] * n
        self.starts = [0] * n
        _ALL_WORKERS.append(self)

    def start(self, i: int, *, wait: bool = True) -> EngineProc:
        self.starts[i] += 1
        e = start_engine(self.servers.broker_url, self.servers.redis_url, self.base / f"worker{i}-run{self.starts[i]}",
                         self.prefix, self.app_id, self.opts)
        self.procs[i] = e
        if wait:
            wait_ready([e], timeout=180)
        return e

    def start_all(self, timeout: float = 180.0) -> None:
        """Every worker started at once, then waited for (:class:`~cxstream.streams.logs.EngineNotReady` after *timeout* s)."""
        for i in range(len(self.procs)):
            self.start(i, wait=False)
        wait_ready(self.live(), timeout=timeout)

    def live(self) -> list[EngineProc]:
        return [e for e in self.procs if e is not None and e.proc.poll() is None]

    def kill_9(self, i: int) -> None:
        e = self.procs[i]
        assert e is not None
        os.kill(e.proc.pid, signal.SIGKILL)
        e.proc.wait(30)
        self.procs[i] = None

    def signal_all(self, sig: int) -> None:
        for e in self.live():
            os.kill(e.proc.pid, sig)

    def stop(self) -> None:
        for e in self.live():
            stop_process(e.proc)


_ALL_WORKERS: list[Workers] = []


def kill_all_workers() -> None:
    """SIGKILL to every worker started here (when the harness itself is told to stop: they are not its servers,
    which die with it, but processes of their own)."""
    for w in _ALL_WORKERS:
        for e in w.live():
            with contextlib.suppress(ProcessLookupError):
                os.kill(e.proc.pid, signal.SIGKILL)


# --------------------------------------------------------------------------- traffic
@dataclass
class Sample:
    """One observation of the workers: lag from their ``/metrics`` (None: none answered) and RSS (MB) per live worker."""

    at: float
    lag: float | None
    rss_mb: list[float]


@dataclass
class Traffic:
    """The channel systems and desktops around running workers; everything acknowledged is kept by event id."""

    bootstrap: str
    prefix: str
    desktop: DesktopProfile = field(default_factory=lambda: DesktopProfile(ring_s=(0.05, 0.3), time_scale=0.2))
    answer: bool = True
    acked: dict[str, str] = field(default_factory=dict)  # event id -> CUSTOMER | ADVISOR
    interactions: set[str] = field(default_factory=set)  # the acknowledged ids that are interactions (counted in contexts)
    resent: int = 0  # sends that failed and were sent again
    copies: int = 0  # records acknowledged more than once (replays, re-sends)
    contact_planned: dict[str, float] = field(default_factory=dict)  # contact id -> planned time of contact_opened
    contact_opened: dict[str, InteractionEvent] = field(default_factory=dict)  # contact id -> its contact_opened
    completed: set[str] = field(default_factory=set)  # contacts whose contact_completed (a desktop's) was acknowledged
    first_assignment: dict[str, float] = field(default_factory=dict)  # contact id -> wall time it was first read
    first_waited: dict[str, float] = field(default_factory=dict)  # contact id -> its first assignment's waited_s (router time)
    assignments: list[Assignment] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=2, acks="all", max_batch_size=65536,
                                         request_timeout_ms=180_000, retry_backoff_ms=500)
        self._tasks: list[asyncio.Task[Any]] = []
        self._pending: set[asyncio.Future[Any]] = set()
        self._desk: list[tuple[float, int, Planned]] = []
        self._seq = 0
        self._stop = asyncio.Event()

    async def start(self, workers: Workers | None = None) -> None:
        await self.producer.start()
        self._tasks = [asyncio.ensure_future(self._watch()), asyncio.ensure_future(self._desktops())]
        if workers is not None:
            self._tasks.append(asyncio.ensure_future(self._sample(workers)))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.producer.stop()

    def topic(self, name: str) -> str:
        return self.prefix + name

    # ---- publishing
    async def send(self, p: Planned) -> None:
        """Publish *p*; once acknowledged its event id is kept; a failed send is sent again until acknowledged."""
        fut = await self.producer.send(self.topic(p.topic), p.value, key=p.key)
        task = asyncio.ensure_future(self._settle(p, fut))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(self, p: Planned, fut: asyncio.Future[Any]) -> None:
        while True:
            try:
                await fut
                break
            except Exception as exc:
                self.resent += 1
                log(f"send of {p.topic} failed ({type(exc).__name__}); sending it again")
                await asyncio.sleep(1.0)
                fut = await self.producer.send(self.topic(p.topic), p.value, key=p.key)
        if p.record is not None:
            eid = p.record.event_id
            if eid in self.acked:
                self.copies += 1
            self.acked[eid] = ADVISOR if isinstance(p.record, AdvisorEvent) else CUSTOMER
            if isinstance(p.record, AdvisorEvent) and p.record.kind == "contact_completed" and p.record.contact_id:
                self.completed.add(p.record.contact_id)
            if isinstance(p.record, InteractionEvent):
                self.interactions.add(eid)

    async def flush(self, timeout: float = 600.0) -> None:
        """Wait until every record sent so far is acknowledged."""
        deadline = time.monotonic() + timeout
        while self._pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._pending)} sends not acknowledged in {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def send_all(self, records: Iterable[Planned], restamp: bool = True) -> int:
        n = 0
        for p in records:
            await self.send(p.restamped(time.time()) if restamp else p)
            n += 1
            if n % 500 == 0:
                await asyncio.sleep(0)
        await self.flush()
        return n

    async def open_loop(self, records: Iterable[Planned], rate: float, duration_s: float,
                        stop: asyncio.Event | None = None) -> list[Planned]:
        """Send records at *rate* per second for *duration_s* at their planned times (event time = planned time)."""
        t0 = time.time() + 0.1
        out: list[Planned] = []
        it = iter(records)
        for i in range(int(rate * duration_s)):
            if stop is not None and stop.is_set():
                break
            planned = t0 + i / rate
            delay = planned - time.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            elif i % 16 == 0:
                await asyncio.sleep(0)
            p = next(it).restamped(planned)
            r = p.record
            if isinstance(r, InteractionEvent) and r.needs_advisor and r.contact_id is not None:
                self.contact_planned[r.contact_id] = planned
                self.contact_opened[r.contact_id] = r
            await self.send(p)
            out.append(p)
        return out

    async def abandon_waiting(self, since: float) -> int:
        """The customers of contacts opened since *since* and never assigned hang up (``contact_abandoned``).

        After an overload that outgrew the advisors: without it the queue drains only at the
        simulated advisors' pace (15,000 contacts took over 30 minutes), which is the workforce's
        limit, not the engine's.  Returns how many hung up."""
        from cxstream.replay.recording import plan

        n = 0
        for cid, planned in list(self.contact_planned.items()):
            opened = self.contact_opened.get(cid)
            if planned < since or cid in self.first_assignment or opened is None:
                continue
            await self.send(plan(InteractionEvent(
                event_id=f"{opened.event_id}:abandoned", occurred_at=time.time(), channel=opened.channel,
                kind="contact_abandoned", customer=opened.customer, contact_id=cid, routing_group=opened.routing_group,
            )))
            n += 1
        return n

    # ---- the desktops
    async def _watch(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign(await partitions_of(consumer, self.topic(t.ASSIGNMENTS.name), timeout=60))
            while not self._stop.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=100)
                except Exception as exc:  # the broker is away: try again
                    log(f"assignment watcher: {type(exc).__name__}")
                    await asyncio.sleep(0.5)
                    continue
                now = time.time()
                for msgs in batch.values():
                    for m in msgs:
                        a = _ASSIGNMENT.decode(m.value)
                        self.assignments.append(a)
                        self.first_assignment.setdefault(a.contact_id, now)
                        self.first_waited.setdefault(a.contact_id, a.waited_s)
                        if self.answer:
                            for step in respond(a, self.desktop):
                                self._seq += 1
                                self._desk.append((now + step.after_s, self._seq, _plan(step.record, a)))
        finally:
            await consumer.stop()

    async def _desktops(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            due = [d for d in self._desk if d[0] <= now]
            if due:
                self._desk = [d for d in self._desk if d[0] > now]
                for at, _, p in sorted(due):
                    await self.send(p.restamped(at))
            await asyncio.sleep(0.01)

    @property
    def desk_pending(self) -> int:
        return len(self._desk)

    # ---- observation
    async def _sample(self, workers: Workers, every_s: float = 0.5) -> None:
        import aiohttp
        import psutil

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while not self._stop.is_set():
                lag: float | None = None
                rss = []
                for e in workers.live():
                    with contextlib.suppress(psutil.Error):
                        p = psutil.Process(e.proc.pid)
                        rss.append(round(sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 1e6, 1))
                    try:
                        async with session.get(f"{e.http}/metrics", headers={"X-API-Key": API_KEY}) as resp:
                            text = await resp.text()
                    except Exception:
                        continue
                    lag = (lag or 0.0) + sum(v for n, _, v in parse_metrics(text) if n == "cx_consumer_lag_records")
                self.samples.append(Sample(time.time(), lag, rss))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), every_s)

    def lag_now(self, within_s: float = 3.0) -> float | None:
        recent = [s.lag for s in self.samples if s.at >= time.time() - within_s and s.lag is not None]
        return recent[-1] if recent else None

    async def settle(self, group_lag: GroupLag, timeout: float = 600.0, quiet_s: float = 3.0) -> float:
        """Wait until every send is acknowledged, no desktop answer is due and the group has nothing left; the seconds waited."""
        began = time.time()
        deadline = time.monotonic() + timeout
        calm_since: float | None = None
        await self.flush(timeout)
        while True:
            lag = await group_lag.lag()
            calm = lag is not None and lag <= 2 and not self._desk and not self._pending
            if calm:
                calm_since = calm_since or time.monotonic()
                if time.monotonic() - calm_since >= quiet_s:
                    return time.time() - began
            else:
                calm_since = None
            if time.monotonic() > deadline:
                raise TimeoutError(f"not settled in {timeout:.0f} s: group lag {lag}, {len(self._desk)} desktop answers due")
            await asyncio.sleep(0.25)


_ASSIGNMENT = msgspec.json.Decoder(Assignment)


def _plan(record: AdvisorEvent | InteractionEvent, a: Assignment) -> Planned:
    from cxstream.replay.recording import plan

    p = plan(record)
    if isinstance(record, InteractionEvent):  # the channel system keys the close by the customer, as loadgen does
        return Planned(p.topic, a.customer_id.encode(), p.value, p.at, p.record)
    return p


class GroupLag:
    """Records the stages' consumer group (``{app_id}.stages``) has not committed, on every topic it consumes."""

    CONSUMED = (t.INTERACTIONS, t.ADVISOR_EVENTS, t.OUTCOMES, t.RESOLVE, t.CUSTOMER_EVENTS, t.ROUTING)

    def __init__(self, bootstrap: str, app_id: str, prefix: str) -> None:
        self.bootstrap, self.group, self.prefix = bootstrap, f"{app_id}.stages", prefix
        self.consumer: AIOKafkaConsumer | None = None
        self.tps: list[TopicPartition] = []

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False,
                                         request_timeout_ms=5000)
        await self.consumer.start()
        self.tps = []
        for s in self.CONSUMED:
            self.tps += await partitions_of(self.consumer, self.prefix + s.name, timeout=60)

    async def stop(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()

    async def committed(self) -> dict[TopicPartition, int]:
        assert self.consumer is not None
        return {tp: (await self.consumer.committed(tp)) or 0 for tp in self.tps}

    async def lag(self) -> int | None:
        """End offsets minus committed offsets, summed; None while the broker does not answer."""
        try:
            assert self.consumer is not None
            ends = await asyncio.wait_for(self.consumer.end_offsets(self.tps), 10)
            committed = await asyncio.wait_for(self.committed(), 10)
        except Exception:
            return None
        return sum(max(0, ends[tp] - committed[tp]) for tp in self.tps)


# --------------------------------------------------------------------------- reading the results
async def read_topic(bootstrap: str, topic: str) -> list[tuple[int, int, bytes]]:
    """Every record of *topic* now: (partition, offset, value)."""
    return [(m.partition, m.offset, m.value or b"") for m in await read_to_end(bootstrap, topic)]


async def read_contexts(redis_url: str) -> list[dict[str, Any]]:
    """Every context copy in Redis (``cx:ctx:*``), decoded."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match="cx:ctx:*", count=10_000)]
        out = []
        for i in range(0, len(keys), 2000):
            for raw in await client.mget(keys[i : i + 2000]):
                if raw:
                    out.append(orjson.loads(context_json(cast(bytes, raw))))  # bytes: the client does not decode responses
        return out
    finally:
        await client.aclose()


@dataclass
class Snapshot:
    """What the engine shows at one moment, read from its topics and Redis."""

    ring_ids: set[str]  # event ids in the contexts' dedupe rings
    full_rings: int  # contexts whose ring is full: older ids fell out of it
    contexts: int
    interactions_total: int
    counted_twice: list[dict[str, Any]]  # contexts whose interactions_total exceeds the interaction ids they hold
    dead_lettered: dict[str, str]  # event id -> error type
    routed_advisor_events: set[str]  # advisor event ids on cx.routing.v1 below the group's committed offset
    assignments: dict[str, set[str]]  # contact id -> assignment ids
    assignment_records: int
    reoffered: set[str]  # contacts with an offer timeout, rejection or transfer
    by_customer: dict[str, dict[str, Any]] = field(default_factory=dict)  # customer id -> compared fields
    dead_letters: dict[str, int] = field(default_factory=dict)  # every dead letter so far, by "stage: error type: reason"
    #: advisor event id -> where it is on cx.routing.v1: (partition, offset, the group's committed offset there)
    routing_at: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)  # contacts with a completed or abandoned routing event


COMPARED = ("interactions_total", "contacts_total", "channel_counts", "csat_count", "nps_count", "recent_event_ids")


async def snapshot(bootstrap: str, redis_url: str, prefix: str, app_id: str, interaction_ids: set[str], ring_max: int) -> Snapshot:
    """Read the state once the engine caught up (see the module's docstring for what proves what)."""
    contexts = await read_contexts(redis_url)
    ring: set[str] = set()
    twice = []
    full = 0
    by_customer = {}
    for c in contexts:
        ids = c.get("recent_event_ids") or []
        ring.update(ids)
        if len(ids) >= ring_max:
            full += 1
        held = sum(1 for i in ids if i in interaction_ids)
        if len(ids) < ring_max and c.get("interactions_total", 0) > held:
            twice.append({"customer_id": c.get("customer_id"), "interactions_total": c.get("interactions_total"), "interaction_ids": held})
        by_customer[str(c.get("customer_id"))] = {k: c.get(k) for k in COMPARED}
    dead: dict[str, str] = {}
    dead_by: Counter[str] = Counter()
    for _, _, raw in await read_topic(bootstrap, prefix + t.DEAD_LETTER.name):
        with contextlib.suppress(Exception):
            dl = orjson.loads(raw)
            dead_by[f"{dl.get('agent')}: {dl.get('error_type')}: {str(dl.get('reason'))[:80]}"] += 1
            body = orjson.loads(dl.get("raw", ""))
            if isinstance(body, dict) and "event_id" in body:
                dead[str(body["event_id"])] = str(dl.get("error_type"))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"{app_id}.stages", enable_auto_commit=False)
    await consumer.start()
    try:
        committed = {tp.partition: (await consumer.committed(tp)) or 0
                     for tp in await partitions_of(consumer, prefix + t.ROUTING.name, timeout=60)}
    finally:
        await consumer.stop()
    routed = set()
    routing_at: dict[str, tuple[int, int, int]] = {}
    for part, off, raw in await read_topic(bootstrap, prefix + t.ROUTING.name):
        if b'"cx.AdvisorEvent.v1"' in raw:
            eid = str(orjson.loads(raw)["event_id"])
            routing_at.setdefault(eid, (part, off, committed.get(part, 0)))
            if off < committed.get(part, 0):
                routed.add(eid)
    assignments: dict[str, set[str]] = {}
    records = 0
    for _, _, raw in await read_topic(bootstrap, prefix + t.ASSIGNMENTS.name):
        a = orjson.loads(raw)
        assignments.setdefault(a["contact_id"], set()).add(a["assignment_id"])
        records += 1
    reoffered = set()
    ended = set()
    for _, _, raw in await read_topic(bootstrap, prefix + t.ROUTING_EVENTS.name):
        ev = orjson.loads(raw)
        if ev.get("kind") in ("offer_timeout", "offer_rejected", "transferred"):
            reoffered.add(ev["contact_id"])
        elif ev.get("kind") in ("completed", "abandoned"):
            ended.add(ev["contact_id"])
    return Snapshot(ring, full, len(contexts), sum(int(c.get("interactions_total", 0)) for c in contexts), twice, dead,
                    routed, assignments, records, reoffered, by_customer, dict(dead_by), routing_at, ended)


def account(acked: dict[str, str], snap: Snapshot, ids: Iterable[str] | None = None, sample: int = 20) -> dict[str, Any]:
    """Every acknowledged input of *ids* (default: all) as processed, dead-lettered or lost; see the module's docstring.

    A processed input counts as processed even if a record derived from it was dead-lettered later
    (``e1`` here: say the learner refused its label).

    >>> snap = Snapshot({"e1"}, 0, 1, 1, [], {"e1": "processing_error", "e3": "invalid"}, {"a1"}, {"k1": {"as-1"}}, 1, set())
    >>> r = account({"e1": CUSTOMER, "a1": ADVISOR, "e3": CUSTOMER, "e4": CUSTOMER}, snap)
    >>> r["events_sent"], r["processed"], r["dead_lettered"], r["lost"], r["lost_ids"]
    (4, 2, 1, 1, ['e4'])
    """
    chosen = list(acked) if ids is None else [i for i in ids if i in acked]
    processed = dead = 0
    lost, unverified = [], []
    for eid in chosen:
        if (eid in snap.ring_ids) if acked[eid] == CUSTOMER else (eid in snap.routed_advisor_events):
            processed += 1  # (a record derived from it may still be dead-lettered downstream: a label the learner refused)
        elif eid in snap.dead_lettered:
            dead += 1
        elif acked[eid] == CUSTOMER and snap.full_rings:
            unverified.append(eid)
        else:
            lost.append(eid)
    kinds = Counter(acked[e] for e in chosen)
    return {
        "events_sent": len(chosen), "customer_events": kinds[CUSTOMER], "advisor_events": kinds[ADVISOR],
        "processed": processed, "dead_lettered": dead, "lost": len(lost), "unverified": len(unverified),
        "lost_ids": sorted(lost)[:sample], "lost_where": {eid: lost_where(eid, acked[eid], snap) for eid in sorted(lost)[:sample]},
    }


def lost_where(eid: str, kind: str, snap: Snapshot) -> str:
    """Where a lost input was last seen, to tell a record never produced from one never finished.

    >>> snap = Snapshot(set(), 0, 0, 0, [], {}, set(), {}, 0, set(), routing_at={"a1": (2, 40, 38)})
    >>> lost_where("a1", ADVISOR, snap), lost_where("a2", ADVISOR, snap), lost_where("e1", CUSTOMER, snap)
    ('on cx.routing.v1[2] at offset 40, at or past the committed offset 38: not finished', 'not on cx.routing.v1: ingest never produced it', 'in no context copy in Redis')
    """
    if kind == CUSTOMER:
        return "in no context copy in Redis"
    at = snap.routing_at.get(eid)
    if at is None:
        return "not on cx.routing.v1: ingest never produced it"
    part, off, committed = at
    return f"on cx.routing.v1[{part}] at offset {off}, at or past the committed offset {committed}: not finished"


def duplicate_assignments(snap: Snapshot, contacts: Iterable[str] | None = None) -> dict[str, Any]:
    """Contacts assigned twice: two assignment ids for one contact that was never timed out, rejected or transferred.

    >>> snap = Snapshot(set(), 0, 0, 0, [], {}, set(), {"k1": {"a", "b"}, "k2": {"c"}, "k3": {"d", "e"}}, 6, {"k3"})
    >>> duplicate_assignments(snap)
    {'contacts_assigned': 3, 'duplicate_assignments': 1, 'duplicate_contacts': ['k1'], 'reoffered_contacts': 1, 'assignment_records': 6}
    """
    chosen = snap.assignments if contacts is None else {c: snap.assignments[c] for c in contacts if c in snap.assignments}
    twice = sorted(c for c, ids in chosen.items() if len(ids) > 1 and c not in snap.reoffered)
    return {
        "contacts_assigned": len(chosen), "duplicate_assignments": len(twice), "duplicate_contacts": twice[:20],
        "reoffered_contacts": sum(1 for c in chosen if c in snap.reoffered), "assignment_records": snap.assignment_records,
    }


def left_open(completed: Iterable[str], snap: Snapshot, contacts: Iterable[str] | None = None) -> dict[str, Any]:
    """Contacts a desktop completed (of *contacts*, default: all) that never ended at the router.

    >>> snap = Snapshot(set(), 0, 0, 0, [], {}, set(), {}, 0, set(), ended={"k1", "k3"})
    >>> left_open({"k1", "k2", "k3"}, snap), left_open({"k1", "k2"}, snap, contacts=["k1"])["contacts_left_open"]
    ({'contacts_completed': 3, 'contacts_left_open': 1, 'contacts_left_open_sample': ['k2']}, 0)
    """
    chosen = set(completed) if contacts is None else set(completed).intersection(contacts)
    still = sorted(c for c in chosen if c not in snap.ended)
    return {"contacts_completed": len(chosen), "contacts_left_open": len(still), "contacts_left_open_sample": still[:20]}


#: When a first look finds an input lost or a completed contact open, the second look comes this much later: the
#: settle allows the group a lag of 2 (the router's ticks keep cx.routing.v1 moving), so an input at a partition's
#: end may still be in flight at the first look.
LOOK_AGAIN_S = 10.0


async def look_twice(read: Callable[[], Awaitable[Snapshot]], acked: dict[str, str], completed: Iterable[str],
                     again_after_s: float = LOOK_AGAIN_S) -> tuple[Snapshot, int, int]:
    """The engine's state once it caught up: *read* once, and once more *again_after_s* later if that first look
    finds an acknowledged input lost or a completed contact left open; (the last snapshot, inputs lost at the
    first look, contacts left open at the first look)."""
    snap = await read()
    lost = account(acked, snap)["lost"]
    still = left_open(completed, snap)["contacts_left_open"]
    if lost or still:
        await asyncio.sleep(again_after_s)
        snap = await read()
    return snap, lost, still


async def router_stats(redis_url: str, group: str = "default") -> dict[str, Any] | None:
    """A routing group's live statistics (the router publishes them in Redis at each tick); None before its first."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        raw = await client.get(f"cx:queues:{group}")
    finally:
        await client.aclose()
    return cast(dict[str, Any], orjson.loads(raw)) if raw else None


async def advisors_once_answered(redis_url: str, within_s: float = 10.0) -> dict[str, Any] | None:
    """The default group's advisors once every desktop answer is in: read again every 0.5 s while any is busy, up to
    *within_s* (the router's next ticks show each advisor freed), then as they are; None if no statistics."""
    deadline = time.monotonic() + within_s
    stats = await router_stats(redis_url)
    while stats is not None and stats["advisors"].get("busy") and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        stats = await router_stats(redis_url)
    return None if stats is None else cast(dict[str, Any], stats["advisors"])


def recovery(samples: Sequence[Sample], contact_planned: dict[str, float], first_assignment: dict[str, float],
             cleared_at: float, *, lag_normal: float, e2e_normal_s: float, hold_s: float = 5.0,
             router_wait: Mapping[str, float] | None = None) -> float | None:
    """Seconds from *cleared_at* to the first moment from which, for *hold_s*, the lag stays <= *lag_normal*
    and every contact opened is assigned within *e2e_normal_s*; None if that never happened.

    With *router_wait* (contact id -> its first assignment's ``waited_s``), a contact's time is its e2e
    less the time it waited at the router for an advisor: the engine's part, without the queue that the
    routing policy and the advisors' capacity make (a contact held for a busy last advisor waits there
    whether or not anything failed).  A contact not assigned yet is late either way.

    >>> s = [Sample(float(x), 1000.0 if x < 20 else 0.0, []) for x in range(0, 40)]
    >>> recovery(s, {"k": 30.0}, {"k": 30.1}, 10.0, lag_normal=50, e2e_normal_s=0.5)
    10.0
    >>> held = ({"k": 30.0, "h": 25.0}, {"k": 30.1, "h": 27.1})  # h was held 2 s for its last advisor
    >>> recovery(s, *held, 10.0, lag_normal=50, e2e_normal_s=0.5), recovery(s, *held, 10.0, lag_normal=50, e2e_normal_s=0.5,
    ...                                                                      router_wait={"h": 2.0})
    (16.0, 10.0)
    """
    after = [s for s in samples if s.at >= cleared_at]
    opened = sorted((p, c) for c, p in contact_planned.items() if p >= cleared_at)
    wait = router_wait or {}
    end = after[-1].at if after else cleared_at
    for s in after:
        if s.at + hold_s > end:
            return None
        window = [x for x in after if s.at <= x.at <= s.at + hold_s]
        if any(x.lag is None or x.lag > lag_normal for x in window):
            continue
        late = [c for p, c in opened if s.at <= p <= s.at + hold_s
                and (c not in first_assignment or first_assignment[c] - p - wait.get(c, 0.0) > e2e_normal_s)]
        if not late:
            return round(s.at - cleared_at, 2)
    return None


def after_fault(samples: Sequence[Sample], contact_planned: dict[str, float], first_assignment: dict[str, float],
                first_waited: dict[str, float], cleared_at: float, *, lag_normal: float, e2e_normal_s: float,
                bin_s: float = 10.0) -> list[dict[str, Any]]:
    """What :func:`recovery` saw after *cleared_at*, in bins of *bin_s*: why a run did not recover, or what took it so long.

    Per bin: the summed lag's highest sample and how many samples were over *lag_normal*; the contacts
    opened and how many of them were late (not assigned, or assigned later than *e2e_normal_s*); and of
    the late ones assigned, how many waited longer than *e2e_normal_s* at the router (``waited_s``, router
    time: queued for an advisor, the routing policy and the advisors' capacity) and how many spent longer
    than that elsewhere (the pipeline: fetching, a restore, the stages behind); a contact can be both.

    >>> s = [Sample(float(x), 900.0 if x < 12 else 10.0, []) for x in range(0, 31)]
    >>> planned = {"a": 11.0, "b": 21.0, "c": 22.0, "d": 23.0}
    >>> bins = after_fault(s, planned, {"a": 14.0, "b": 21.1, "c": 25.0, "d": 30.0}, {"a": 0.1, "b": 0.05, "c": 2.8, "d": 1.0},
    ...                    10.0, lag_normal=50, e2e_normal_s=0.5)
    >>> [(b["from_s"], b["lag_over"], b["contacts"], b["late"], b["late_at_router"], b["late_in_pipeline"]) for b in bins]
    [(0.0, 2, 1, 1, 0, 1), (10.0, 0, 3, 2, 2, 1), (20.0, 0, 0, 0, 0, 0)]
    """
    after = [x for x in samples if x.at >= cleared_at]
    if not after:
        return []
    out = []
    for k in range(int((after[-1].at - cleared_at) // bin_s) + 1):
        lo, hi = cleared_at + k * bin_s, cleared_at + (k + 1) * bin_s
        lags = [x.lag for x in after if lo <= x.at < hi and x.lag is not None]
        opened = [c for c, p in contact_planned.items() if lo <= p < hi]
        late = [c for c in opened if c not in first_assignment or first_assignment[c] - contact_planned[c] > e2e_normal_s]
        assigned = [c for c in late if c in first_assignment]
        e2e = [first_assignment[c] - contact_planned[c] for c in assigned]
        at_router = [c for c in assigned if first_waited.get(c, 0.0) > e2e_normal_s]
        elsewhere = [c for c in assigned if first_assignment[c] - contact_planned[c] - first_waited.get(c, 0.0) > e2e_normal_s]
        out.append({"from_s": round(k * bin_s, 1), "lag_max": max(lags) if lags else None,
                    "lag_over": sum(1 for v in lags if v > lag_normal), "lag_samples": len(lags), "contacts": len(opened),
                    "late": len(late), "late_unassigned": len(late) - len(assigned), "late_at_router": len(at_router),
                    "late_in_pipeline": len(elsewhere), "late_e2e_p50_ms": as_ms(percentile(e2e, 0.5))})
    return out


def as_ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The *q* quantile (nearest rank) of *values*; None for none.

    >>> percentile([1, 2, 3, 4], 0.5)
    2
    """
    if not values:
        return None
    v = sorted(values)
    return v[max(0, min(len(v) - 1, math.ceil(q * len(v)) - 1))]


def stop_quietly(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        stop_process(proc)
