"""``GET /queues`` and ``GET /queues/{group}``: live statistics per routing group and queue.

The router of each group stores its statistics in Redis on every tick (see
``cxstream.agents.router``), so any worker answers for every group.  Figures and
their formulas: ``cxstream/routing/stats.py``.
"""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from cxstream.serve.common import REDIS, error
from cxstream.streams.keys import QUEUES_PATTERN, queues_key


def _redis(request: web.Request) -> aioredis.Redis:
    return request.app[REDIS]


async def all_groups(request: web.Request) -> web.Response:
    client = _redis(request)
    keys = sorted([k async for k in client.scan_iter(match=QUEUES_PATTERN, count=500)])
    values = await client.mget(keys) if keys else []
    groups = [orjson.loads(v) for v in values if v is not None]
    return web.Response(body=orjson.dumps({"groups": groups}), content_type="application/json")


async def one_group(request: web.Request) -> web.Response:
    group = request.match_info["group"]
    raw = await _redis(request).get(queues_key(group))
    if raw is None:
        return error(404, "unknown_routing_group", f"no live statistics for routing group {group!r} (no router has run it in the last minute)")
    return web.Response(body=raw, content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/queues", all_groups)
    app.router.add_get("/queues/{group}", one_group)
