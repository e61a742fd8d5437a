"""The HTTP API: customer context from Redis, health, Prometheus metrics, queue statistics.

It runs in processes of its own (``cxstream serve``, :mod:`cxstream.serve.main`), not in the
engine's event loop: everything it answers comes from Redis, except ``/metrics`` (the
engine's metrics, fetched from the engine's loopback metrics endpoint, plus the API's own)
and erasure requests (published to the broker).

| route                          | auth | answers |
|--------------------------------|------|---------|
| ``GET /healthz``               | no   | 200 when Redis answers and the engine's heartbeat is fresh, else 503, with details |
| ``GET /livez``                 | no   | 200 while this process and its engine answer (needs neither Redis nor the broker), else 503 |
| ``GET /metrics``               | key  | Prometheus text format: the engine's metrics and the API's |
| ``GET /customers/{id}/context``| key  | the customer's context JSON (from Redis), 404 if unknown |
| ``GET /customers/context?email=…`` | key | the same, found by one identifier (any kind below) |
| ``POST /customers/{id}/erase`` | key  | 202: erasure requested (GDPR/CCPA); ``?email=…`` form too |
| ``GET /erasures/{request_id}`` | key  | progress of an erasure request |
| ``GET /queues``, ``/queues/{group}`` | key | live queue statistics per routing group (:mod:`cxstream.serve.queues`) |
| ``/advisors/{advisor_id}/...``  | key or desk key | the advisor desktop's API (:mod:`cxstream.serve.desk`) |
| ``/desk``, ``/wallboard``, ``/chat``, ``/openapi.json`` | no | the web pages, their data and chat routes (:mod:`cxstream.serve.pages`) |

``{id}`` is a canonical customer id, the id of a customer since merged into another
(an alias), a CRM customer id, or ``kind:value`` (``email:jane@x.org``).  Identifier
query parameters are ``customer_id``, ``account_number``, ``email``, ``phone``,
``social_handle`` and ``device_id``; they are normalised exactly as ingest does (E.164
phones, lower-cased emails), and a malformed or placeholder value gets 400 with the
reason.  An identifier quarantined as shared by many customers gets 409.

With ``CX_HTTP_LOOKUP_FRONT=1`` (the default) ``cxstream serve`` answers the two context routes
before aiohttp sees them, in :mod:`cxstream.serve.front`, with :func:`context_answer` and the same
bytes; every other request reaches this application as before.

Keys travel as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; a missing or
wrong key gets 401, a key without the route's scope (``read``, ``advisor``, ``admin``:
:mod:`cxstream.serve.keys`) or an advisor's desk key outside that advisor's routes 403.  Errors are JSON ``{"error": ..., "detail": ...}``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import redis.asyncio as aioredis
from aiohttp import ClientSession, ClientTimeout, web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.metrics_core import Metric
from redis.exceptions import RedisError

# The imports outside streams/schemas (docs/ARCHITECTURE.md): pure identifier normalisation, so
# that ``?email=`` and ``?phone=`` are normalised exactly as ingest does, and the reader of a stored
# (compressed) context's JSON.
from cxstream.context.identity import PRECEDENCE, InvalidIdentifier, normalise
from cxstream.context.model import context_json
from cxstream.schemas import Identifiers
from cxstream.serve import assist, desk, keys, pages, queues
from cxstream.serve.common import REDIS, error, error_body, heartbeat_key, read_heartbeat
from cxstream.serve.desk import ADVISOR_SECRET, FEED, PUBLISHER
from cxstream.serve.erasure import ErasureRequests, ErasureUnavailable, erasure_status
from cxstream.serve.feed import LiveFeed
from cxstream.serve.lookupcache import Invalidations, LookupCache
from cxstream.serve.loopback import live_url
from cxstream.serve.pages import PUBLIC_ROUTES
from cxstream.serve.pipelined import PipelinedRedis
from cxstream.serve.publish import KafkaPublisher
from cxstream.streams import metrics
from cxstream.streams.keys import SHARED, alias_key, context_key, identifier_key
from cxstream.streams.logs import RepeatFilter

if TYPE_CHECKING:
    from cxstream.serve.front import LookupFront

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_KEYS: web.AppKey[frozenset[str]] = web.AppKey("api_keys", frozenset)
API_KEY_SCOPES: web.AppKey[dict[str, frozenset[str]]] = web.AppKey("api_key_scopes", dict)
APP_ID: web.AppKey[str] = web.AppKey("app_id", str)
ERASURE: web.AppKey[ErasureRequests | None] = web.AppKey("erasure", object)  # type: ignore[arg-type]
LOOKUP: web.AppKey[ContextLookup] = web.AppKey("lookup", object)  # type: ignore[arg-type]
ENGINE_METRICS: web.AppKey[EngineMetrics | None] = web.AppKey("engine_metrics", object)  # type: ignore[arg-type]

#: Identifier kinds accepted in query strings and ``kind:value`` ids.
IDENTIFIER_KINDS: tuple[str, ...] = PRECEDENCE


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer KEY``, else ``X-API-Key: KEY`` (the lookup front reads it too).

    >>> presented_key("Bearer  k1 ", "k2"), presented_key("Basic x", "k2"), presented_key(None, None)
    ('k1', 'k2', None)
    """
    if authorization is not None and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return x_api_key


def _presented_key(request: web.Request) -> str | None:
    return presented_key(request.headers.get("Authorization"), request.headers.get("X-API-Key"))


def _refuse(request: web.Request, route: str) -> web.Response | None:
    """None if the request's key opens *route*: an API key with the route's scope (:mod:`cxstream.serve.keys`), or a desk key its advisor's routes."""
    presented = _presented_key(request)
    scopes = keys.scopes_of(presented, request.app[API_KEY_SCOPES]) if presented else None
    if scopes is not None:
        need = keys.scope_for(route, desk.ADVISOR_ROUTES)
        if need in scopes:
            return None
        return error(403, "forbidden", f"this API key does not have the {need!r} scope this route needs")
    if presented and route in desk.ADVISOR_ROUTES:
        advisor_id = request.match_info.get("advisor_id", "")
        if desk.is_advisor_key(request.app[desk.ADVISOR_SECRET], advisor_id, presented):
            return None
        if presented.startswith("cxa_"):
            return error(403, "forbidden", f"this desk key is not the key of advisor {advisor_id!r}")
    if presented and presented.startswith("cxa_"):
        return error(403, "forbidden", "a desk key opens only its advisor's /advisors/{advisor_id}/... routes")
    return error(401, "unauthorized", "send a valid API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")


@web.middleware
async def auth_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        if route not in PUBLIC_ROUTES:
            refused = _refuse(request, route)
            if refused is not None:
                response: web.StreamResponse = refused
                return response
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        except RedisError as exc:
            response = json_response(redis_unavailable(route, exc))
        return response
    finally:
        status = locals().get("response")
        code = str(status.status) if isinstance(status, web.StreamResponse) else "500"
        metrics.HTTP_REQUESTS.labels(route, code).observe(time.perf_counter() - started)


async def _heartbeat(client: aioredis.Redis, app_id: str) -> tuple[bytes | None, int]:
    async with client.pipeline(transaction=False) as pipe:
        pipe.get(heartbeat_key(app_id))
        pipe.pttl(heartbeat_key(app_id))
        value, pttl = await pipe.execute()
    return value, int(pttl)


async def healthz(request: web.Request) -> web.Response:
    checks: dict[str, Any] = {"engine": "unknown: Redis did not answer"}
    try:
        value, pttl = await asyncio.wait_for(_heartbeat(request.app[REDIS], request.app[APP_ID]), timeout=1.0)
        checks = read_heartbeat(value, pttl)
        checks["redis"] = "ok"
    except Exception as exc:  # any failure to reach Redis is unhealthy
        checks["redis"] = f"unreachable: {exc!r}"
    checks["api_pid"] = os.getpid()
    healthy = all(v == "ok" for k, v in checks.items() if k in ("redis", "engine"))
    return web.Response(
        status=200 if healthy else 503,
        body=orjson.dumps({"status": "ok" if healthy else "unhealthy", **checks}),
        content_type="application/json",
    )


class _Only:
    """A view of the default registry with only some metric families (prometheus-client's ``collect`` protocol)."""

    def __init__(self, keep: Callable[[str], bool]) -> None:
        self.keep = keep

    def collect(self) -> Iterator[Metric]:
        return (m for m in REGISTRY.collect() if self.keep(m.name))


def _is_api_metric(name: str) -> bool:
    """A family the API exports itself: also its counters' ``_created`` gauge, a family of its own once parsed.

    >>> _is_api_metric("cx_lookup_cache"), _is_api_metric("cx_lookup_cache_created"), _is_api_metric("cx_events_in")
    (True, True, False)
    """
    return name in API_METRICS or name.removesuffix("_created") in API_METRICS


#: The API's own families (``cx_http_request_seconds``, the lookup cache's); the engine's endpoint exports everything else.
HTTP_METRIC = metrics.HTTP_REQUESTS._name
API_METRICS = frozenset({HTTP_METRIC, *(m._name for m in (
    metrics.LOOKUP_CACHE, metrics.LOOKUP_CACHE_BYTES, metrics.LOOKUP_CACHE_INVALIDATED, metrics.LOOKUP_CACHE_LIVE))})
API_ONLY = _Only(_is_api_metric)
ENGINE_ONLY = _Only(lambda name: not _is_api_metric(name))


#: What a 503 ``redis_unavailable`` adds: what still works while Redis is away (docs/OPERATIONS.md, "Outages").
WORKS_WITHOUT_REDIS = (
    "routing goes on, and desk actions, the chat page, /livez and /metrics still work; "
    "context copies are written once Redis is back"
)
log.addFilter(RepeatFilter())


class EngineMetrics:
    """Fetches the engine's Prometheus text from its loopback endpoint (``cxstream run`` passes the URL)."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url
        self.live_url = live_url(url)
        self.timeout = ClientTimeout(total=timeout_s)
        self._session: ClientSession | None = None

    async def fetch(self) -> bytes:
        return await self._get(self.url)

    async def live(self) -> None:
        """Returns if the engine's event loop answered its loopback endpoint's ``GET /live``; raises if not."""
        await self._get(self.live_url)

    async def _get(self, url: str) -> bytes:
        if self._session is None:
            self._session = ClientSession(timeout=self.timeout)
        async with self._session.get(url) as resp:
            resp.raise_for_status()
            return await resp.read()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def prometheus(request: web.Request) -> web.Response:
    """The engine's metrics (when this API knows where they are) followed by the API's own.

    ``cx_engine_metrics_up`` says whether the engine's part could be fetched.
    """
    own = generate_latest(API_ONLY)  # type: ignore[arg-type]
    source = request.app[ENGINE_METRICS]
    if source is None:
        return web.Response(body=own, headers={"Content-Type": CONTENT_TYPE_LATEST})
    try:
        engine = await source.fetch()
        up = 1
    except Exception as exc:  # the engine is down or stuck: say so, still export the API's metrics
        log.warning("cannot fetch the engine's metrics from %s: %r", source.url, exc)
        engine, up = b"", 0
    gauge = f"# HELP cx_engine_metrics_up 1 if the engine's metrics were fetched for this scrape.\n# TYPE cx_engine_metrics_up gauge\ncx_engine_metrics_up {up}\n"
    return web.Response(body=engine + own + gauge.encode(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def livez(request: web.Request) -> web.Response:
    """Liveness: this API process answers, and so does its engine's event loop (``GET /live`` on its loopback endpoint).

    Needs neither Redis nor the broker, unlike ``/healthz``: an outage of either is not a reason
    to restart the engine, which rides it out (docs/OPERATIONS.md, "Outages"), so a liveness probe
    (Kubernetes restarts what fails it) asks this, and the readiness probe asks ``/healthz``.
    """
    body: dict[str, Any] = {"api_pid": os.getpid()}
    source = request.app[ENGINE_METRICS]
    if source is None:
        body.update(status="alive", engine="not checked: this API process has no engine metrics URL")
        return web.Response(body=orjson.dumps(body), content_type="application/json")
    try:
        await source.live()
    except Exception as exc:
        body.update(status="dead", engine=f"does not answer: {type(exc).__name__}")
        return web.Response(status=503, body=orjson.dumps(body), content_type="application/json")
    body.update(status="alive", engine="alive")
    return web.Response(body=orjson.dumps(body), content_type="application/json")


class _Refusal(Exception):
    """A request refused with a JSON error (status, body)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status = status
        self.body = error_body(code, detail)

    @property
    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, content_type="application/json")


def _identifier(kind: str, value: str) -> tuple[str, str]:
    """(kind, normal form) of an identifier from a request, or a 400 refusal saying why."""
    if kind not in IDENTIFIER_KINDS:
        raise _Refusal(400, "unknown_identifier_kind", f"{kind!r} is not an identifier kind; use one of {', '.join(IDENTIFIER_KINDS)}")
    if not value or len(value) > 300:
        raise _Refusal(400, "bad_identifier", f"{kind}: the value must be 1 to 300 characters")
    try:
        return kind, normalise(kind, value)
    except InvalidIdentifier as exc:
        raise _Refusal(400, "bad_identifier", str(exc)) from exc


def _query_identifiers(query: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The identifiers of a query string's (name, value) pairs, in order; a 400 refusal names unknown names."""
    unknown = {k for k, _ in query if k not in IDENTIFIER_KINDS}
    if unknown:
        raise _Refusal(400, "unknown_identifier_kind", f"unknown query parameter(s) {', '.join(sorted(unknown))}; use one of {', '.join(IDENTIFIER_KINDS)}")
    return [_identifier(k, v) for k, v in query]


def _path_identifier(customer_id: str) -> tuple[str, str] | None:
    kind, sep, value = customer_id.partition(":")
    return _identifier(kind, value) if sep and kind in IDENTIFIER_KINDS else None


#: One round trip per lookup: resolve (identifier index, alias or CRM id) and read the context
#: in the server.  Key names are derived inside the script, so it needs a single Redis (not Cluster).
#: A context found through an identifier or an alias comes with the canonical id it was read under
#: (``{1, context, id}``): the lookup cache drops the answer when that context's key changes too.
_LOOKUP = """
local v = redis.call('GET', KEYS[1])
if ARGV[1] == 'ident' then
  if not v then return {0} end
  if v == ARGV[2] then return {2} end
  local c = redis.call('GET', ARGV[3] .. v)
  if not c then return {0} end
  return {1, c, v}
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
return {1, c, t}
"""
_CTX_PREFIX = context_key("")


def _answer(found: Any) -> tuple[int, bytes | None]:
    """The lookup script's reply as (code, stored context or None)."""
    return int(found[0]), (found[1] if len(found) > 1 else None)


class ContextLookup:
    """Runs the lookup script: on one pipelined hiredis connection (:mod:`cxstream.serve.pipelined`) when given
    one (*fast*, from :func:`cxstream.streams.security.pipelined_redis`), else through redis-py.

    With *cache* (and its *invalidations*, which :meth:`start` subscribes), a found context is
    answered from the process's :class:`cxstream.serve.lookupcache.LookupCache` until Redis
    reports a change of a key it was read from.
    """

    def __init__(
        self, client: aioredis.Redis, fast: PipelinedRedis | None = None, *,
        cache: LookupCache | None = None, invalidations: Invalidations | None = None,
    ) -> None:
        self._script = client.register_script(_LOOKUP)
        self._fast = fast
        self.cache = cache
        self.invalidations = invalidations

    @property
    def pipelined(self) -> bool:
        return self._fast is not None

    def start(self) -> None:
        """Subscribe the cache to Redis' invalidations (in the background; it caches once subscribed)."""
        if self.invalidations is not None:
            self.invalidations.start()

    async def __call__(self, keys: list[str], mode: str) -> tuple[int, bytes | None]:
        cache = self.cache
        if cache is None:
            return _answer(await self._run(keys, mode))
        key = (mode, *keys)
        hit = cache.get(key)
        if hit is not None:
            return hit
        pending = cache.begin()
        try:
            found = await self._run(keys, mode)
        except BaseException:
            cache.abandon(pending)
            raise
        code, raw = _answer(found)
        # the keys the answer was read from: the context's own, or every key the script read on its way to it
        deps = (*keys, _CTX_PREFIX + found[2].decode("utf-8", "surrogateescape")) if len(found) > 2 else (keys[0],)
        cache.finish(pending, key, code, raw, deps)
        return code, raw

    async def _run(self, keys: list[str], mode: str) -> Any:
        args = [mode, SHARED, _CTX_PREFIX]
        if self._fast is not None:
            return await self._fast.evalsha(self._script.sha, _LOOKUP, keys, args)
        return await self._script(keys=keys, args=args)  # EVALSHA; loads the script if Redis lost it

    async def close(self) -> None:
        if self.invalidations is not None:
            await self.invalidations.close()
        if self._fast is not None:
            await self._fast.close()


#: An answer as (HTTP status, JSON body): what :func:`context_answer` gives both the aiohttp route
#: and the lookup front (:mod:`cxstream.serve.front`), which writes it without aiohttp.
Answer = tuple[int, bytes]


async def _context_by_identifier(lookup: ContextLookup, kind: str, value: str) -> Answer:
    code, raw = await lookup([identifier_key(kind, value)], "ident")
    if code == 2:
        return 409, error_body("ambiguous_identifier", f"this {kind} is shared by several customers; look the customer up by another identifier")
    if raw is None:
        return 404, error_body("unknown_customer", f"no customer with this {kind}")
    return 200, context_json(raw)


async def _stored_context(lookup: ContextLookup, customer_id: str) -> bytes | None:
    """The context JSON of a canonical id, or of one merged away (its alias), or of a customer_id identifier."""
    _, raw = await lookup([context_key(customer_id), alias_key(customer_id), identifier_key("customer_id", customer_id)], "id")
    return context_json(raw) if raw is not None else None


async def _context_by_id(lookup: ContextLookup, customer_id: str) -> Answer:
    body = await _stored_context(lookup, customer_id)
    if body is None:
        return 404, error_body("unknown_customer", f"no context for customer {customer_id!r}")
    return 200, body


async def context_answer(lookup: ContextLookup, customer_id: str, query: Sequence[tuple[str, str]]) -> Answer:
    """``GET /customers/{customer_id}/context`` (*customer_id* ``""`` for ``/customers/context``) with the query's (name, value) pairs.

    Redis errors are raised (the caller answers 503: :func:`redis_unavailable`).
    """
    try:
        found = _query_identifiers(query)
        if found:
            if len(found) > 1:
                return 400, error_body("too_many_identifiers", "give exactly one identifier to look a customer up")
            return await _context_by_identifier(lookup, *found[0])
        if not customer_id:
            return 400, error_body("no_identifier", f"give the customer in the path or as one query parameter ({', '.join(IDENTIFIER_KINDS)})")
        if len(customer_id) > 300:
            return 400, error_body("bad_customer_id", "the customer id must be 1 to 300 characters")
        by_kind = _path_identifier(customer_id)
    except _Refusal as refusal:
        return refusal.status, refusal.body
    if by_kind is not None:
        return await _context_by_identifier(lookup, *by_kind)
    return await _context_by_id(lookup, customer_id)


def json_response(answer: Answer) -> web.Response:
    status, body = answer
    return web.Response(status=status, body=body, content_type="application/json")


async def customer_context(request: web.Request) -> web.Response:
    return json_response(await context_answer(request.app[LOOKUP], request.match_info.get("customer_id", ""), list(request.query.items())))


def redis_unavailable(route: str, exc: RedisError) -> Answer:
    """The 503 of a request that Redis failed (logged once per 30 s per route)."""
    log.warning("redis error on %s: %r", route, exc)  # a RepeatFilter on this logger
    return 503, error_body("redis_unavailable", f"the context store did not answer: {type(exc).__name__}; {WORKS_WITHOUT_REDIS}")


async def erase_customer(request: web.Request) -> web.Response:
    requests = request.app[ERASURE]
    if requests is None:
        return error(503, "erasure_unavailable", "this server cannot publish erasure requests")
    customer_id = request.match_info.get("customer_id", "")
    try:
        found = _query_identifiers(list(request.query.items()))
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
    try:
        submitted = await requests.submit(Identifiers(**ids))
    except ErasureUnavailable as exc:
        return error(503, "erasure_unavailable", str(exc))
    rid = submitted.event_id
    log.info("erasure %s requested through the API (%s)", rid, ", ".join(sorted(ids)))
    return web.Response(
        status=202,
        body=orjson.dumps({"request_id": rid, "status": "accepted", "status_url": f"/erasures/{rid}"}),
        content_type="application/json",
    )


async def get_erasure(request: web.Request) -> web.Response:
    rid = request.match_info["request_id"]
    if len(rid) > 128:
        return error(400, "bad_request_id", "request ids are at most 128 characters")
    found = await erasure_status(request.app[REDIS], rid)
    if found is None:
        return error(404, "unknown_request", f"no erasure request {rid!r}")
    return web.Response(body=orjson.dumps(found), content_type="application/json")


def build_app(
    redis_client: aioredis.Redis,
    api_keys: frozenset[str],
    app_id: str,
    *,
    erasure: ErasureRequests | None = None,
    engine_metrics: EngineMetrics | None = None,
    pipelined: PipelinedRedis | None = None,
    lookup_cache: tuple[LookupCache, Invalidations] | None = None,
    publisher: KafkaPublisher | None = None,
    feed: LiveFeed | None = None,
    advisor_key_secret: str = "",
    model_namespace: str = "",
) -> web.Application:
    """The aiohttp application (no server): ``cxstream serve`` runs it, tests may drive it directly.

    *app_id* names the engine (consumer group) whose heartbeat ``/healthz`` reads.  With
    *pipelined* (a connection to the Redis of *redis_client*), context lookups take it rather than the pool;
    with *lookup_cache* (a :mod:`cxstream.serve.lookupcache` cache and its invalidations, on the same Redis)
    they are answered from the process's cache while it is fresh.
    *publisher* and *feed* (both on the engine's broker) serve the desk, the chat page and the
    wallboard (:mod:`cxstream.serve.desk`, :mod:`cxstream.serve.pages`); without them those routes answer 503.
    """
    app = web.Application(middlewares=[auth_and_metrics])
    app[REDIS] = redis_client
    cache, invalidations = lookup_cache or (None, None)
    app[LOOKUP] = lookup = ContextLookup(redis_client, pipelined, cache=cache, invalidations=invalidations)

    async def start_lookup(_: web.Application) -> None:
        lookup.start()

    async def close_lookup(_: web.Application) -> None:
        await lookup.close()

    app.on_startup.append(start_lookup)
    app.on_cleanup.append(close_lookup)
    app[API_KEYS] = api_keys
    app[API_KEY_SCOPES] = keys.parse_keys(api_keys)
    app[APP_ID] = app_id
    app[ERASURE] = erasure
    app[ENGINE_METRICS] = engine_metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/customers/context", customer_context)
    app.router.add_get("/customers/{customer_id}/context", customer_context)
    app.router.add_post("/customers/erase", erase_customer)
    app.router.add_post("/customers/{customer_id}/erase", erase_customer)
    app.router.add_get("/erasures/{request_id}", get_erasure)
    queues.add_routes(app)
    app[ADVISOR_SECRET] = desk.advisor_secret(advisor_key_secret, api_keys)
    app[PUBLISHER] = publisher
    app[FEED] = feed

    async def context_of(request: web.Request, customer_id: str) -> web.Response:
        return json_response(await _context_by_id(request.app[LOOKUP], customer_id))

    desk.add_routes(app, context_of)

    async def raw_context(request: web.Request, customer_id: str) -> bytes | None:
        return await _stored_context(request.app[LOOKUP], customer_id)

    assist.add_routes(app, redis_client, raw_context, model_namespace)
    pages.add_routes(app)
    app.on_shutdown.append(desk.shutdown)
    app.on_cleanup.append(desk.close)
    return app


class HttpServer:
    """Runs :func:`build_app` on a host and port; ``port=0`` picks a free one.

    ``reuse_port``: several processes listen on the same port (SO_REUSEPORT) and the kernel
    spreads connections over them.  ``probe_host``: also listen on a private free port of
    that host, so that a supervisor can health-check this very process (``probe_port``).
    ``lookup_front``: the port's connections go to the lookup front first
    (:mod:`cxstream.serve.front`), which answers context lookups itself and hands every
    other request to aiohttp; the probe port is aiohttp's alone.
    """

    def __init__(
        self, app: web.Application, host: str, port: int, *, reuse_port: bool = False, probe_host: str | None = None, lookup_front: bool = False
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.probe_host = probe_host
        self.probe_port: int | None = None
        self.lookup_front = lookup_front
        self._runner: web.AppRunner | None = None
        self._front: LookupFront | None = None
        self._listener: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        if self.lookup_front:
            from cxstream.serve.front import LookupFront  # it imports this module

            assert self._runner.server is not None
            self._front = LookupFront(self.app, self._runner.server)
            self._listener = await asyncio.get_running_loop().create_server(
                self._front, self.host, self.port, reuse_port=self.reuse_port or None, backlog=128
            )
            if self.port == 0:
                self.port = int(self._listener.sockets[0].getsockname()[1])
        else:
            site = web.TCPSite(self._runner, self.host, self.port, reuse_port=self.reuse_port or None)
            await site.start()
            if self.port == 0:
                self.port = _bound_port(site)
        if self.probe_host is not None:
            probe = web.TCPSite(self._runner, self.probe_host, 0)
            await probe.start()
            self.probe_port = _bound_port(probe)

    async def stop(self) -> None:
        if self._listener is not None and self._front is not None:  # the lookups in flight are answered before Redis is closed
            self._listener.close()
            self._front.close()
            await self._front.wait_answered(5.0)
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _bound_port(site: web.TCPSite) -> int:
    server = site._server
    assert server is not None and server.sockets  # type: ignore[attr-defined]
    return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
