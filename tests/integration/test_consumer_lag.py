"""cx_consumer_lag_records on the real broker: a stuck stage's lag grows with what is produced, and drains to 0."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from cxstream.streams.admin import ensure_topics
from cxstream.streams.batch import BatchRuntime, Record
from cxstream.streams.settings import Settings
from cxstream.streams.topics import CUSTOMER_EVENTS, DEAD_LETTER

pytestmark = pytest.mark.integration


async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout:.0f} s: {what}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("client", ["aiokafka", pytest.param("librdkafka", marks=pytest.mark.librdkafka)])
def test_lag_of_a_stuck_stage_grows_with_the_log_and_drains_when_it_goes_on(servers: tuple[str, str], client: str) -> None:
    """On librdkafka the end offsets are the high watermarks of its own fetches, which go on while the stage is stuck."""
    broker, _ = servers
    tag = uuid.uuid4().hex[:8]
    settings = Settings(topic_prefix=f"lag{tag}.", app_id=f"cxlag-{tag}", partitions=1, stage_client=client)
    topic = settings.topic_prefix + CUSTOMER_EVENTS.name

    def lag() -> float | None:
        return REGISTRY.get_sample_value("cx_consumer_lag_records", {"stage": "context", "topic": topic, "partition": "0"})

    async def scenario() -> None:
        await ensure_topics(broker, settings, (CUSTOMER_EVENTS, DEAD_LETTER), prefix=settings.topic_prefix)
        producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
        await producer.start()
        rt = BatchRuntime(broker, settings, lag_interval_s=0.2)
        gate = asyncio.Event()
        seen: list[int] = []

        async def handle(rec: Record) -> None:
            await gate.wait()  # stuck until the test lets it go on
            seen.append(rec.offset)

        rt.stage("context", [CUSTOMER_EVENTS]).handler = handle
        try:
            for i in range(30):
                await producer.send_and_wait(topic, b"%d" % i, key=b"k")
            await rt.start()
            await until(lambda: lag() == 30, f"a lag of 30 while the first batch is stuck (lag {lag()})")
            for i in range(10):  # the loop cannot fetch: the lag comes from the broker's end offsets
                await producer.send_and_wait(topic, b"more %d" % i, key=b"k")
            await until(lambda: lag() == 40, f"a lag of 40 after 10 more records (lag {lag()})")
            gate.set()
            await until(lambda: lag() == 0, f"the lag drains to 0 once the stage goes on (lag {lag()})")
            assert seen == list(range(40))
        finally:
            gate.set()
            await rt.stop()
            await producer.stop()
        assert lag() is None, "a stopped worker reports no lag for partitions it no longer owns"

    asyncio.run(scenario())
