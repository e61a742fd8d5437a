"""The stages' lean producer (cxstream/streams/leanproducer.py) on a real broker of this module's own.

The sends of one turn of the event loop leave in one request; every record's future says where it
was stored, and the partitions hold them once and in order; a broker stopped and started again
with records in flight loses none and stores none twice; and a broker away for longer than the
outage bound fails the records (the stages' loop then dies, as with aiokafka); requests a paused
broker never answered are sent again and stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cxstream.streams.admin import ensure_named_topics
from cxstream.streams.embedded import EmbeddedBroker
from cxstream.streams.leanproducer import LeanProducer
from cxstream.streams.rdkafka import ClientError
from cxstream.streams.settings import Settings

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(tmp_path_factory.mktemp("lean-producer") / "broker")  # stopped and started by the tests
    b.start()
    try:
        yield b
    finally:
        b.stop()


async def _topic(url: str) -> str:
    topic = f"lean-{uuid.uuid4().hex[:8]}"
    await ensure_named_topics(url, [(topic, PARTITIONS, {})], Settings())
    return topic


async def _log(url: str, topic: str, count: int) -> dict[int, list[tuple[int, bytes | None]]]:
    """Every record of *topic* (at least *count*), per partition: (offset, value)."""
    reader = AIOKafkaConsumer(bootstrap_servers=url, enable_auto_commit=False, auto_offset_reset="earliest")
    await reader.start()
    got: dict[int, list[tuple[int, bytes | None]]] = {}
    try:
        reader.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) < count and time.monotonic() < deadline:
            for tp, records in (await reader.getmany(timeout_ms=200)).items():
                got.setdefault(tp.partition, []).extend((r.offset, r.value) for r in records)
        for tp, records in (await reader.getmany(timeout_ms=500)).items():  # and nothing more
            got.setdefault(tp.partition, []).extend((r.offset, r.value) for r in records)
    finally:
        await reader.stop()
    return got


def test_one_turns_sends_leave_in_one_request_and_each_future_says_where_its_record_is(broker: EmbeddedBroker) -> None:
    async def scenario() -> None:
        topic = await _topic(broker.url)
        producer = LeanProducer(broker.url)
        await producer.start([topic])
        try:
            before = producer.requests
            futures = [await producer.send(topic, b"%d" % n, key=b"customer-%d" % (n % 7)) for n in range(200)]
            futures.append(await producer.send(topic, b"to-2", partition=2, headers=[("h", b"v")]))
            delivered = await asyncio.gather(*futures)
            assert producer.requests - before == 1  # 200 records, 4 partitions: one request
            for n in range(200):
                assert delivered[n].partition == producer.partition_for(topic, b"customer-%d" % (n % 7))
        finally:
            await producer.stop()
        log = await _log(broker.url, topic, 201)
        where = {(d.partition, d.offset) for d in delivered}
        assert where == {(p, off) for p, recs in log.items() for off, _ in recs}
        by_partition: dict[int, list[bytes]] = {}
        for n, d in enumerate(delivered[:200]):
            by_partition.setdefault(d.partition, []).append(b"%d" % n)
        for p, values in by_partition.items():
            assert [v for _, v in log[p] if v != b"to-2"] == values  # stored in the order they were sent

    asyncio.run(scenario())


async def _stream_through(broker: EmbeddedBroker, interrupt: Callable[[], Awaitable[None]], **kw: float) -> LeanProducer:
    """Send records (5 every 10 ms) through *interrupt*; check the log holds each once, in order per partition."""
    topic = await _topic(broker.url)
    producer = LeanProducer(broker.url, **kw)
    await producer.start([topic])
    futures: list[asyncio.Future] = []
    sending = True

    async def send() -> None:
        n = 0
        while sending:
            for _ in range(5):
                futures.append(await producer.send(topic, b"%d" % n, key=b"k%d" % (n % 11)))
                n += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(send())
    try:
        await asyncio.sleep(1.0)
        await interrupt()
        await asyncio.sleep(2.0)
        sending = False
        await task
        delivered = await asyncio.wait_for(asyncio.gather(*futures), 120)
    finally:
        sending = False
        with contextlib.suppress(Exception):
            await task
        await producer.stop()
    assert len(delivered) > 300
    log = await _log(broker.url, topic, len(delivered))
    values = [v for recs in log.values() for _, v in recs]
    assert sorted(values, key=int) == [b"%d" % n for n in range(len(delivered))]  # each once
    for recs in log.values():  # and in the order sent, per partition
        assert [int(v) for _, v in recs] == sorted(int(v) for _, v in recs)
    assert all(d.offset >= 0 for d in delivered)
    return producer


def test_a_broker_restart_with_records_in_flight_loses_none_and_stores_none_twice(broker: EmbeddedBroker) -> None:
    async def restart() -> None:
        await asyncio.to_thread(broker.stop_kafka)  # records keep coming while it is away
        await asyncio.sleep(2.0)
        await asyncio.to_thread(broker.start_kafka)  # and while it starts

    asyncio.run(_stream_through(broker, restart, outage_s=120.0))


def test_requests_a_paused_broker_never_answered_are_sent_again_and_stored_once(broker: EmbeddedBroker) -> None:
    """The broker stopped (SIGSTOP) for 3 s: requests time out after 1 s, the connection is closed and every
    batch in flight is sent again once it answers; it may have stored some already (kept once by their sequences)."""
    async def pause() -> None:
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(3.0)
        finally:
            os.kill(broker.pid, signal.SIGCONT)

    producer = asyncio.run(_stream_through(broker, pause, outage_s=120.0, request_timeout_s=1.0))
    assert producer.resent > 0


def test_records_fail_once_the_broker_is_away_longer_than_the_outage_bound(broker: EmbeddedBroker, tmp_path: Path) -> None:
    async def scenario() -> None:
        topic = await _topic(broker.url)
        producer = LeanProducer(broker.url, outage_s=2.0, request_timeout_s=1.0)
        await producer.start([topic])
        try:
            await (await producer.send(topic, b"before", key=b"k"))
            await asyncio.to_thread(broker.stop_kafka)
            fut = await producer.send(topic, b"during", key=b"k")
            with pytest.raises(ClientError, match="outage"):
                await asyncio.wait_for(fut, 30)
        finally:
            broker.start_kafka()
            await producer.stop(timeout_s=1.0)

    asyncio.run(scenario())
