"""A Redis outage, then a broker outage, with the batch stages on librdkafka (``CX_STAGE_CLIENT=librdkafka``).

The same test as ``test_outages.py`` (which runs on the default client, aiokafka).  A restarted
broker answers its first metadata requests without the engine's topics; librdkafka then fails the
records queued for them at once, and the stages' producer holds them, and every record sent after,
until the broker knows the partitions again (``RdProducer._hold_back``).  And the end offsets (the
lag, ``cx_broker_up``) must be read again soon after a restart (below).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cxstream.streams.embedded import EmbeddedBroker
from cxstream.streams.rdkafka import RdConsumer, consumer_config
from cxstream.streams.settings import Settings
from tests.integration.conftest import RunningEngine
from tests.integration.helpers import stages_on_librdkafka  # noqa: F401  (autouse: this module's engines)
from tests.integration.test_outages import engine, servers_to_stop, test_redis_then_broker_outage  # noqa: F401

pytestmark = pytest.mark.librdkafka  # deselected by default: make test-librdkafka


def test_the_outage_engine_ran_on_librdkafka(engine: RunningEngine) -> None:  # noqa: F811
    assert "stages: Kafka client librdkafka" in engine.output()


def test_end_offsets_are_read_again_soon_after_a_broker_restart(tmp_path: Path) -> None:
    """The stages' end offsets (their lag, and ``cx_broker_up``) are read again within seconds of a broker's return.

    They were read by librdkafka's admin client, which after a restart failed every request with
    "No leaders found" for 90 s and more (on the CI machine ``cx_broker_up`` stayed 0 after the
    outage); they are asked with the consumer's own client now (``RdConsumer.end_offsets``).  This
    test's process also aborts in some runs during the restart (librdkafka issue #3663; see
    docs/ARCHITECTURE.md, "The stages' Kafka client")."""
    topics = ["rd.a", "rd.b"]
    tps = [TopicPartition(topic, p) for topic in topics for p in range(2)]

    async def ends(consumer: RdConsumer) -> dict[TopicPartition, int] | None:
        try:
            return await asyncio.wait_for(consumer.end_offsets(tps), timeout=5.0)
        except Exception:
            return None

    async def run(broker: EmbeddedBroker) -> float:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.url)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 2, 1) for topic in topics])
        finally:
            await admin.close()
        consumer = RdConsumer(Settings(), consumer_config(
            bootstrap=broker.url, group_id="rd-restart", fetch_wait_ms=10, session_ms=6000, isolation_level="read_uncommitted",
        ))
        consumer.subscribe(topics, listener=None)
        await consumer.start()

        async def poll() -> None:  # as the stages' loop does, all along
            while True:
                await consumer.getmany(timeout_ms=100, max_records=100)

        polling = asyncio.create_task(poll())
        try:
            assert await ends(consumer) == dict.fromkeys(tps, 0)
            await asyncio.to_thread(broker.stop_kafka)
            assert await ends(consumer) is None, "the broker is down"
            await asyncio.sleep(3.0)
            await asyncio.to_thread(broker.start_kafka)
            back = time.monotonic()
            while await ends(consumer) is None:
                assert time.monotonic() - back < 30.0, "the end offsets were not read again within 30 s of the broker's return"
                await asyncio.sleep(1.0)
            return time.monotonic() - back
        finally:
            polling.cancel()
            await consumer.stop()

    with EmbeddedBroker(tmp_path / "broker") as broker:
        asyncio.run(run(broker))
