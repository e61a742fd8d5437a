"""``GET /queues`` and ``GET /queues/{group}``: live statistics per routing group and queue.

The router of each group stores its statistics in Redis on every tick (see
``cxstream.agents.router``), so any worker answers for every group.  Figures and
their formulas: ``cxstream/routing/stats.py`` (``live``): each logged-in advisor is counted
once (``available`` + ``busy`` + ``away`` = ``logged_in``), and the queues' occupancies are
shares of the group's, live, rounded to 4 decimals.  This module serves them as the router
wrote them.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from cxstream.serve.common import REDIS, error
from cxstream.streams.keys import QUEUES_PATTERN, queues_key


def _redis(request: web.Request) -> aioredis.Redis:
    return request.app[REDIS]


async def read_all(client: aioredis.Redis) -> list[dict[str, Any]]:
    """The live statistics of every routing group a router ran in the last minute, by group name."""
    keys = sorted([k async for k in client.scan_iter(match=QUEUES_PATTERN, count=500)])
    values = await client.mget(keys) if keys else []
    return [orjson.loads(v) for v in values if v is not None]


async def all_groups(request: web.Request) -> web.Response:
    groups = await read_all(_redis(request))
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
