"""The producers' records outlast a broker outage (``transport.outlast_outages``): no broker needed."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from cxstream.streams.batch import BatchRuntime
from cxstream.streams.settings import Settings
from cxstream.streams.transport import IDEMPOTENT, outlast_outages


def test_records_wait_for_a_broker_as_long_as_the_setting_says() -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", request_timeout_ms=40_000, **IDEMPOTENT)
        try:
            outlast_outages(producer, 300.0)
            accumulator = producer._message_accumulator
            batch = accumulator._append_batch(accumulator.create_builder(), ("t", 0))
            assert batch._ttl == 300.0, "a waiting record fails after the outage bound, not the 40 s request timeout"
            assert producer._request_timeout_ms == 40_000, "requests to a broker that answers keep their timeout"
        finally:
            await producer.stop()  # never started: nothing to flush

    asyncio.run(run())


def test_the_bound_is_a_setting() -> None:
    settings = Settings.from_env({"CX_BROKER_OUTAGE_MAX_S": "42"})
    assert settings.broker_outage_max_s == 42.0
    assert BatchRuntime("127.0.0.1:9", settings).settings.broker_outage_max_s == 42.0
