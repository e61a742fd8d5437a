"""A worker exports what it owns only: the lag of its partitions, the statistics of its routing groups.

A series left behind after a rebalance would count in every dashboard and alert beside the new owner's."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from cxstream.agents.router import RouterHost, publish_stats
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


def test_a_routing_groups_statistics_go_with_the_group() -> None:
    host = RouterHost()
    stats = {"total": {"waiting": 3, "longest_wait_s": 40.0, "service_level": 0.8, "asa_s": 12.0, "abandon_rate": 0.1,
                       "occupancy": 0.7}, "advisors": {"available": 2}}
    publish_stats("billing-own", stats)
    publish_stats("sales-own", stats)
    names = ["cx_queue_waiting", "cx_advisors_available", "cx_queue_longest_wait_seconds", "cx_service_level", "cx_asa_seconds",
             "cx_abandon_rate", "cx_advisor_occupancy"]

    def values(group: str) -> list[float | None]:
        return [REGISTRY.get_sample_value(n, {"routing_group": group}) for n in names]

    assert values("billing-own") == [3, 2, 40.0, 0.8, 12.0, 0.1, 0.7]
    host.dropped("billing-own")  # another worker owns it now
    assert values("billing-own") == [None] * 7
    assert values("sales-own") == [3, 2, 40.0, 0.8, 12.0, 0.1, 0.7]
    host.dropped("billing-own")  # twice (or a group that never had statistics): nothing to remove
