"""The lean Kafka wire client (cxstream/streams/wire.py) on the real broker.

Records produced in multi-partition requests arrive whole and in order (read back by aiokafka);
a request sent twice, as a retry would, is stored once (the idempotent producer's sequences); a
fetch session reads every record once while naming only the partitions that moved; and committed
offsets are what aiokafka reads for the group.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cxstream.streams import wire
from cxstream.streams.admin import ensure_named_topics
from cxstream.streams.settings import Settings

pytestmark = pytest.mark.integration

PARTITIONS = 4


async def _connect(broker: str, topic: str) -> tuple[wire.Connection, wire.Producer]:
    host, port = broker.split(",")[0].rsplit(":", 1)
    conn = await wire.Connection.connect(host, int(port), "test-wire")
    await wire.check_versions(conn)
    for _ in range(100):  # the topic was just made: wait for its leaders
        meta = wire.parse_metadata(await conn.request(wire.API_METADATA, wire.metadata_request([topic])))
        if meta.partitions.get(topic) == PARTITIONS and all(meta.leaders[(topic, p)] >= 0 for p in range(PARTITIONS)):
            break
        await asyncio.sleep(0.1)
    pid = wire.parse_init_producer_id(await conn.request(wire.API_INIT_PRODUCER_ID, wire.init_producer_id_request()))
    return conn, wire.Producer(*pid)


async def _read_all(broker: str, topic: str, count: int) -> dict[int, list[tuple[int, bytes | None, bytes | None, list]]]:
    reader = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, auto_offset_reset="earliest")
    await reader.start()
    got: dict[int, list[tuple[int, bytes | None, bytes | None, list]]] = {}
    try:
        reader.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        while sum(map(len, got.values())) < count:
            for tp, records in (await asyncio.wait_for(reader.getmany(timeout_ms=200), 30)).items():
                got.setdefault(tp.partition, []).extend((r.offset, r.key, r.value, list(r.headers)) for r in records)
        await asyncio.sleep(0.3)  # and nothing more (a duplicate would come now)
        for tp, records in (await reader.getmany(timeout_ms=300)).items():
            got.setdefault(tp.partition, []).extend((r.offset, r.key, r.value, list(r.headers)) for r in records)
    finally:
        await reader.stop()
    return got


def test_records_produced_in_multi_partition_requests_arrive_once_and_in_order_even_when_a_request_is_resent(
    servers: tuple[str, str],
) -> None:
    broker, _ = servers
    topic = f"wire-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        await ensure_named_topics(broker, [(topic, PARTITIONS, {})], Settings())
        conn, producer = await _connect(broker, topic)
        try:
            for request in range(3):
                for i in range(10):
                    n = request * 10 + i
                    producer.add(topic, n % PARTITIONS, b"k%d" % n, b"v%d" % n, None, [("n", b"%d" % n)])
                body, count = producer.request()
                assert count == 10
                answer = wire.parse_produce(await conn.request(wire.API_PRODUCE, body))
                assert set(answer) == {(topic, p) for p in range(PARTITIONS)}
                assert not list(wire.failures(answer))
                if request == 1:  # the same request again, as a retry after a lost answer would send it
                    again = wire.parse_produce(await conn.request(wire.API_PRODUCE, body))
                    assert not list(wire.failures(again))
                    assert {tp: base for tp, (_, base) in again.items()} == {tp: base for tp, (_, base) in answer.items()}
        finally:
            conn.close()
        got = await _read_all(broker, topic, 30)
        for p in range(PARTITIONS):
            numbers = [n for n in range(30) if n % PARTITIONS == p]
            assert got[p] == [(i, b"k%d" % n, b"v%d" % n, [("n", b"%d" % n)]) for i, n in enumerate(numbers)]

    asyncio.run(scenario())


def test_a_fetch_session_reads_every_record_once_naming_only_what_moved_and_commits_what_aiokafka_reads(
    servers: tuple[str, str],
) -> None:
    broker, _ = servers
    topic, group = f"wire-{uuid.uuid4().hex[:8]}", f"wire-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        await ensure_named_topics(broker, [(topic, PARTITIONS, {})], Settings())
        conn, producer = await _connect(broker, topic)
        session = wire.Session({(topic, p): 0 for p in range(PARTITIONS)}, max_wait_ms=10)
        got: dict[int, list[bytes | None]] = {}
        named: list[int] = []
        try:
            for n in range(40):  # a record at a time to one partition (0, then 1, ...), fetched as it comes
                producer.add(topic, (n // 10) % PARTITIONS, None, b"%d" % n, None)
                assert not list(wire.failures(wire.parse_produce(
                    await conn.request(wire.API_PRODUCE, producer.request()[0]))))
                fetched = 0
                while fetched == 0:
                    body = session.request()
                    named.append(sum(1 for _ in _partitions_named(body)))
                    answer = wire.parse_fetch(await asyncio.wait_for(conn.request(wire.API_FETCH, body), 10))
                    session.answered(answer)
                    for part in answer.partitions:
                        assert part.error == 0
                        tp = (part.topic, part.partition)
                        for _, rec in wire.records_of(part.records):
                            if rec.offset >= session.offsets[tp]:
                                got.setdefault(part.partition, []).append(rec.value)
                                session.offsets[tp] = rec.offset + 1
                                fetched += 1
            committed = wire.parse_offset_commit(await conn.request(
                wire.API_OFFSET_COMMIT, wire.offset_commit_request(group, session.offsets)))
            assert committed == {}
        finally:
            conn.close()
        assert got == {p: [b"%d" % n for n in range(p * 10, p * 10 + 10)] for p in range(PARTITIONS)}
        assert session.full_requests == 1 and session.session_id != 0
        assert named[0] == PARTITIONS and max(named[1:]) <= 1  # after the first, only the partition that moved

        reader = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
        await reader.start()
        try:
            assert {p: await reader.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)} == \
                {p: 10 for p in range(PARTITIONS)}
        finally:
            await reader.stop()

    asyncio.run(scenario())


def _partitions_named(body: bytes) -> list[tuple[str, int]]:
    r = wire.Reader(body, 25)  # past the fixed fields of Fetch v11
    out = []
    for _ in range(r.i32()):
        t = r.string() or ""
        for _ in range(r.i32()):
            out.append((t, r.i32()))
            r.pos += 24
    return out
