"""The lookup front (cxstream.serve.front) against aiohttp alone, on the real Redis, over raw sockets.

Every request is sent to two servers of the same application, one with the front and one
without, and the answers must be the same bytes but the ``Date`` header: the lookups the
front answers itself, and everything it hands to aiohttp.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from cxstream.context.model import CustomerContext, encode_context
from cxstream.serve import front
from cxstream.serve.http import HttpServer, build_app
from cxstream.serve.pipelined import PipelinedRedis
from cxstream.streams.keys import SHARED, alias_key, context_key, identifier_key

pytestmark = pytest.mark.integration

KEY = "front-key"
KEYS = frozenset({KEY, f"admin:{KEY}-admin"})


@asynccontextmanager
async def api(redis_url: str, *, lookup_front: bool, pipelined: bool = True) -> AsyncIterator[HttpServer]:
    client = aioredis.from_url(redis_url)
    app = build_app(client, KEYS, "front-test", pipelined=PipelinedRedis(redis_url) if pipelined else None)
    server = HttpServer(app, "127.0.0.1", 0, lookup_front=lookup_front)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        await client.aclose()


async def exchange(port: int, raw: bytes, *, chunk: int = 0) -> bytes:
    """Send *raw* (in pieces of *chunk* bytes, if given) and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if chunk:
            for i in range(0, len(raw), chunk):
                writer.write(raw[i : i + chunk])
                await writer.drain()
                await asyncio.sleep(0.001)
        else:
            writer.write(raw)
        return await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()


def without_date(response: bytes) -> bytes:
    return b"\r\n".join(line for line in response.split(b"\r\n") if not line.startswith(b"Date: "))


def get(path: str, *headers: str, close: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test", *headers, *(["Connection: close"] if close else [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture(scope="module")
def customers(servers: tuple[str, str]) -> dict[str, str]:
    """Two customers in Redis as the engine stores them: by id, by email, by an alias, and an ambiguous phone."""
    tag = uuid.uuid4().hex[:8]
    c1, c2, merged = f"F{tag}1", f"F{tag}2", f"F{tag}old"
    client = redis.Redis.from_url(servers[1])
    for cid in (c1, c2):
        client.set(context_key(cid), encode_context(CustomerContext(customer_id=cid, created_at=1.0, updated_at=2.0,
                                                                    identifiers={"email": [f"{cid.lower()}+x@example.org"]})))
    client.set(identifier_key("email", f"{c1.lower()}+x@example.org"), c1)
    client.set(identifier_key("phone", "+442071838750"), SHARED)
    client.set(alias_key(merged), c2)
    client.close()
    return {"c1": c1, "c2": c2, "merged": merged, "email": f"{c1.lower()}%2Bx%40example.org"}


def requests_of(c: dict[str, str]) -> list[bytes]:
    auth = f"X-API-Key: {KEY}"
    return [
        get(f"/customers/{c['c1']}/context", auth),
        get(f"/customers/{c['merged']}/context", f"Authorization: Bearer {KEY}"),
        get(f"/customers/context?email={c['email']}", auth),
        get(f"/customers/email:{c['email']}/context", auth),
        get("/customers/context?phone=%2B44%2020%207183%208750", auth),  # shared by several customers: 409
        get("/customers/nobody-at-all/context", auth),  # 404
        get("/customers/context?email=not-an-email", auth),  # 400
        get("/customers/context?colour=blue", auth),  # 400, unknown parameter
        get(f"/customers/context?email={c['email']}&phone=%2B442071838750", auth),  # 400, two identifiers
        get("/customers/context", auth),  # 400, no identifier
        get(f"/customers/{'x' * 301}/context", auth),  # 400, too long
        get("/customers/caf%C3%A9/context", auth),  # 404 for a UTF-8 id
        get(f"/customers/{c['c1']}/context"),  # no key: aiohttp's 401
        get(f"/customers/{c['c1']}/context", "X-API-Key: wrong"),  # 401
        get(f"/customers/{c['c1']}/context", f"X-API-Key: {KEY}-admin"),  # an admin key, without 'read': 403
        get("/customers/a%2Fb/context", auth),  # an encoded slash: aiohttp decides
        get("/queues", auth),  # another route
        get("/livez"),
        f"HEAD /customers/{c['c1']}/context HTTP/1.1\r\nHost: t\r\n{auth}\r\nConnection: close\r\n\r\n".encode(),
        f"GET /customers/{c['c1']}/context HTTP/1.0\r\n{auth}\r\n\r\n".encode(),
        f"POST /customers/{c['c1']}/erase HTTP/1.1\r\nHost: t\r\n{auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode(),
        f"GET /customers/{c['c1']}/context HTTP/1.1\r\nHost: t\r\n{auth}\r\nX-Big: {'y' * 17000}\r\nConnection: close\r\n\r\n".encode(),
        b"GARBAGE\r\n\r\n",
        get(f"/customers/{c['c1']}/context", auth, "Bad Name: x"),  # not a token: aiohttp's 400
        get(f"/customers/{c['c1']}/context", auth, "X-Odd: a\x00b"),
        get(f"/customers/{c['c1']}/context", auth, "X-Odd: a\nb"),
        get(f"/customers/{c['c1']}/context", auth, "X-Odd: a\rb"),
    ]


def test_the_front_answers_exactly_as_aiohttp_does(servers: tuple[str, str], customers: dict[str, str]) -> None:
    async def run() -> list[tuple[bytes, bytes]]:
        async with api(servers[1], lookup_front=True) as with_front, api(servers[1], lookup_front=False) as plain:
            out = []
            for raw in requests_of(customers):
                # a live route (/queues) answers what Redis holds at each read, and a routing group's statistics
                # that earlier tests' engines wrote expire a minute after: read both again if it changed between them
                for _ in range(3):
                    pair = (await exchange(with_front.port, raw), await exchange(plain.port, raw))
                    if without_date(pair[0]) == without_date(pair[1]):
                        break
                out.append(pair)
            return out

    answers = asyncio.run(run())
    for raw, (mine, theirs) in zip(requests_of(customers), answers, strict=True):
        assert without_date(mine) == without_date(theirs), raw[:80]
    statuses = [a.split(b" ", 2)[1] for a, _ in answers]
    assert statuses[:12] == [b"200", b"200", b"200", b"200", b"409", b"404", b"400", b"400", b"400", b"400", b"400", b"404"]
    assert statuses[12:15] == [b"401", b"401", b"403"]
    assert customers["c1"].encode() in answers[0][0] and customers["c2"].encode() in answers[1][0]


def random_targets(n: int, seed: int = 7) -> list[str]:
    """Request targets of the two lookup routes with odd ids and query strings: escapes (valid, invalid,
    of non-UTF-8 bytes, of a slash), '+', ';', repeated and empty parameters, unknown names."""
    rng = random.Random(seed)
    pieces = ["a", "Z9", "%40", "%2B", "+", "%2F", "%C3%A9", "%E9", "%zz", "%", ":", "email:", "phone:", "@", ".", "-", "_", "~", "!", "'",
              "%20", " ", ";", "=", "&", "%3D", "%26", "x" * 40]
    names = ["email", "phone", "customer_id", "account_number", "device_id", "social_handle", "colour", "", "EMAIL", "e%6dail"]
    values = ["jane%40example.org", "jane@example.org", "%2B442071838750", "+44 20 7183 8750", "C0001", "", "a=b", "%ff", "x" * 301]
    targets = []
    for _ in range(n):
        if rng.random() < 0.5:
            targets.append("/customers/" + "".join(rng.choice(pieces) for _ in range(rng.randint(1, 5))) + "/context")
        else:
            pairs = [f"{rng.choice(names)}={rng.choice(values)}" if rng.random() < 0.9 else rng.choice(names) for _ in range(rng.randint(0, 3))]
            targets.append("/customers/context" + ("?" + rng.choice(["&", ";", "&&"]).join(pairs) if pairs or rng.random() < 0.5 else ""))
    return [t.replace(" ", "%20") for t in targets]


def test_odd_ids_and_query_strings_get_the_same_answers_from_the_front_as_from_aiohttp(servers: tuple[str, str], customers: dict[str, str]) -> None:
    targets = random_targets(300)

    async def run() -> list[tuple[bytes, bytes]]:
        async with api(servers[1], lookup_front=True) as with_front, api(servers[1], lookup_front=False) as plain:
            out = []
            for target in targets:
                raw = get(target, f"X-API-Key: {KEY}")
                out.append((await exchange(with_front.port, raw), await exchange(plain.port, raw)))
            return out

    answers = asyncio.run(run())
    for target, (mine, theirs) in zip(targets, answers, strict=True):
        assert without_date(mine) == without_date(theirs), target
    statuses = {a.split(b" ", 2)[1] for a, _ in answers}
    assert {b"400", b"404"} <= statuses  # both refusals and lookups of unknown customers were tried


def test_pipelined_requests_are_answered_in_order_across_the_hand_over(servers: tuple[str, str], customers: dict[str, str]) -> None:
    """Lookups, then another route (aiohttp takes the connection), then a lookup aiohttp answers; sent at once and byte by byte."""
    auth = f"X-API-Key: {KEY}"
    raw = b"".join([
        get(f"/customers/{customers['c1']}/context", auth, close=False),
        get("/customers/nobody/context", auth, close=False),
        get(f"/customers/{customers['merged']}/context", auth, close=False),
        get("/livez", close=False),
        get(f"/customers/{customers['c2']}/context", auth, close=True),
    ])

    async def run() -> tuple[bytes, bytes, bytes]:
        async with api(servers[1], lookup_front=True) as with_front, api(servers[1], lookup_front=False) as plain:
            return await exchange(with_front.port, raw), await exchange(with_front.port, raw, chunk=7), await exchange(plain.port, raw)

    at_once, in_pieces, plain = asyncio.run(run())
    assert without_date(at_once) == without_date(plain) == without_date(in_pieces)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", at_once) == [b"200", b"404", b"200", b"200", b"200"]


def test_keep_alive_lookups_on_one_connection_are_counted_in_the_api_histogram(servers: tuple[str, str], customers: dict[str, str]) -> None:
    route = "/customers/{customer_id}/context"

    def count(status: str) -> float:
        return REGISTRY.get_sample_value("cx_http_request_seconds_count", {"route": route, "status": status}) or 0.0

    before = count("200"), count("404")

    async def run() -> bytes:
        async with api(servers[1], lookup_front=True) as with_front:
            raw = b"".join(get(f"/customers/{customers['c1']}/context", f"X-API-Key: {KEY}", close=False) for _ in range(20))
            return await exchange(with_front.port, raw + get("/customers/nobody/context", f"X-API-Key: {KEY}"))

    answers = asyncio.run(run())
    assert answers.count(b"HTTP/1.1 200 OK") == 20 and answers.count(b"HTTP/1.1 404 Not Found") == 1
    assert answers.rstrip().endswith(b"}") and b"Connection: close" in answers
    assert (count("200") - before[0], count("404") - before[1]) == (20, 1)


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_lookup_redis_fails_is_the_same_503_as_aiohttp_s(pipelined: bool) -> None:
    dead = "redis://127.0.0.1:1"

    async def run() -> tuple[bytes, bytes]:
        async with api(dead, lookup_front=True, pipelined=pipelined) as with_front, api(dead, lookup_front=False, pipelined=pipelined) as plain:
            raw = get("/customers/c1/context", f"X-API-Key: {KEY}")
            return await exchange(with_front.port, raw), await exchange(plain.port, raw)

    mine, theirs = asyncio.run(run())
    assert mine.startswith(b"HTTP/1.1 503 Service Unavailable") and b'"redis_unavailable"' in mine
    assert without_date(mine) == without_date(theirs)


def test_stopping_closes_idle_connections_and_answers_the_one_in_flight(servers: tuple[str, str], customers: dict[str, str]) -> None:
    async def run() -> tuple[bytes, bytes]:
        async with api(servers[1], lookup_front=True) as with_front:
            idle_r, idle_w = await asyncio.open_connection("127.0.0.1", with_front.port)
            busy_r, busy_w = await asyncio.open_connection("127.0.0.1", with_front.port)
            with redis.Redis.from_url(servers[1]) as pauser:
                pauser.client_pause(400)  # Redis holds the lookup's answer 0.4 s
            busy_w.write(get(f"/customers/{customers['c1']}/context", f"X-API-Key: {KEY}", close=False))
            await asyncio.sleep(0.1)  # the lookup is in flight: stop now
            await with_front.stop()
            answered = await asyncio.wait_for(busy_r.read(-1), 5)
            idle = await asyncio.wait_for(idle_r.read(-1), 5)
            idle_w.close()
            busy_w.close()
            return answered, idle

    answered, idle = asyncio.run(run())
    assert idle == b""
    assert answered.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answered
    assert answered.endswith(b"}") and customers["c1"].encode() in answered


def test_an_idle_connection_is_closed_after_the_keep_alive_time(servers: tuple[str, str], customers: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(front, "KEEPALIVE_S", 0.5)

    async def run() -> tuple[bytes, float]:
        async with api(servers[1], lookup_front=True) as with_front:
            reader, writer = await asyncio.open_connection("127.0.0.1", with_front.port)
            writer.write(get(f"/customers/{customers['c1']}/context", f"X-API-Key: {KEY}", close=False))
            started = asyncio.get_running_loop().time()
            answer = await asyncio.wait_for(reader.read(-1), 5)  # the answer, then the close
            writer.close()
            return answer, asyncio.get_running_loop().time() - started

    answer, waited = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" not in answer
    assert 0.5 <= waited < 3



def test_lookups_after_redis_lost_the_script_or_the_connection_are_answered(servers: tuple[str, str], customers: dict[str, str]) -> None:
    """The front writes the script's EVALSHA itself: a NOSCRIPT reply loads it again, a lost connection is made again."""
    raw = get(f"/customers/{customers['c1']}/context", f"X-API-Key: {KEY}")

    def client_ids(admin: redis.Redis) -> set[int]:
        return {int(c["id"]) for c in admin.client_list()}

    async def run() -> list[bytes]:
        out = []
        with redis.Redis.from_url(servers[1]) as admin:
            before = client_ids(admin)
            async with api(servers[1], lookup_front=True) as with_front:
                out.append(await exchange(with_front.port, raw))  # connects the pipelined connection
                admin.script_flush()
                out.append(await exchange(with_front.port, raw))
                for client_id in client_ids(admin) - before - {admin.client_id()}:  # this API's connections only
                    admin.client_kill_filter(_id=client_id)
                await asyncio.sleep(0.3)  # the API reads the close
                out.append(await exchange(with_front.port, raw))
                out.append(await exchange(with_front.port, raw))
        return out

    answers = asyncio.run(run())
    assert all(a.startswith(b"HTTP/1.1 200 OK") and customers["c1"].encode() in a for a in answers), [a[:40] for a in answers]
