"""The web pages (``/desk``, ``/wallboard``, ``/chat``), the routes only they need, and ``/openapi.json``.

The pages are plain HTML, CSS and JavaScript shipped in the package (``cxstream/serve/web/``):
no build step, nothing fetched from elsewhere.  They call the same HTTP API as any client.

| route | auth | answers |
|---|---|---|
| ``GET /desk``, ``/wallboard``, ``/chat``, ``/static/{file}`` | none | the pages (they ask for a key themselves) |
| ``GET /openapi.json`` | none | the OpenAPI 3.1 document of the whole API |
| ``GET /wallboard/data`` | API key | queue figures of every routing group, recent SLA breaches and other routing events, outreach, model accuracy, latency and service-level history |
| ``POST /chat/messages`` | API key | the chat page's customer message: ``contact_opened`` (routed to an advisor) for a new chat, then the ``message`` |
| ``POST /chat/contacts/{contact_id}/close`` | API key | the customer ends the chat: ``contact_closed`` |

The latency and service-level history is kept by each API process while its live feed runs
(:mod:`cxstream.serve.feed`): latency from the assignments of the last hour (read back when
the feed starts), service level sampled from the queue figures every
:data:`SAMPLE_EVERY_S` seconds while a wallboard asks.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import msgspec
import orjson
from aiohttp import web

from cxstream.context.identity import InvalidIdentifier, normalise
from cxstream.schemas import Identifiers, InteractionEvent
from cxstream.schemas.common import Language, RoutingGroup
from cxstream.serve import queues
from cxstream.serve.common import REDIS, error
from cxstream.serve.desk import FEED, Body, Refused, _feed, _publish, guarded, read_body
from cxstream.streams import topics as t

WEB = Path(__file__).parent / "web"
PAGES = {"/desk": "desk.html", "/wallboard": "wallboard.html", "/chat": "chat.html"}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}
#: Service level is sampled for the wallboard's plot at most this often.
SAMPLE_EVERY_S = 10.0
HISTORY: web.AppKey[dict[str, deque[dict[str, Any]]]] = web.AppKey("sl_history", dict)
PUBLIC_ROUTES = frozenset({*PAGES, "/static/{name}", "/openapi.json", "/healthz", "/livez"})


def page(name: str) -> Any:
    async def serve(_: web.Request) -> web.Response:
        return web.Response(
            body=(WEB / name).read_bytes(), content_type="text/html", charset="utf-8",
            headers={"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'self'; img-src 'self' data:"},
        )

    return serve


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    path = WEB / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
        return error(404, "not_found", f"no file {name!r}")
    return web.Response(body=path.read_bytes(), content_type=STATIC_TYPES[path.suffix], charset="utf-8", headers={"Cache-Control": "no-cache"})


@guarded
async def wallboard_data(request: web.Request) -> web.Response:
    """Everything the wallboard shows, in one answer."""
    groups = await queues.read_all(request.app[REDIS])
    now = time.time()
    history = request.app[HISTORY]
    for g in groups:
        series = history.setdefault(g["group"], deque())
        if not series or now - series[-1]["at"] >= SAMPLE_EVERY_S:
            total = g.get("total", {})
            series.append({"at": now, "service_level": total.get("service_level"), "waiting": total.get("waiting")})
        while series and series[0]["at"] < now - 3600:
            series.popleft()
    feed = await _feed(request)
    board = feed.board
    body = {
        "now": now,
        "groups": groups,
        "routing_events": list(board.recent_routing)[:20],
        "outreach": list(board.recent_outreach)[:10],
        "models": board.models,
        "latency": board.latency_series(now),
        "service_level": {g: list(s) for g, s in history.items()},
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


class ChatMessage(Body):
    """A message typed on the chat page by a customer who gave an e-mail address and/or a phone number."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    email: Annotated[str, msgspec.Meta(max_length=254)] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    contact_id: Annotated[str, msgspec.Meta(pattern=r"^chat-[0-9a-f]{8,32}$", description="The chat, from the first message's answer.")] | None = None
    language: Language | None = None
    routing_group: RoutingGroup = "default"


class ChatClose(Body):
    email: Annotated[str, msgspec.Meta(max_length=254)] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    routing_group: RoutingGroup = "default"


def _customer(body: ChatMessage | ChatClose) -> tuple[Identifiers, str]:
    ids: dict[str, str] = {}
    for kind in ("email", "phone"):
        value = getattr(body, kind)
        if value:
            try:
                ids[kind] = normalise(kind, value)
            except InvalidIdentifier as exc:
                raise Refused(error(400, "bad_identifier", str(exc))) from exc
    if not ids:
        raise Refused(error(400, "no_identifier", "give the customer's email or phone"))
    return Identifiers(**ids), next(iter(ids.values()))


@guarded
async def chat_message(request: web.Request) -> web.Response:
    """A customer's chat message; the first of a chat also opens a contact that needs an advisor."""
    body: ChatMessage = await read_body(request, ChatMessage)
    customer, key = _customer(body)
    now = time.time()
    contact_id = body.contact_id or f"chat-{uuid.uuid4().hex[:16]}"
    common = dict(channel="chat", customer=customer, contact_id=contact_id, routing_group=body.routing_group, language=body.language)
    if body.contact_id is None:
        opened = InteractionEvent(event_id=f"{contact_id}:open", occurred_at=now, kind="contact_opened", needs_advisor=True, **common)  # type: ignore[arg-type]
        await _publish(request, t.INTERACTIONS.name, key, opened)
    msg = InteractionEvent(event_id=f"{contact_id}:{uuid.uuid4().hex[:12]}", occurred_at=now, kind="message", text=body.text, **common)  # type: ignore[arg-type]
    await _publish(request, t.INTERACTIONS.name, key, msg)
    return web.Response(
        status=202, body=orjson.dumps({"contact_id": contact_id, "event_id": msg.event_id, "opened": body.contact_id is None}),
        content_type="application/json",
    )


@guarded
async def chat_close(request: web.Request) -> web.Response:
    """The customer ends the chat."""
    body: ChatClose = await read_body(request, ChatClose)
    contact_id = request.match_info["contact_id"]
    if not contact_id.startswith("chat-") or len(contact_id) > 40:
        return error(400, "bad_contact_id", "chat contact ids are those POST /chat/messages returned")
    customer, key = _customer(body)
    ev = InteractionEvent(
        event_id=f"{contact_id}:closed-by-customer", occurred_at=time.time(), channel="chat", kind="contact_closed",
        customer=customer, contact_id=contact_id, routing_group=body.routing_group, attributes={"closed_by": "customer"},
    )
    await _publish(request, t.INTERACTIONS.name, key, ev)
    return web.Response(status=202, body=orjson.dumps({"contact_id": contact_id, "event_id": ev.event_id}), content_type="application/json")


async def openapi(request: web.Request) -> web.Response:
    from cxstream.serve.openapi import document

    return web.Response(body=orjson.dumps(document()), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app[HISTORY] = {}
    for route, name in PAGES.items():
        app.router.add_get(route, page(name))
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/wallboard/data", wallboard_data)
    app.router.add_post("/chat/messages", chat_message)
    app.router.add_post("/chat/contacts/{contact_id}/close", chat_close)


__all__ = ["FEED", "PUBLIC_ROUTES", "add_routes"]
