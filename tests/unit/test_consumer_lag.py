"""cx_consumer_lag_records: end offset minus what the worker has finished, for the partitions it owns only."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from cxstream.streams.batch import BatchRuntime
from cxstream.streams.settings import Settings
from cxstream.streams.topics import CUSTOMER_EVENTS, ROUTING


def lag(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("cx_consumer_lag_records", {"stage": "context" if "customer" in topic else "router",
                                                                 "topic": topic, "partition": str(partition)})


def message(offset: int) -> Any:
    return SimpleNamespace(offset=offset, key=b"k", value=b"v", timestamp=None, headers=None)


def test_lag_is_the_end_offset_minus_what_is_finished_and_goes_with_the_partition() -> None:
    async def scenario() -> None:
        rt = BatchRuntime("127.0.0.1:9", Settings(topic_prefix="lag."), local_delivery=False)
        ctx = rt.stage("context", [CUSTOMER_EVENTS])
        rt.stage("router", [ROUTING])
        done: list[int] = []

        async def handle(rec: Any) -> None:
            done.append(rec.offset)

        ctx.handler = handle
        tp0, tp1 = TopicPartition("lag.cx.customer-events.v1", 0), TopicPartition("lag.cx.customer-events.v1", 1)
        other = TopicPartition("lag.cx.routing.v1", 0)
        rt.owned |= {tp0, tp1}

        rt.set_lag({tp0: 40, tp1: 7, other: 99})
        assert lag(tp0.topic, 0) is None, "nothing fetched yet and no consumer: no position to count from"
        assert lag(other.topic, 0) is None, "a partition another worker owns is not reported"

        # a batch fetched from offset 10 is in flight (not acknowledged): everything from 10 is still to do
        acked = asyncio.get_running_loop().create_future()

        async def send_all() -> list[Any]:  # the batch's outputs, acknowledged when the test says so
            return [acked]

        rt._producer = SimpleNamespace()  # type: ignore[assignment]
        rt.send_all = send_all  # type: ignore[method-assign]
        await rt.process({tp0: [message(10), message(11), message(12)]})
        assert done == [10, 11, 12]
        rt.set_lag({tp0: 40, tp1: 7})
        assert lag(tp0.topic, 0) == 30

        # acknowledged: the worker commits 13 next
        acked.set_result(None)
        await rt.settle()
        rt.set_lag({tp0: 40, tp1: 7})
        assert lag(tp0.topic, 0) == 27
        rt.set_lag({tp0: 13})
        assert lag(tp0.topic, 0) == 0

        # given up in a rebalance: its series goes (the new owner reports it)
        await rt._revoked([tp0])
        assert lag(tp0.topic, 0) is None
        rt.set_lag({tp0: 50})
        assert lag(tp0.topic, 0) is None

    asyncio.run(scenario())
