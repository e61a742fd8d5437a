"""The Redis write-behind forgets the copies of a partition given up in a rebalance.

Its next owner restores the partition from the changelog and writes every copy again; a retry
of ours landing after that would put an older context back (found by ``make chaos``: contexts in
Redis missing updates after a ``kill -9`` with rebalances at 100,000 customers).  The failing
flushes here are real: redis-py against a port where nothing listens.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from cxstream.agents.context import RedisContextWriter
from cxstream.streams.embedded import free_port
from cxstream.streams.keys import context_key


def _writer() -> RedisContextWriter:
    client = aioredis.Redis(port=free_port(), socket_connect_timeout=1.0, retry=None)  # nothing listens there
    return RedisContextWriter(client, ttl_s=60)


def test_a_failed_flush_keeps_its_copies_for_a_retry() -> None:
    async def run() -> int:
        w = _writer()
        w.mark("c1", b"{}")
        w.mark("c2", b"{}")
        assert await w.flush() == 0
        return w.pending

    assert asyncio.run(run()) == 2


def test_copies_forgotten_before_or_during_a_failing_flush_are_not_retried() -> None:
    async def run() -> set[str]:
        w = _writer()
        w.mark("given-up-before", b"{}")
        w.mark("given-up-during", b"{}")
        w.mark("kept", b"{}")
        w.forget([context_key("given-up-before")])
        flushing = asyncio.create_task(w.flush())
        await asyncio.sleep(0)  # the flush took its batch and waits on the connection
        assert w.pending == 0
        w.forget([context_key("given-up-during")])
        assert await flushing == 0
        return set(w._dirty)

    assert asyncio.run(run()) == {context_key("kept")}
