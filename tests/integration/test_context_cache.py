"""The API's lookup cache (CX_HTTP_CONTEXT_CACHE) against a real Redis: what Redis changes, the cache forgets."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from cxstream.serve.cache import CacheConfig, ContextCache, Invalidations
from cxstream.serve.http import ContextLookup, HttpServer, build_app
from cxstream.serve.pipelined import PipelinedRedis
from cxstream.streams import metrics
from cxstream.streams.keys import alias_key, context_key, identifier_key

pytestmark = pytest.mark.integration


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> tuple[Any, float]:
    """The first truthy result of *check* and the seconds it took (fails after *timeout*)."""
    started = time.monotonic()
    while True:
        got = await check()
        if got:
            return got, time.monotonic() - started
        assert time.monotonic() - started < timeout, "not in time"
        await asyncio.sleep(0.002)


class Cached:
    """A ContextLookup with its cache, following the invalidations of the test Redis."""

    def __init__(self, url: str, max_entries: int = 100) -> None:
        self.cache = ContextCache(max_entries)
        self.following = Invalidations(self.cache, lambda on_message: PipelinedRedis(url, on_message=on_message), ping_interval_s=0.1)
        self.lookup = ContextLookup(aioredis.Redis.from_url(url), PipelinedRedis(url), cache=self.cache)

    async def by_id(self, customer_id: str) -> tuple[int, bytes | None]:
        return await self.lookup([context_key(customer_id), alias_key(customer_id), identifier_key("customer_id", customer_id)], "id")

    async def by_email(self, email: str) -> tuple[int, bytes | None]:
        return await self.lookup([identifier_key("email", email)], "ident")


@pytest.fixture()
async def cached(servers: tuple[str, str]) -> AsyncIterator[Cached]:
    c = Cached(servers[1])
    c.following.start()
    await until(lambda: asyncio.sleep(0, c.cache.ready))
    yield c
    await c.following.stop()
    await c.lookup.close()


@pytest.fixture()
async def plain(servers: tuple[str, str]) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(servers[1])
    yield client
    await client.aclose()


def hits() -> float:
    return metrics.CONTEXT_CACHE.labels("hit")._value.get()


async def test_a_repeated_lookup_comes_from_the_cache_until_redis_reports_a_change(cached: Cached, plain: aioredis.Redis) -> None:
    cid = f"cache-{uuid.uuid4().hex[:8]}"
    await plain.set(context_key(cid), b"v1")
    assert await cached.by_id(cid) == (1, b"v1")
    before = hits()
    assert await cached.by_id(cid) == (1, b"v1")
    assert hits() == before + 1, "answered from the cache"

    await plain.set(context_key(cid), b"v2")  # the engine's write-behind updates the context
    await until(lambda: _is(cached.by_id(cid), (1, b"v2")))  # (without the invalidation: after max_age_s, 30 s)

    # by an identifier: the answer depends on the index key and on the context it led to
    email = f"{cid}@example.org"
    await plain.set(identifier_key("email", email), cid)
    assert await cached.by_email(email) == (1, b"v2")
    await plain.set(context_key(cid), b"v3")
    await until(lambda: _is(cached.by_email(email), (1, b"v3")))
    await plain.set(identifier_key("email", email), "!shared")  # the email turned out to be shared
    await until(lambda: _is(cached.by_email(email), (2, None)))

    # an erasure: the context goes, and so does every answer that read it
    await plain.delete(context_key(cid))
    await until(lambda: _is(cached.by_id(cid), (0, None)))
    assert await cached.by_id(cid) == (0, None)


async def test_a_miss_is_kept_until_the_customer_appears_and_an_alias_follows_its_target(cached: Cached, plain: aioredis.Redis) -> None:
    cid, merged = f"new-{uuid.uuid4().hex[:8]}", f"old-{uuid.uuid4().hex[:8]}"
    assert await cached.by_id(cid) == (0, None)
    before = hits()
    assert await cached.by_id(cid) == (0, None) and hits() == before + 1, "a miss is cached too"
    await plain.set(context_key(cid), b"created")
    await until(lambda: _is(cached.by_id(cid), (1, b"created")))

    # a customer merged away: its id is an alias of the surviving one
    await plain.set(alias_key(merged), cid)
    await until(lambda: _is(cached.by_id(merged), (1, b"created")))
    await plain.set(context_key(cid), b"updated")
    await until(lambda: _is(cached.by_id(merged), (1, b"updated")))


async def test_an_answer_read_across_an_invalidation_is_not_kept(cached: Cached, plain: aioredis.Redis) -> None:
    """The script's reply may predate a change whose invalidation already arrived: it is served, not kept."""
    cid = f"race-{uuid.uuid4().hex[:8]}"
    await plain.set(context_key(cid), b"v1")
    lookup = ("id", context_key(cid))
    epoch = cached.cache.epoch
    answer = await cached.by_id(cid)  # kept: nothing changed meanwhile
    assert answer == (1, b"v1") and cached.cache.get(lookup) == answer
    cached.cache.invalidate([b"some-other-key"])  # an invalidation of anything arrives while a script runs ...
    cached.cache.put(lookup, (1, b"stale"), [context_key(cid).encode()], epoch)
    assert cached.cache.get(lookup) == (1, b"v1"), "... so what it read is not kept"


async def test_a_lost_invalidation_connection_stops_the_cache_until_it_follows_again(cached: Cached, plain: aioredis.Redis) -> None:
    cid = f"lost-{uuid.uuid4().hex[:8]}"
    await plain.set(context_key(cid), b"v1")
    assert await cached.by_id(cid) == (1, b"v1")
    assert len(cached.cache) >= 1
    subscribers = [c for c in await plain.client_list() if "__redis__:invalidate" in str(c) or int(c.get("sub", 0)) > 0]
    assert subscribers, "the cache's connection is subscribed"
    for c in subscribers:
        await plain.client_kill_filter(_id=c["id"])
    await until(lambda: asyncio.sleep(0, not cached.cache.ready), timeout=2.0)
    assert len(cached.cache) == 0, "nothing kept from before is served"
    await plain.set(context_key(cid), b"v2")  # a write the cache cannot hear about: lookups go to Redis
    assert await cached.by_id(cid) == (1, b"v2")
    await until(lambda: asyncio.sleep(0, cached.cache.ready), timeout=5.0)
    assert cached.following.connections == 2
    await plain.set(context_key(cid), b"v3")
    await until(lambda: _is(cached.by_id(cid), (1, b"v3")))


async def test_the_api_serves_lookups_from_its_cache(servers: tuple[str, str], plain: aioredis.Redis) -> None:
    url = servers[1]
    app = build_app(
        aioredis.Redis.from_url(url), frozenset({"secret-key"}), "cache-app", pipelined=PipelinedRedis(url),
        context_cache=CacheConfig(50, lambda on_message: PipelinedRedis(url, on_message=on_message)),
    )
    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    cid = f"api-{uuid.uuid4().hex[:8]}"
    try:
        await plain.set(context_key(cid), b'{"customer_id": "%s", "n": 1}' % cid.encode())
        async with aiohttp.ClientSession(headers={"X-API-Key": "secret-key"}) as http:

            async def body() -> Any:
                async with http.get(f"{server.url}/customers/{cid}/context") as resp:
                    return resp.status, await resp.json()

            await until(lambda: _truthy(body()))
            before = hits()
            assert await body() == (200, {"customer_id": cid, "n": 1})
            assert hits() == before + 1
            await plain.set(context_key(cid), b'{"customer_id": "%s", "n": 2}' % cid.encode())
            await until(lambda: _is(body(), (200, {"customer_id": cid, "n": 2})))
            await plain.delete(context_key(cid))
            (_, problem), _ = await until(lambda: _status(body(), 404))
            assert problem["error"] == "unknown_customer"
    finally:
        await server.stop()


async def _is(answer: Awaitable[Any], expected: Any) -> bool:
    return (await answer) == expected


async def _truthy(answer: Awaitable[tuple[int, Any]]) -> bool:
    return (await answer)[0] == 200


async def _status(answer: Awaitable[tuple[int, Any]], status: int) -> tuple[int, Any] | None:
    got = await answer
    return got if got[0] == status else None
