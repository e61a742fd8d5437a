"""``cxstream replay``: publish a recording paced by event time, then report assignment latency.

Open loop: each record is sent at its *planned* time (event-time gaps divided by
``--speed``); unless ``--keep-times``, its event time is re-stamped to that
planned wall time.  An independent consumer reads ``cx.assignments.v1`` (from the
offsets it had before the replay began) and measures, per assignment, the wall
time at which it was consumed minus the planned time of the input that
triggered it (``Assignment.decided_at``): the latency an advisor desktop sees,
including any queueing inside the engine (no coordinated omission).

After the last record it waits for the assignments of the replayed contacts that need an
advisor (``contact_opened`` with ``needs_advisor``, not closed or abandoned later in the
recording: :func:`awaited_contacts`), and stops as soon as each has one; ``--wait`` seconds
is the most it waits.  With none to wait for, it stops at once.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hdrh.histogram import HdrHistogram
from tqdm import tqdm

from cxstream.replay.recording import Planned, read_recording, schedule
from cxstream.schemas import Assignment, InteractionEvent
from cxstream.streams import topics as t
from cxstream.streams.admin import partitions_of
from cxstream.streams.security import check_kafka, kafka_client_kwargs
from cxstream.streams.settings import Settings
from cxstream.streams.transport import IDEMPOTENT

_assignment = msgspec.json.Decoder(Assignment)


@dataclass
class LatencySummary:
    """Latency from planned input time to consumed assignment, in milliseconds."""

    count: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, latencies_s: list[float]) -> LatencySummary:
        """Summarise latencies (seconds) with an HDR histogram (µs resolution, 3 digits).

        >>> LatencySummary.of([0.001, 0.002, 0.003]).count
        3
        """
        if not latencies_s:
            return cls()
        h = HdrHistogram(1, 3_600_000_000, 3)
        for s in latencies_s:
            h.record_value(max(1, int(s * 1e6)))
        ms = lambda q: round(h.get_value_at_percentile(q) / 1000.0, 3)  # noqa: E731
        return cls(
            count=len(latencies_s),
            p50_ms=ms(50),
            p95_ms=ms(95),
            p99_ms=ms(99),
            p999_ms=ms(99.9),
            max_ms=round(h.get_max_value() / 1000.0, 3),
        )

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d.update(self.extra)
        return d


async def end_offsets(bootstrap: str, topic: str, settings: Settings | None = None) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **kafka_client_kwargs(settings or Settings()))
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def read_to_end(
    bootstrap: str, topic: str, *, since_s: float | None = None, timeout_s: float = 60.0, settings: Settings | None = None,
) -> list[Any]:
    """Every record of *topic* up to its end offsets when called (from *since_s*, Kafka timestamps, or the beginning).

    The records of each partition in offset order (aiokafka's ``ConsumerRecord``: ``partition``,
    ``offset``, ``timestamp`` in ms, ``value``).  Raises ``TimeoutError`` if they were not all
    read within *timeout_s*.  For the benchmarks' diagnostics and the chaos checks: it reads
    what a topic holds, not a stream.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 * 2**20,
                                **kafka_client_kwargs(settings or Settings()))
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic, timeout=timeout_s)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if since_s is None:
            starts = dict(await consumer.beginning_offsets(tps))
        else:
            found = await consumer.offsets_for_times({tp: int(since_s * 1000) for tp in tps})
            starts = {tp: (f.offset if (f := found.get(tp)) is not None else ends[tp]) for tp in tps}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        left = {tp for tp in tps if ends[tp] > starts[tp]}
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {len(left)} partitions not read to their end within {timeout_s:.0f} s")
            for tp, msgs in (await consumer.getmany(*left, timeout_ms=500, max_records=20000)).items():
                out.extend(m for m in msgs if m.offset < ends[tp])
                if msgs and msgs[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
            for tp in list(left):  # past the end without a record at it (a transaction marker, compacted away)
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
        return out
    finally:
        await consumer.stop()


def awaited_contacts(records: list[Planned]) -> set[str]:
    """The contacts of *records* that the engine should assign: opened needing an advisor, and still open at the end.

    >>> from cxstream.schemas import Identifiers, InteractionEvent
    >>> from cxstream.replay.recording import plan
    >>> ev = lambda kind, cid, **kw: plan(InteractionEvent(event_id=kind + cid, occurred_at=1, channel="chat", kind=kind,
    ...                                                    customer=Identifiers(email="a@b.co"), contact_id=cid, **kw))
    >>> sorted(awaited_contacts([ev("contact_opened", "c1", needs_advisor=True), ev("contact_opened", "c2", needs_advisor=True),
    ...                          ev("contact_opened", "c3"), ev("contact_abandoned", "c2")]))
    ['c1']
    """
    out: set[str] = set()
    for p in records:
        r = p.record
        if isinstance(r, InteractionEvent) and r.contact_id:
            if r.kind == "contact_opened" and r.needs_advisor:
                out.add(r.contact_id)
            elif r.kind in ("contact_closed", "contact_abandoned"):
                out.discard(r.contact_id)
    return out


async def collect_assignments(
    bootstrap: str,
    start: dict[TopicPartition, int],
    stop: asyncio.Event,
    wait_s: float,
    topic: str = t.ASSIGNMENTS.name,
    awaited: set[str] | frozenset[str] = frozenset(),
    settings: Settings | None = None,
) -> list[tuple[float, Assignment]]:
    """(consumed wall time, assignment) from *start* offsets until *stop* is set and then either every contact in
    *awaited* has an assignment or *wait_s* seconds have passed (at once if *awaited* is empty)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed",
        **kafka_client_kwargs(settings or Settings()),
    )
    await consumer.start()
    out: list[tuple[float, Assignment]] = []
    missing = set(awaited)
    try:
        consumer.assign(list(start))
        for tp, off in start.items():
            consumer.seek(tp, off)
        deadline: float | None = None
        while True:
            if stop.is_set() and deadline is None:
                deadline = time.monotonic() + wait_s
            batch = await consumer.getmany(timeout_ms=100 if deadline is None else max(0, min(100, int((deadline - time.monotonic()) * 1000))))
            now = time.time()
            for msgs in batch.values():
                for m in msgs:
                    a = _assignment.decode(m.value)
                    out.append((now, a))
                    missing.discard(a.contact_id)
            if deadline is not None and (not missing or time.monotonic() >= deadline):
                return out
    finally:
        await consumer.stop()


async def publish(
    records: list[Planned],
    producer: AIOKafkaProducer,
    speed: float,
    keep_times: bool,
    progress: bool = True,
    topic_prefix: str = "",
) -> dict[float, float]:
    """Send *records* open-loop; returns {event time sent: planned wall time} (first per time)."""
    planned_at: dict[float, float] = {}
    start = time.time() + 0.05
    bar = tqdm(total=len(records), unit="ev", disable=not progress, file=sys.stderr, mininterval=0.5)
    try:
        for wall, rec in schedule(records, speed, start):
            delay = wall - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if speed <= 0:
                wall = time.time()
            if not keep_times:
                rec = rec.restamped(wall)
            if rec.at is not None:
                planned_at.setdefault(rec.at, wall)
            await producer.send(topic_prefix + rec.topic, rec.value, key=rec.key)
            bar.update(1)
        await producer.flush()
    finally:
        bar.close()
    return planned_at


async def replay(
    path: str | Path,
    bootstrap: str,
    *,
    speed: float = 1.0,
    keep_times: bool = False,
    wait_s: float = 10.0,
    progress: bool = True,
    topic_prefix: str = "",
    settings: Settings | None = None,
) -> LatencySummary:
    """Replay a recording into a running engine and measure assignment latency.

    *settings* carry the transport security of the broker (``CX_KAFKA_*``); default: plaintext.
    """
    settings = settings or Settings()
    records = read_recording(path)
    awaited = awaited_contacts(records)
    await check_kafka(bootstrap, settings)  # a refused certificate or password: a clear error, now
    assignments = topic_prefix + t.ASSIGNMENTS.name
    start_offsets = await end_offsets(bootstrap, assignments, settings)
    stop = asyncio.Event()
    collector = asyncio.create_task(
        collect_assignments(bootstrap, start_offsets, stop, wait_s=wait_s, topic=assignments, awaited=awaited, settings=settings)
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, **IDEMPOTENT, **kafka_client_kwargs(settings))
    await producer.start()
    began = time.time()
    try:
        planned_at = await publish(records, producer, speed, keep_times, progress, topic_prefix)
    finally:
        await producer.stop()
    sent_s = time.time() - began
    stop.set()
    waiting = time.monotonic()
    got = await collector
    latencies = [consumed - planned_at.get(a.decided_at, a.decided_at) for consumed, a in got]
    summary = LatencySummary.of(latencies)
    summary.extra = {
        "records": len(records),
        "assignments": len(got),
        "send_seconds": round(sent_s, 3),
        "achieved_rate": round(len(records) / sent_s, 1) if sent_s > 0 else None,
        "speed": speed,
        "awaited_contacts": len(awaited),
        "assigned_contacts": len(awaited & {a.contact_id for _, a in got}),
        "waited_seconds": round(time.monotonic() - waiting, 3),
        "wait_limit_seconds": wait_s,
    }
    return summary


def report(d: dict[str, Any]) -> str:
    """The line ``cxstream replay`` prints: what was sent, what was assigned, and latency only if there is one.

    >>> print(report({"records": 2, "send_seconds": 0.1, "achieved_rate": 20.0, "assignments": 0, "awaited_contacts": 1,
    ...               "assigned_contacts": 0, "waited_seconds": 5.0, "wait_limit_seconds": 5.0, "p50_ms": None}))
    replayed 2 records in 0.1s (20.0/s); no assignment seen within --wait 5.0 s (0 of the 1 replayed contacts that need an advisor assigned)
    """
    line = f"replayed {d['records']} records in {d['send_seconds']}s ({d['achieved_rate']}/s); "
    awaited = (
        f" ({d['assigned_contacts']} of the {d['awaited_contacts']} replayed contacts that need an advisor assigned)"
        if d["awaited_contacts"] else " (no replayed contact needs an advisor: nothing to wait for)"
    )
    if not d["assignments"]:
        return line + f"no assignment seen within --wait {d['wait_limit_seconds']} s{awaited}"
    return line + (
        f"{d['assignments']} assignments in {d['waited_seconds']} s after the last record{awaited}; "
        f"event time -> assignment latency: p50 {d['p50_ms']} ms, p95 {d['p95_ms']} ms, p99 {d['p99_ms']} ms, max {d['max_ms']} ms"
    )


def main_replay(
    file: str,
    bootstrap: str,
    *,
    speed: float,
    keep_times: bool,
    wait_s: float,
    progress: bool,
    json_out: str | None,
    topic_prefix: str = "",
    settings: Settings | None = None,
) -> int:
    """Entry point of ``cxstream replay``."""
    try:
        summary = asyncio.run(
            replay(
                file, bootstrap, speed=speed, keep_times=keep_times, wait_s=wait_s, progress=progress,
                topic_prefix=topic_prefix, settings=settings,
            )
        )
    except (OSError, ValueError) as exc:
        print(f"cxstream replay: {exc}", file=sys.stderr)
        return 2
    d = summary.as_dict()
    print(report(d))
    if json_out:
        Path(json_out).write_bytes(orjson.dumps(d, option=orjson.OPT_INDENT_2))
    return 0
