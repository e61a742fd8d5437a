"""The Redis write-behind through an outage: kept, backed off, bounded, drained and resynced when Redis is back;
and the copies of a partition given up in a rebalance are forgotten, never retried.

Redis is real: first nothing listens on its port (every connection is refused, as when Redis is
stopped), then the embedded redis-server starts on that port.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from cxstream.agents.context import RedisContextWriter
from cxstream.serve.pipelined import PipelinedRedis
from cxstream.streams.embedded import EmbeddedRedis, free_port
from cxstream.streams.keys import context_key


def value(name: str) -> float:
    return float(REGISTRY.get_sample_value(name) or 0.0)


def test_an_outage_keeps_the_copies_backs_off_and_bounds_them(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    async def run() -> None:
        writer = RedisContextWriter(None, ttl_s=60, pipelined=PipelinedRedis(url, timeout_s=1.0), max_pending=6)  # type: ignore[arg-type]
        for n in range(3):
            writer.mark(f"c{n}", b"v%d" % n)
        errors = value("cx_redis_errors_total")
        assert await writer.flush() == 0
        assert writer.pending == 3 and not writer.up
        assert value("cx_redis_up") == 0 and value("cx_redis_pending_writes") == 3
        assert value("cx_redis_errors_total") == errors + 1
        assert await writer.flush() == 0, "within the backoff nothing is tried"
        assert value("cx_redis_errors_total") == errors + 1
        with pytest.raises(RedisConnectionError):  # the caller queues it
            await writer.delete([context_key("gone")])
        writer.mark_key(context_key("gone"), None)

        dropped = value("cx_redis_writes_dropped_total")
        for n in range(3, 6):  # past the bound: the writes are let go, the delete is kept
            writer.mark(f"c{n}", b"v%d" % n)
        assert writer._dirty == {context_key("gone"): None}
        assert value("cx_redis_writes_dropped_total") > dropped

        table = {f"c{n}": b"v%d" % n for n in range(8)}  # what the owner's table holds: marked again on recovery

        def resync() -> None:
            for k, v in table.items():
                writer.mark(k, v)

        writer.resyncs.append(resync)
        server = EmbeddedRedis(tmp_path / "redis", port=port)
        server.start()
        try:
            client = redis.Redis.from_url(url)
            client.set(context_key("gone"), b"erased customer")
            deadline = time.monotonic() + 30
            while writer.pending or not writer.up:
                assert time.monotonic() < deadline, f"the write-behind did not drain: {writer.pending} pending"
                await writer.flush()
                await asyncio.sleep(0.05)
            assert value("cx_redis_up") == 1 and value("cx_redis_pending_writes") == 0
            assert client.get(context_key("gone")) is None, "the queued delete was applied"
            assert {k: client.get(context_key(k)) for k in table} == table, "every copy was rewritten from the table"
            client.close()
        finally:
            await writer.pipelined.close()  # type: ignore[union-attr]
            server.stop()

    asyncio.run(run())


# A partition given up in a rebalance: its next owner restores it from the changelog and writes every copy
# again; a retry of ours landing after that would put an older context back (found by make chaos after a
# kill -9 with rebalances at 100,000 customers).

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


def test_a_pending_delete_is_not_forgotten_with_its_partition() -> None:
    """The next owner's resync writes the copies its table holds and deletes none: a merged-away
    or erased customer's copy would stay in Redis if its pending delete were forgotten."""
    w = _writer()
    w.mark_key(context_key("erased"), None)
    w.mark("changed", b"{}")
    w.forget([context_key("erased"), context_key("changed")])
    assert w._dirty == {context_key("erased"): None}
