"""The routers' tick while a rebalance takes groups away (found by tests/integration/test_fuzz_engine.py)."""

from __future__ import annotations

import asyncio

import msgspec

from cxstream.agents.router import RouterHost, tick_groups
from cxstream.schemas import RouterTick


def test_a_group_dropped_while_the_tick_sends_is_skipped_not_a_crash() -> None:
    """The tick awaits a send per group; a rebalance meanwhile dropped the next group, whose KeyError stopped the engine."""
    host = RouterHost()
    for group in ("g1", "g2", "g3"):
        host.restored(group, None)
    sent: list[RouterTick] = []

    async def send_now(topic: str, value: bytes, key: bytes) -> None:
        sent.append(msgspec.json.decode(value, type=RouterTick))
        if len(sent) == 1:
            host.dropped("g2")  # the partition of g2 is revoked while the first tick record is in flight

    asyncio.run(tick_groups(host, send_now, "cx.routing.v1", None))
    assert [s.routing_group for s in sent] == ["g1", "g3"]
    assert set(host.routers) == set(host.clocks) == {"g1", "g3"}
