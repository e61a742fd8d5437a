"""The HTTP API: customer context from Redis, health, Prometheus metrics.

| route                          | auth | answers |
|--------------------------------|------|---------|
| ``GET /healthz``               | no   | 200 when Redis answers and the engine runs, else 503, with details |
| ``GET /metrics``               | key  | Prometheus text format |
| ``GET /customers/{id}/context``| key  | the customer's context JSON (from Redis), 404 if unknown |

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

from cxstream.streams import metrics
from cxstream.streams.keys import context_key

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REDIS: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)
API_KEYS: web.AppKey[frozenset[str]] = web.AppKey("api_keys", frozenset)
HEALTH: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("health", object)  # type: ignore[arg-type]


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


async def customer_context(request: web.Request) -> web.Response:
    customer_id = request.match_info["customer_id"]
    if not customer_id or len(customer_id) > 300:
        return error(400, "bad_customer_id", "the customer id must be 1 to 300 characters")
    raw = await request.app[REDIS].get(context_key(customer_id))
    if raw is None:
        return error(404, "unknown_customer", f"no context for customer {customer_id!r}")
    return web.Response(body=raw, content_type="application/json")


def build_app(
    redis_client: aioredis.Redis,
    api_keys: frozenset[str],
    health: Callable[[], dict[str, Any]] = lambda: {"engine": "ok"},
) -> web.Application:
    """The aiohttp application (no server): the engine runs it, tests drive it directly."""
    app = web.Application(middlewares=[auth_and_metrics])
    app[REDIS] = redis_client
    app[API_KEYS] = api_keys
    app[HEALTH] = health
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/customers/{customer_id}/context", customer_context)
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
