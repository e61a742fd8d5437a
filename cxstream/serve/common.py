"""What every module of the HTTP API shares: the application keys, JSON errors, the engine heartbeat.

The API runs in processes of its own (``cxstream serve``), so it cannot ask the engine
whether it is healthy: the engine writes a heartbeat key to Redis every
:data:`HEARTBEAT_EVERY_S` seconds with a TTL of :data:`HEARTBEAT_TTL_S`, and ``/healthz``
reads it.  The age of a heartbeat is derived from the key's remaining TTL, so the engine
and the API need no common clock.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from cxstream.serve.keys import parse_keys
from cxstream.streams.settings import Settings, SettingsError

REDIS: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)

#: The engine refreshes its heartbeat this often...
HEARTBEAT_EVERY_S = 1.0
#: ...with this TTL: a missing key means no engine wrote one for this long.
HEARTBEAT_TTL_S = 10.0
#: A heartbeat older than this is stale: the engine is alive but its event loop is stuck or slow.
HEARTBEAT_STALE_S = 3.0


def heartbeat_key(app_id: str) -> str:
    """The Redis key of the engine heartbeat of app (consumer group) *app_id*.

    >>> heartbeat_key("cxstream")
    'cx:engine:heartbeat:cxstream'
    """
    return f"cx:engine:heartbeat:{app_id}"


def heartbeat_value(state: str, **details: Any) -> bytes:
    """The heartbeat's value: the engine's state (``ok``, ``starting``, ``stopping``) and details.

    >>> orjson.loads(heartbeat_value("ok", pending_redis_writes=3))
    {'state': 'ok', 'pending_redis_writes': 3}
    """
    return orjson.dumps({"state": state, **details})


def read_heartbeat(value: bytes | None, pttl_ms: int) -> dict[str, Any]:
    """``/healthz``'s view of a heartbeat read from Redis (``GET`` and ``PTTL`` of the key).

    ``engine`` is ``ok`` only for a fresh heartbeat of a running engine.

    >>> read_heartbeat(None, -2)["engine"]
    'down: no heartbeat in Redis for 10 s'
    >>> read_heartbeat(heartbeat_value("ok", pending_redis_writes=0), 9_500)
    {'engine': 'ok', 'engine_heartbeat_age_s': 0.5, 'pending_redis_writes': 0}
    >>> read_heartbeat(heartbeat_value("ok"), 5_000)["engine"]
    'stale: last heartbeat 5.0 s ago'
    """
    if value is None:
        return {"engine": f"down: no heartbeat in Redis for {HEARTBEAT_TTL_S:.0f} s"}
    try:
        beat = orjson.loads(value)
        state = str(beat.pop("state"))
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return {"engine": "unknown: unreadable heartbeat"}
    age = max(0.0, HEARTBEAT_TTL_S - pttl_ms / 1000) if pttl_ms >= 0 else None
    if age is not None and age > HEARTBEAT_STALE_S:
        state = f"stale: last heartbeat {age:.1f} s ago"
    return {"engine": state, "engine_heartbeat_age_s": None if age is None else round(age, 3), **beat}


def error_body(code: str, detail: str) -> bytes:
    """The body of a JSON error: what was wrong (*code*) and in words (*detail*).

    >>> error_body("unknown_customer", "no such customer")
    b'{"error":"unknown_customer","detail":"no such customer"}'
    """
    return orjson.dumps({"error": code, "detail": detail})


def error(status: int, code: str, detail: str) -> web.Response:
    """A JSON error response that says what was wrong.

    >>> error(404, "unknown_customer", "no such customer").status
    404
    """
    return web.Response(status=status, body=error_body(code, detail), content_type="application/json")


def resolve_api_keys(settings: Settings, say: Callable[[str], None] = print) -> frozenset[str]:
    """``CX_API_KEYS`` and ``CX_API_KEYS_FILE``, or the key kept in ``DATA_DIR/api-key`` (generated on first use).

    A malformed entry (an unknown scope) is a :class:`SettingsError` that names the scope, never
    the key; what is said names the key's file, never the key.
    """
    keys = settings.api_key_set
    if keys:
        try:
            parse_keys(keys)
        except ValueError as exc:
            raise SettingsError(f"CX_API_KEYS / CX_API_KEYS_FILE: {exc}") from exc
        return keys
    path = Path(settings.data_dir) / "api-key"
    if path.exists():
        key = path.read_text().strip()
    else:
        key = secrets.token_urlsafe(24)
        settings.path()
        path.write_text(key + "\n")
        os.chmod(path, 0o600)
    say(f"no CX_API_KEYS set: the API key (every scope) is in {path}")
    return frozenset({key})
