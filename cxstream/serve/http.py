"""The HTTP API: customer context from Redis, health, Prometheus metrics.

| route                          | auth | answers |
|--------------------------------|------|---------|
| ``GET /healthz``               | no   | 200 when Redis answers and the engine runs, else 503, with details |
| ``GET /metrics``               | key  | Prometheus text format |
| ``GET /customers/{id}/context``| key  | the customer's context JSON (from Redis), 404 if unknown |
| ``GET /customers/context?email=…`` | key | the same, found by one identifier (any kind below) |
| ``POST /customers/{id}/erase`` | key  | 202: erasure requested (GDPR/CCPA); ``?email=…`` form too |
| ``GET /erasures/{request_id}`` | key  | progress of an erasure request |

``{id}`` is a canonical customer id, the id of a customer since merged into another
(an alias), a CRM customer id, or ``kind:value`` (``email:jane@x.org``).  Identifier
query parameters are ``customer_id``, ``account_number``, ``email``, ``phone``,
``social_handle`` and ``device_id``; they are normalised exactly as ingest does (E.164
phones, lower-cased emails), and a malformed or placeholder value gets 400 with the
reason.  An identifier quarantined as shared by many customers gets 409.

Keys travel as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; a missing or
wrong key gets 401.  Errors are JSON ``{"error": ..., "detail": ...}``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from cxstream.agents.erasure import ErasureRequests, ErasureStatus
from cxstream.context.identity import PRECEDENCE, InvalidIdentifier, normalise
from cxstream.schemas import Identifiers
from cxstream.streams import metrics
from cxstream.streams.keys import SHARED, alias_key, context_key, identifier_key

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REDIS: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)
API_KEYS: web.AppKey[frozenset[str]] = web.AppKey("api_keys", frozenset)
HEALTH: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("health", object)  # type: ignore[arg-type]
ERASURE: web.AppKey[ErasureRequests | None] = web.AppKey("erasure", object)  # type: ignore[arg-type]

#: Identifier kinds accepted in query strings and ``kind:value`` ids.
IDENTIFIER_KINDS: tuple[str, ...] = PRECEDENCE


def error(status: int, code: str, detail: str) -> web.Response:
    """A JSON error response that says what was wrong."""
    return web.Response(
        status=status, body=orjson.dumps({"error": code, "detail": detail}), content_type="application/json"
    )


def _presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("X-API-Key")


@web.middleware
async def auth_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        if route != "/healthz":
            keys = request.app[API_KEYS]
            presented = _presented_key(request)
            if not presented or not any(hmac.compare_digest(presented, k) for k in keys):
                response: web.StreamResponse = error(
                    401, "unauthorized", "send a valid API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
                )
                return response
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        except RedisError as exc:
            log.warning("redis error on %s: %r", route, exc)
            response = error(503, "redis_unavailable", f"the context store did not answer: {type(exc).__name__}")
        return response
    finally:
        status = locals().get("response")
        code = str(status.status) if isinstance(status, web.StreamResponse) else "500"
        metrics.HTTP_REQUESTS.labels(route, code).observe(time.perf_counter() - started)


async def healthz(request: web.Request) -> web.Response:
    checks: dict[str, Any] = dict(request.app[HEALTH]())
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), timeout=1.0)
        checks["redis"] = "ok"
    except Exception as exc:  # any failure to reach Redis is unhealthy
        checks["redis"] = f"unreachable: {exc!r}"
    healthy = all(v == "ok" for k, v in checks.items() if k in ("redis", "engine"))
    return web.Response(
        status=200 if healthy else 503,
        body=orjson.dumps({"status": "ok" if healthy else "unhealthy", **checks}),
        content_type="application/json",
    )


async def prometheus(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


class _Refusal(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _identifier(kind: str, value: str) -> tuple[str, str]:
    """(kind, normal form) of an identifier from a request, or a 400 refusal saying why."""
    if kind not in IDENTIFIER_KINDS:
        raise _Refusal(error(400, "unknown_identifier_kind", f"{kind!r} is not an identifier kind; use one of {', '.join(IDENTIFIER_KINDS)}"))
    if not value or len(value) > 300:
        raise _Refusal(error(400, "bad_identifier", f"{kind}: the value must be 1 to 300 characters"))
    try:
        return kind, normalise(kind, value)
    except InvalidIdentifier as exc:
        raise _Refusal(error(400, "bad_identifier", str(exc))) from exc


def _query_identifiers(request: web.Request) -> list[tuple[str, str]]:
    found = [(k, v) for k, v in request.query.items() if k in IDENTIFIER_KINDS]
    unknown = [k for k in request.query if k not in IDENTIFIER_KINDS]
    if unknown:
        raise _Refusal(error(400, "unknown_identifier_kind", f"unknown query parameter(s) {', '.join(sorted(unknown))}; use one of {', '.join(IDENTIFIER_KINDS)}"))
    return [_identifier(k, v) for k, v in found]


def _path_identifier(customer_id: str) -> tuple[str, str] | None:
    kind, sep, value = customer_id.partition(":")
    return _identifier(kind, value) if sep and kind in IDENTIFIER_KINDS else None


#: One round trip per lookup: resolve (identifier index, alias or CRM id) and read the context
#: in the server.  Key names are derived inside the script, so it needs a single Redis (not Cluster).
_LOOKUP = """
local v = redis.call('GET', KEYS[1])
if ARGV[1] == 'ident' then
  if not v then return {0} end
  if v == ARGV[2] then return {2} end
  local c = redis.call('GET', ARGV[3] .. v)
  if not c then return {0} end
  return {1, c}
end
if v then return {1, v} end
local t = redis.call('GET', KEYS[2])
if not t then
  t = redis.call('GET', KEYS[3])
  if t == ARGV[2] then t = false end
end
if not t then return {0} end
local c = redis.call('GET', ARGV[3] .. t)
if not c then return {0} end
return {1, c}
"""
_CTX_PREFIX = context_key("")


async def _lookup(client: aioredis.Redis, keys: list[str], mode: str) -> tuple[int, bytes | None]:
    found = await client.eval(_LOOKUP, len(keys), *keys, mode, SHARED, _CTX_PREFIX)
    return int(found[0]), (found[1] if len(found) > 1 else None)


async def _context_by_identifier(client: aioredis.Redis, kind: str, value: str) -> web.Response:
    code, raw = await _lookup(client, [identifier_key(kind, value)], "ident")
    if code == 2:
        return error(409, "ambiguous_identifier", f"this {kind} is shared by several customers; look the customer up by another identifier")
    if raw is None:
        return error(404, "unknown_customer", f"no customer with this {kind}")
    return web.Response(body=raw, content_type="application/json")


async def _context_by_id(client: aioredis.Redis, customer_id: str) -> web.Response:
    _, raw = await _lookup(client, [context_key(customer_id), alias_key(customer_id), identifier_key("customer_id", customer_id)], "id")
    if raw is None:
        return error(404, "unknown_customer", f"no context for customer {customer_id!r}")
    return web.Response(body=raw, content_type="application/json")


async def customer_context(request: web.Request) -> web.Response:
    customer_id = request.match_info.get("customer_id", "")
    client = request.app[REDIS]
    try:
        query = _query_identifiers(request)
        if query:
            if len(query) > 1:
                return error(400, "too_many_identifiers", "give exactly one identifier to look a customer up")
            return await _context_by_identifier(client, *query[0])
        if not customer_id:
            return error(400, "no_identifier", f"give the customer in the path or as one query parameter ({', '.join(IDENTIFIER_KINDS)})")
        if len(customer_id) > 300:
            return error(400, "bad_customer_id", "the customer id must be 1 to 300 characters")
        by_kind = _path_identifier(customer_id)
    except _Refusal as refusal:
        return refusal.response
    if by_kind is not None:
        return await _context_by_identifier(client, *by_kind)
    return await _context_by_id(client, customer_id)


async def erase_customer(request: web.Request) -> web.Response:
    requests = request.app[ERASURE]
    if requests is None:
        return error(503, "erasure_unavailable", "this server cannot publish erasure requests")
    customer_id = request.match_info.get("customer_id", "")
    try:
        found = _query_identifiers(request)
        if customer_id:
            if len(customer_id) > 128:
                return error(400, "bad_customer_id", "the customer id must be 1 to 128 characters")
            found.append(_path_identifier(customer_id) or ("customer_id", customer_id))
    except _Refusal as refusal:
        return refusal.response
    if not found:
        return error(400, "no_identifier", f"name the customer in the path or with query parameters ({', '.join(IDENTIFIER_KINDS)})")
    ids: dict[str, str] = {}
    for kind, value in found:
        if ids.get(kind, value) != value:
            return error(400, "too_many_identifiers", f"two different {kind} values; send one request per customer")
        ids[kind] = value
    submitted = await requests.submit(Identifiers(**ids))
    rid = submitted.event_id
    log.info("erasure %s requested through the API (%s)", rid, ", ".join(sorted(ids)))
    return web.Response(
        status=202,
        body=orjson.dumps({"request_id": rid, "status": "accepted", "status_url": f"/erasures/{rid}"}),
        content_type="application/json",
    )


async def erasure_status(request: web.Request) -> web.Response:
    rid = request.match_info["request_id"]
    if len(rid) > 128:
        return error(400, "bad_request_id", "request ids are at most 128 characters")
    found = await ErasureStatus(request.app[REDIS]).get(rid)
    if found is None:
        return error(404, "unknown_request", f"no erasure request {rid!r}")
    return web.Response(body=orjson.dumps(found), content_type="application/json")


def build_app(
    redis_client: aioredis.Redis,
    api_keys: frozenset[str],
    health: Callable[[], dict[str, Any]] = lambda: {"engine": "ok"},
    erasure: ErasureRequests | None = None,
) -> web.Application:
    """The aiohttp application (no server): the engine runs it, tests drive it directly."""
    app = web.Application(middlewares=[auth_and_metrics])
    app[REDIS] = redis_client
    app[API_KEYS] = api_keys
    app[HEALTH] = health
    app[ERASURE] = erasure
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/customers/context", customer_context)
    app.router.add_get("/customers/{customer_id}/context", customer_context)
    app.router.add_post("/customers/erase", erase_customer)
    app.router.add_post("/customers/{customer_id}/erase", erase_customer)
    app.router.add_get("/erasures/{request_id}", erasure_status)
    return app


class HttpServer:
    """Runs :func:`build_app` on a host and port; ``port=0`` picks a free one."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None and server.sockets:  # type: ignore[union-attr]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
