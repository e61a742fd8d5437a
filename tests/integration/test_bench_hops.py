"""What the pipeline bench reads from the broker beside the e2e: when ingest was done with each contact (``cx.resolve.v1``), the table changes and every topic's records written, and a topic read to its end (``read_to_end``, also the chaos checks' reader)."""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
from aiokafka import AIOKafkaProducer

from cxstream.bench.loadgen import GroupLag, resolve_times
from cxstream.replay.publish import read_to_end
from cxstream.schemas import Identifiers, InteractionEvent, ResolveRequest
from cxstream.streams.admin import ensure_named_topics
from cxstream.streams.settings import Settings


def _request(kind: str, contact: str) -> bytes:
    event = InteractionEvent(event_id=f"{kind}-{contact}", occurred_at=1.0, channel="chat", kind=kind,
                             customer=Identifiers(email=f"{contact}@example.com"), contact_id=contact,
                             needs_advisor=kind == "contact_opened")
    return msgspec.json.encode(ResolveRequest(event=event))


def test_resolve_times_are_the_producers_timestamps_of_each_contacts_opening(servers: tuple[str, str]) -> None:
    broker, _ = servers
    topic = f"hops-{uuid.uuid4().hex[:8]}.cx.resolve.v1"

    async def run() -> tuple[float, float, dict[str, float]]:
        await ensure_named_topics(broker, [(topic, 1, {})], Settings())
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"not json")  # skipped, not fatal
            before = time.time()
            await producer.send_and_wait(topic, _request("contact_opened", "c1"))
            await producer.send_and_wait(topic, _request("message", "c1"))
            await producer.send_and_wait(topic, _request("contact_opened", "c2"))
            await producer.send_and_wait(topic, _request("contact_opened", "c3"))  # not asked for
            after = time.time()
        finally:
            await producer.stop()
        return before, after, await resolve_times(broker, topic, before - 60, {"c1", "c2", "c9"})

    before, after, got = asyncio.run(run())
    assert set(got) == {"c1", "c2"}
    assert all(before - 0.002 <= t <= after + 0.002 for t in got.values()), (before, got, after)
    assert got["c1"] <= got["c2"]


def test_changelog_ends_and_topic_ends_count_the_records_written_to_this_engine_s_topics(servers: tuple[str, str]) -> None:
    broker, _ = servers
    tag = uuid.uuid4().hex[:8]
    app_id, prefix = f"cxhops-{tag}", f"hops{tag}."
    router, identity, routing = f"{app_id}-router_state-changelog", f"{app_id}-identity-changelog", f"{prefix}cx.routing.v1"
    others = [f"{app_id}x-other-changelog", f"other{tag}.cx.routing.v1"]

    async def run() -> tuple[list[tuple[dict[str, int], dict[str, int]]], dict[str, int]]:
        await ensure_named_topics(broker, [(router, 2, {}), (identity, 1, {}), (routing, 2, {}), *((o, 1, {}) for o in others)],
                                  Settings())
        lag = GroupLag(broker, app_id, prefix)
        await lag.start()
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            before = (await lag.changelog_ends(), await lag.topic_ends())
            for topic, partition in ((router, 0), (router, 1), (router, 1), (routing, 1)):
                await producer.send_and_wait(topic, b"s", key=b"g", partition=partition)
            for other in others:
                await producer.send_and_wait(other, b"not this engine's")
            after = (await lag.changelog_ends(), await lag.topic_ends())
            return [before, after], lag.by_table(after[1])
        finally:
            await producer.stop()
            await lag.stop()

    ((changelogs0, topics0), (changelogs, topics)), derived = asyncio.run(run())
    assert changelogs0 == {"router_state": 0, "identity": 0}
    assert changelogs == {"router_state": 3, "identity": 0}, "both partitions, and not another app's changelog"
    assert topics0 == {router: 0, identity: 0, routing: 0}
    assert topics == {router: 3, identity: 0, routing: 1}, "the changelogs and the prefixed topics, no other"
    assert derived == changelogs, "the changelogs' part of every topic's ends"


def test_read_to_end_reads_a_topic_to_its_end_now_from_the_start_or_a_time_past_transaction_markers(servers: tuple[str, str]) -> None:
    broker, _ = servers
    topic = f"hops-{uuid.uuid4().hex[:8]}.read"

    async def run() -> tuple[list, list, float]:
        await ensure_named_topics(broker, [(topic, 2, {})], Settings())
        plain = AIOKafkaProducer(bootstrap_servers=broker)
        await plain.start()
        try:
            await plain.send_and_wait(topic, b"a", partition=0)
            await asyncio.sleep(0.05)
            middle = time.time()
            await plain.send_and_wait(topic, b"b", partition=1)
        finally:
            await plain.stop()
        # a committed transaction leaves a marker after its record: the last offset holds no record
        tx = AIOKafkaProducer(bootstrap_servers=broker, transactional_id=f"tx-{topic}")
        await tx.start()
        try:
            async with tx.transaction():
                await tx.send(topic, b"c", partition=0)
        finally:
            await tx.stop()
        everything = await asyncio.wait_for(read_to_end(broker, topic), 30)
        later = await asyncio.wait_for(read_to_end(broker, topic, since_s=middle), 30)
        return everything, later, middle

    everything, later, middle = asyncio.run(run())
    assert sorted((m.partition, m.value) for m in everything) == [(0, b"a"), (0, b"c"), (1, b"b")]
    assert sorted(m.value for m in later) == [b"b", b"c"]
    assert all(m.timestamp / 1000 >= middle - 0.002 for m in later)
