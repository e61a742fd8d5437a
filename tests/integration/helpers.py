"""Produce to and consume from the real broker in integration tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cxstream.schemas import Record
from cxstream.streams.admin import partitions_of


def encode(record: Record | bytes | str) -> bytes:
    if isinstance(record, bytes):
        return record
    if isinstance(record, str):
        return record.encode()
    return msgspec.json.encode(record)


async def produce(broker: str, topic: str, items: Iterable[tuple[bytes | None, Record | bytes | str]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, encode(value), key=key)
    finally:
        await producer.stop()


async def consume_until(
    broker: str,
    topic: str,
    done: Callable[[list[Any]], bool],
    decode: Callable[[bytes], Any] = lambda b: b,
    timeout: float = 30.0,
) -> list[Any]:
    """Read *topic* from the beginning until ``done(values)`` is true; raise on timeout."""
    # read_committed: what a desktop sees when the engine runs exactly once; the same otherwise
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed")
    await consumer.start()
    values: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        tps = await partitions_of(consumer, topic, timeout=timeout)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not done(values):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: condition not met in {timeout}s; got {len(values)} records: {values[-5:]}")
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                values.extend(decode(m.value) for m in msgs)
        return values
    finally:
        await consumer.stop()


def wait_for(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll *check* until it returns something truthy; return it, or raise on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout}s (last value {value!r})")
        time.sleep(interval)


async def wait_for_async(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.01) -> Any:
    """:func:`wait_for` inside a running event loop: the loop goes on between the checks (asyncio.sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


async def read_to_end(broker: str, topic: str, *, isolation_level: str = "read_uncommitted") -> list[bytes]:
    """Every value on *topic* up to the end offsets it had when called, in partition then offset order.

    ``isolation_level="read_committed"``: only what committed transactions wrote (up to the last stable offset)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, isolation_level=isolation_level)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[TopicPartition, list[bytes]] = {tp: [] for tp in tps}
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batch = await consumer.getmany(timeout_ms=200)
            for tp, msgs in batch.items():
                out[tp].extend(m.value for m in msgs if m.offset < ends[tp])
        return [v for tp in tps for v in out[tp]]
    finally:
        await consumer.stop()


def trace(engine: Any, *needles: str, topics: Iterable[str] = (), log_lines: int = 40) -> str:
    """Where records naming *needles* are on the engine's topics, and the engine log's last warnings.

    For a failure's message: a test that waits in vain for something says how far it got.
    *engine* is a ``RunningEngine``; *topics* are topic names without the engine's prefix.
    """
    import asyncio

    from cxstream.streams import topics as t

    names = list(topics) or [spec.name for spec in (
        t.INTERACTIONS, t.RESOLVE, t.CUSTOMER_EVENTS, t.ROUTING, t.ASSIGNMENTS, t.ROUTING_EVENTS, t.ADVISOR_EVENTS,
        t.DEAD_LETTER,
    )]
    lines = []
    for name in names:
        try:
            values = asyncio.run(read_to_end(engine.broker, engine.topic(name)))
        except Exception as exc:  # the trace must not hide the failure it explains
            lines.append(f"{name}: unreadable ({exc!r})")
            continue
        hits = [v for v in values if v and any(n.encode() in v for n in needles)]
        lines.append(f"{name}: {len(hits)} of {len(values)} records name {needles}")
        lines += [f"    {v[:400].decode(errors='replace')}" for v in hits[-6:]]
    warnings = [line for line in engine.output().splitlines() if "WARNING" in line or "ERROR" in line]
    lines.append(f"engine log, last {log_lines} warnings and errors of {len(warnings)}:")
    lines += [f"    {line[:300]}" for line in warnings[-log_lines:]]
    return "\n".join(lines)


@pytest.fixture(scope="module", autouse=True)
def stages_on_lean_producer() -> Iterator[None]:
    """Imported by a test module: every engine it starts (they inherit the environment) sends on the lean producer."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CX_STAGE_PRODUCER", "lean")
        yield


@pytest.fixture(scope="module", autouse=True)
def stages_on_librdkafka() -> Iterator[None]:
    """Imported by a test module: every engine it starts (they inherit the environment) runs its stages on librdkafka."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CX_STAGE_CLIENT", "librdkafka")
        yield
