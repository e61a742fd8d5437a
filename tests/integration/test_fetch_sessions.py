"""Incremental fetch sessions (cxstream/streams/fetchsession.py) on the real broker.

Every record produced is fetched exactly once, in order per partition, while the requests name only
the partitions that changed and the answers hold only those with news; a partition given up is
forgotten by the session; a session the broker no longer recognises is replaced at once, losing
nothing; a stopping consumer closes its session on the broker; and the batch stages use sessions
by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest

from cxstream.streams import metrics
from cxstream.streams.admin import ensure_named_topics, ensure_topics
from cxstream.streams.batch import BatchRuntime, Record
from cxstream.streams.fetchsession import (
    SESSION_ERRORS,
    FetchSession,
    SessionFetcher,
    SessionRequest,
    close_fetch_sessions,
    use_fetch_sessions,
)
from cxstream.streams.settings import Settings
from cxstream.streams.topics import CUSTOMER_EVENTS, DEAD_LETTER

pytestmark = pytest.mark.integration

PARTITIONS = 8


def _counter(counter: object, label: str) -> float:
    return float(counter.labels(label)._value.get())  # type: ignore[attr-defined]


async def _produce(producer: AIOKafkaProducer, topic: str, partitions: list[int], start: int, count: int) -> None:
    """*count* records numbered from *start* to each of *partitions*, one partition at a time, a few at a time."""
    for n in range(start, start + count):
        for p in partitions:
            await producer.send_and_wait(topic, b"%d" % n, partition=p)
        if n % 5 == 0:
            await asyncio.sleep(0.01)


async def _take(consumer: AIOKafkaConsumer, want: int, got: dict[int, list[int]]) -> None:
    """Fetch until *want* more records are in *got* (partition: its values in order)."""
    target = sum(map(len, got.values())) + want
    while sum(map(len, got.values())) < target:
        batches = await asyncio.wait_for(consumer.getmany(timeout_ms=200), 30)
        for tp, records in batches.items():
            got.setdefault(tp.partition, []).extend(int(r.value) for r in records)


@contextlib.asynccontextmanager
async def _in_session(broker: str) -> AsyncIterator[tuple[str, list[TopicPartition], AIOKafkaProducer, AIOKafkaConsumer]]:
    """A new topic of PARTITIONS partitions, a producer, and a consumer assigned all of them that fetches in sessions."""
    topic = f"fsess-{uuid.uuid4().hex[:8]}"
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    await ensure_named_topics(broker, [(topic, PARTITIONS, {})], Settings())
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, fetch_max_wait_ms=10, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    try:
        consumer.assign(tps)
        use_fetch_sessions(consumer)
        yield topic, tps, producer, consumer
    finally:
        await consumer.stop()
        await producer.stop()


async def _opened(topic: str, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, partition: int, count: int,
                  ) -> tuple[FetchSession, dict[int, list[int]]]:
    """*count* records produced to *partition* and fetched: the consumer's session (opened by then), and what it fetched."""
    got: dict[int, list[int]] = {}
    await asyncio.gather(_produce(producer, topic, [partition], 0, count), _take(consumer, count, got))
    [session] = consumer._fetcher._sessions.values()
    assert isinstance(session, FetchSession)
    return session, got


def test_a_session_fetches_every_record_once_naming_only_what_changed_and_forgets_what_it_gives_up(
    servers: tuple[str, str],
) -> None:
    broker, _ = servers

    async def scenario() -> None:
        async with _in_session(broker) as (topic, tps, producer, consumer):
            fetcher = consumer._fetcher
            assert isinstance(fetcher, SessionFetcher)
            got: dict[int, list[int]] = {}
            # records to two of the eight partitions at a time: the others have no news
            await asyncio.gather(_produce(producer, topic, [0, 3], 0, 40), _take(consumer, 80, got))
            [session] = fetcher._sessions.values()
            assert session.session_id != 0 and session.epoch > 1
            assert set(session.known) == {(topic, p) for p in range(PARTITIONS)}
            requests, sent, answered = session.requests, session.partitions_sent, session.partitions_answered
            await asyncio.gather(_produce(producer, topic, [5], 40, 40), _take(consumer, 40, got))
            assert {p: got[p] for p in (0, 3)} == {0: list(range(40)), 3: list(range(40))}
            assert got[5] == list(range(40, 80)) and set(got) == {0, 3, 5}
            more = session.requests - requests
            assert more >= 10
            # a full request names all eight; these named one or none (partition 5 as its offset moved)
            assert (session.partitions_sent - sent) / more < 1.5
            assert (session.partitions_answered - answered) / more < 1.5

            # give up half the partitions: the session forgets them, the rest go on from where they were
            kept = {tp: await consumer.position(tp) for tp in tps[:4]}
            consumer.assign(list(kept))
            for tp, position in kept.items():
                consumer.seek(tp, position)
            await asyncio.gather(_produce(producer, topic, [1, 6], 100, 10), _take(consumer, 10, got))
            assert got[1] == list(range(100, 110)) and 6 not in got
            [session] = fetcher._sessions.values()
            assert set(session.known) == {(topic, p) for p in range(4)}

    asyncio.run(scenario())


def test_a_session_the_broker_no_longer_knows_is_replaced_at_once_and_nothing_is_lost(servers: tuple[str, str]) -> None:
    broker, _ = servers

    async def scenario() -> None:
        async with _in_session(broker) as (topic, _, producer, consumer):
            session, got = await _opened(topic, producer, consumer, 2, 20)
            first = session.session_id
            lost = _counter(metrics.FETCH_SESSIONS_LOST, "broker")
            full = _counter(metrics.FETCH_REQUESTS, "full")
            session.session_id = first + 7777  # a session the broker does not have: FETCH_SESSION_ID_NOT_FOUND
            await asyncio.gather(_produce(producer, topic, [2, 7], 20, 20), _take(consumer, 40, got))
            assert got == {2: list(range(40)), 7: list(range(20, 40))}
            assert _counter(metrics.FETCH_SESSIONS_LOST, "broker") >= lost + 1
            assert _counter(metrics.FETCH_REQUESTS, "full") >= full + 1
            assert session.session_id not in (0, first, first + 7777) and session.epoch >= 1

    asyncio.run(scenario())


def test_a_stopping_consumer_closes_its_session_on_the_broker(servers: tuple[str, str]) -> None:
    broker, _ = servers

    async def scenario() -> None:
        async with _in_session(broker) as (topic, _, producer, consumer):
            session, _ = await _opened(topic, producer, consumer, 4, 10)
            old_id, old_epoch = session.session_id, session.epoch
            assert old_id != 0
            assert await close_fetch_sessions(consumer) == 1
            assert session.session_id == 0 and not session.known
            # the broker no longer has it: a request in it, at the epoch it expected next, is refused
            stale = FetchSession(session.node_id)
            stale.session_id, stale.epoch = old_id, old_epoch
            request = SessionRequest(stale, FetchRequest(0, 1, 1024, 0, []))
            response = await consumer._client.send(session.node_id, request)
            assert SESSION_ERRORS.get(response.error_code) == "FETCH_SESSION_ID_NOT_FOUND"
            assert await close_fetch_sessions(consumer) == 0  # nothing left to close; the consumer then stops

    asyncio.run(scenario())


def test_the_batch_stages_fetch_in_sessions_by_default_and_not_with_the_setting_off(servers: tuple[str, str]) -> None:
    broker, _ = servers

    async def run(sessions: int) -> tuple[type, int]:
        tag = uuid.uuid4().hex[:8]
        settings = Settings(topic_prefix=f"fs{tag}.", app_id=f"cxfs-{tag}", partitions=4, fetch_sessions=sessions)
        topic = settings.topic_prefix + CUSTOMER_EVENTS.name
        await ensure_topics(broker, settings, (CUSTOMER_EVENTS, DEAD_LETTER), prefix=settings.topic_prefix)
        producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
        await producer.start()
        rt = BatchRuntime(broker, settings)
        seen: list[bytes] = []

        async def handle(rec: Record) -> None:
            seen.append(rec.value)

        rt.stage("context", [CUSTOMER_EVENTS]).handler = handle
        try:
            await rt.start()
            for n in range(30):
                await producer.send_and_wait(topic, b"%d" % n, key=b"k%d" % n)
            for _ in range(300):
                if len(seen) >= 30:
                    break
                await asyncio.sleep(0.05)
            assert rt.consumer is not None
            return type(rt.consumer._fetcher), len(seen)
        finally:
            await rt.stop()
            await producer.stop()

    on = asyncio.run(run(1))
    off = asyncio.run(run(0))
    assert on == (SessionFetcher, 30)
    assert off[0] is not SessionFetcher and off[1] == 30
