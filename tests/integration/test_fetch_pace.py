"""The held fetch on the real broker: while held, a record waits for the broker's wait; released, it does not."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from cxstream.streams.admin import ensure_topics
from cxstream.streams.batch import BatchRuntime, Record
from cxstream.streams.settings import Settings
from cxstream.streams.topics import CUSTOMER_EVENTS, DEAD_LETTER

pytestmark = pytest.mark.integration

HELD_MS = 1500


def test_a_held_fetch_keeps_a_lone_record_until_the_wait_and_a_released_one_does_not(servers: tuple[str, str]) -> None:
    broker, _ = servers
    tag = uuid.uuid4().hex[:8]
    settings = Settings(topic_prefix=f"pace{tag}.", app_id=f"cxpace-{tag}", partitions=1, fetch_pace_max_ms=HELD_MS)
    topic = settings.topic_prefix + CUSTOMER_EVENTS.name

    async def scenario() -> None:
        await ensure_topics(broker, settings, (CUSTOMER_EVENTS, DEAD_LETTER), prefix=settings.topic_prefix)
        producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
        await producer.start()
        rt = BatchRuntime(broker, settings)
        arrived: asyncio.Queue[float] = asyncio.Queue()

        async def handle(rec: Record) -> None:
            arrived.put_nowait(time.monotonic())

        rt.stage("context", [CUSTOMER_EVENTS]).handler = handle

        async def delivery(n: int) -> float:
            """Produce record *n*; how long until the stage has it."""
            sent = time.monotonic()
            await producer.send_and_wait(topic, b"%d" % n, key=b"k")
            return await asyncio.wait_for(arrived.get(), 30) - sent

        try:
            await rt.start()
            assert rt.pacer is not None and rt.pacer._task is not None  # sampling the worker's CPU
            await rt.pacer.stop()  # the test sets the wait itself
            await delivery(0)
            rt.pacer.set_wait(HELD_MS)
            await asyncio.sleep(0.2)  # the fetch in flight, built released, returns empty after 10 ms; the next is held
            held = await delivery(1)
            rt.pacer.set_wait(0)
            await asyncio.sleep(HELD_MS / 1000 + 0.3)  # the held fetch in flight runs out; the next is released
            released = await delivery(2)
        finally:
            await rt.stop()
            await producer.stop()
        # held: the broker answered when the fetch's wait ran out (16 KB never came), at least 1.3 s after record 1
        assert held >= 0.8 * HELD_MS / 1000, f"a held fetch answered after {held * 1000:.0f} ms"
        assert released < 0.5 * HELD_MS / 1000, f"a released fetch answered after {released * 1000:.0f} ms"

    asyncio.run(scenario())
