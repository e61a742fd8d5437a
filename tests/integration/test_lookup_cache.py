"""The API's context lookup cache (cxstream.serve.lookupcache) on a real Redis: it never serves what Redis changed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from cxstream.context.model import CustomerContext, decode_context, encode_context
from cxstream.serve.http import ContextLookup, HttpServer, build_app
from cxstream.serve.lookupcache import Invalidations, LookupCache
from cxstream.serve.pipelined import PipelinedRedis
from cxstream.streams.embedded import EmbeddedRedis
from cxstream.streams.keys import SHARED, alias_key, context_key, identifier_key
from tests.integration.helpers import wait_for_async

pytestmark = pytest.mark.integration

KEY = "cache-key"


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("cx_lookup_cache_total", {"outcome": outcome}) or 0.0


def stored(customer_id: str, version: int) -> bytes:
    return encode_context(CustomerContext(customer_id=customer_id, created_at=1.0, updated_at=float(version)))


def by_id(customer_id: str) -> tuple[list[str], str]:
    return [context_key(customer_id), alias_key(customer_id), identifier_key("customer_id", customer_id)], "id"


@asynccontextmanager
async def cached_lookup(
    redis_url: str, *, retry_s: float = 1.0, ping_s: float = 5.0, pipelined: bool = True,
) -> AsyncIterator[ContextLookup]:
    cache = LookupCache(16 << 20, 60.0)
    invalidations = Invalidations(cache, lambda on_message: PipelinedRedis(redis_url, on_message=on_message, reconnect=False),
                                  retry_s=retry_s, ping_s=ping_s)
    client = aioredis.from_url(redis_url)
    lookup = ContextLookup(client, PipelinedRedis(redis_url) if pipelined else None, cache=cache, invalidations=invalidations)
    lookup.start()
    try:
        assert await invalidations.wait_live(5.0)
        yield lookup
    finally:
        await lookup.close()
        await client.aclose()


async def test_a_context_written_by_another_client_is_never_served_old(servers: tuple[str, str]) -> None:
    cid = f"LC{uuid.uuid4().hex[:8]}"
    writer = aioredis.from_url(servers[1])
    hits = counted("hit")
    try:
        async with cached_lookup(servers[1]) as lookup:
            for version in range(300):
                await writer.set(context_key(cid), stored(cid, version))
                for _ in range(2):  # the first asks Redis, the second is answered from the cache
                    code, raw = await lookup(*by_id(cid))
                    assert code == 1 and raw is not None and decode_context(raw).updated_at == version
            assert counted("hit") - hits == 300
            await writer.delete(context_key(cid))  # erasure deletes the keys
            assert await lookup(*by_id(cid)) == (0, None)
    finally:
        await writer.aclose()


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "redis-py"])
async def test_answers_through_an_alias_or_an_identifier_follow_every_key_read(servers: tuple[str, str], pipelined: bool) -> None:
    tag = uuid.uuid4().hex[:8]
    old, new, other, email = f"LA{tag}old", f"LA{tag}new", f"LA{tag}other", f"la{tag}@example.org"
    writer = aioredis.from_url(servers[1])
    try:
        await writer.mset({context_key(new): stored(new, 1), context_key(other): stored(other, 1),
                           alias_key(old): new, identifier_key("email", email): new})
        by_email = ([identifier_key("email", email)], "ident")
        async with cached_lookup(servers[1], pipelined=pipelined) as lookup:

            async def customer(keys: list[str], mode: str) -> tuple[str, float] | int:
                code, raw = await lookup(keys, mode)
                return (decode_context(raw).customer_id, decode_context(raw).updated_at) if raw is not None else code

            for _ in range(2):
                assert await customer(*by_id(old)) == (new, 1.0)
                assert await customer(*by_email) == (new, 1.0)
            await writer.set(context_key(new), stored(new, 2))  # the context they were read through changed
            assert await customer(*by_id(old)) == (new, 2.0)
            assert await customer(*by_email) == (new, 2.0)
            await writer.mset({alias_key(old): other, identifier_key("email", email): other})  # re-pointed
            assert await customer(*by_id(old)) == (other, 1.0)
            assert await customer(*by_email) == (other, 1.0)
            await writer.set(context_key(old), stored(old, 5))  # a context under the old id itself wins over its alias
            assert await customer(*by_id(old)) == (old, 5.0)
            await writer.set(identifier_key("email", email), SHARED)  # quarantined: ambiguous
            assert await customer(*by_email) == 2
    finally:
        await writer.aclose()


async def test_an_erased_customer_is_not_served_by_the_api(servers: tuple[str, str]) -> None:
    cid = f"LE{uuid.uuid4().hex[:8]}"
    writer = aioredis.from_url(servers[1])
    client = aioredis.from_url(servers[1])
    cache = LookupCache(16 << 20, 60.0)
    invalidations = Invalidations(cache, lambda on_message: PipelinedRedis(servers[1], on_message=on_message, reconnect=False))
    app = build_app(client, frozenset({KEY}), "cache-test", pipelined=PipelinedRedis(servers[1]), lookup_cache=(cache, invalidations))
    server = HttpServer(app, "127.0.0.1", 0, lookup_front=True)
    await server.start()
    try:
        assert await invalidations.wait_live(5.0)
        await writer.set(context_key(cid), stored(cid, 1))
        hits = counted("hit")
        async with aiohttp.ClientSession(headers={"X-API-Key": KEY}) as http:
            for _ in range(3):
                async with http.get(f"{server.url}/customers/{cid}/context") as response:
                    assert response.status == 200 and (await response.json())["customer_id"] == cid
            assert counted("hit") - hits == 2
            async with http.get(f"{server.url}/metrics") as response:  # the API exports its cache's metrics itself
                exported = await response.text()
            assert 'cx_lookup_cache_total{outcome="hit"}' in exported and "cx_lookup_cache_live 1.0" in exported
            await writer.delete(context_key(cid))
            async with http.get(f"{server.url}/customers/{cid}/context") as response:
                assert response.status == 404, await response.text()
    finally:
        await server.stop()
        await client.aclose()
        await writer.aclose()


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "redis") as server:
        yield server


async def test_a_lost_subscription_or_a_flush_empties_the_cache_until_it_is_back(private_redis: EmbeddedRedis) -> None:
    url = private_redis.url
    writer = aioredis.from_url(url)
    try:
        await writer.set(context_key("c1"), stored("c1", 1))
        async with cached_lookup(url, retry_s=0.2) as lookup:
            cache = lookup.cache
            assert cache is not None
            await lookup(*by_id("c1"))
            assert len(cache) == 1
            await writer.flushdb()  # Redis names no key: everything goes
            await wait_for_async(lambda: len(cache) == 0, timeout=5.0)
            assert await lookup(*by_id("c1")) == (0, None)

            await writer.set(context_key("c1"), stored("c1", 2))
            await lookup(*by_id("c1"))
            assert len(cache) == 1
            assert await writer.client_kill_filter(_type="pubsub") == 1  # the invalidations' connection
            await wait_for_async(lambda: not cache.live, timeout=5.0)
            assert len(cache) == 0
            bypassed = counted("bypass")
            await writer.set(context_key("c1"), stored("c1", 3))  # while nothing reports changes
            _, raw = await lookup(*by_id("c1"))
            assert raw is not None and decode_context(raw).updated_at == 3.0 and counted("bypass") == bypassed + 1
            await wait_for_async(lambda: cache.live, timeout=5.0)  # subscribed again (retry_s)
            await lookup(*by_id("c1"))
            await writer.set(context_key("c1"), stored("c1", 4))
            _, raw = await lookup(*by_id("c1"))
            assert raw is not None and decode_context(raw).updated_at == 4.0
    finally:
        await writer.aclose()


async def test_a_redis_that_stops_answering_empties_the_cache(private_redis: EmbeddedRedis) -> None:
    writer = aioredis.from_url(private_redis.url)
    try:
        await writer.set(context_key("c1"), stored("c1", 1))
        async with cached_lookup(private_redis.url, ping_s=0.2) as lookup:
            cache = lookup.cache
            assert cache is not None
            await lookup(*by_id("c1"))
            assert len(cache) == 1
            # the ping gets no answer within the command timeout (2 s)
            await writer.execute_command("CLIENT", "PAUSE", "4000", "ALL")
            await wait_for_async(lambda: not cache.live, timeout=3.5)
            assert len(cache) == 0
    finally:
        await writer.aclose()


async def test_a_redis_that_refuses_tracking_is_still_answered_and_caching_starts_once_allowed(
    private_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture,
) -> None:
    writer = aioredis.from_url(private_redis.url)
    try:
        await writer.set(context_key("c1"), stored("c1", 1))
        await writer.execute_command("ACL", "SETUSER", "default", "-client")  # as a managed Redis may
        cache = LookupCache(16 << 20, 60.0)
        invalidations = Invalidations(cache, lambda on_message: PipelinedRedis(private_redis.url, on_message=on_message, reconnect=False), retry_s=0.1)
        lookup = ContextLookup(writer, PipelinedRedis(private_redis.url), cache=cache, invalidations=invalidations)
        lookup.start()
        try:
            await wait_for_async(lambda: "no invalidations from Redis" in caplog.text, timeout=5.0)
            assert "NOPERM" in caplog.text or "permission" in caplog.text
            bypassed = counted("bypass")
            for _ in range(3):
                _, raw = await lookup(*by_id("c1"))
                assert raw is not None and decode_context(raw).updated_at == 1.0
            assert counted("bypass") == bypassed + 3 and len(cache) == 0
            await writer.execute_command("ACL", "SETUSER", "default", "+client")
            assert await invalidations.wait_live(5.0)  # tried again within MAX_RETRY_S
            await lookup(*by_id("c1"))
            assert len(cache) == 1
        finally:
            await lookup.close()
    finally:
        await writer.aclose()
