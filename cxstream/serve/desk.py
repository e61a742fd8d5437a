"""The advisor desktop's API: sign in, presence, live offers, accept/reject, transfer, complete.

Every action becomes the :class:`~cxstream.schemas.AdvisorEvent` a desktop has always
been able to publish itself, on ``cx.advisor-events.v1``; the router decides as before.

| route | answers |
|---|---|
| ``POST /advisors/{id}/key`` (API key only) | the advisor's desk key |
| ``POST /advisors/{id}/login`` | 202: ``login`` with presence, skills, languages, capacity |
| ``POST /advisors/{id}/presence`` | 202: ``presence`` (available, busy, wrap_up, away, offline) |
| ``POST /advisors/{id}/logout`` | 202: ``logout`` |
| ``GET /advisors/{id}/work`` | the advisor's offers and contacts now |
| ``GET /advisors/{id}/events`` | the same, live: server-sent events (``event: work``) after each change |
| ``POST /advisors/{id}/offers/{assignment_id}/accept`` | 202: ``offer_accepted`` |
| ``POST /advisors/{id}/offers/{assignment_id}/reject`` | 202: ``offer_rejected`` |
| ``POST /advisors/{id}/contacts/{contact_id}/transfer`` | 202: ``contact_transferred`` to an advisor and/or skills |
| ``POST /advisors/{id}/contacts/{contact_id}/complete`` | 202: ``contact_completed`` with the disposition, and the contact's ``contact_closed`` |
| ``GET /advisors/{id}/contacts/{contact_id}/context`` | the 360° context of the customer of a contact the advisor is offered or holds |
| ``GET /advisors/{id}/contacts/{contact_id}/suggestions`` | suggested knowledge for that contact, with why (:mod:`cxstream.serve.assist`) |
| ``GET /advisors/{id}/contacts/{contact_id}/nba`` | that contact's next-best actions, ranked, with why and the logged propensity |

``{contact_id}`` is the contact's id, or its ``contact_key`` (from the Assignment): an advisor
holding two customers' contacts with the same id names one by its key (409 ``ambiguous_contact``
otherwise).  Every event the desk publishes about a contact carries the contact's key.

**Keys.** An advisor signs in with a *desk key*: ``cxa_`` and an HMAC of the advisor id
under ``CX_ADVISOR_KEY_SECRET`` (by default, a secret derived from the API keys), so any
API process checks it without a lookup.  A desk key opens the ``/advisors/{id}/...``
routes of that advisor only; the API key (``CX_API_KEYS``, the supervisor's and the
integrations') opens every route, for any advisor.  ``POST /advisors/{id}/key`` with
the API key issues a desk key; changing the secret revokes every desk key at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, cast

import msgspec
import orjson
from aiohttp import web

from cxstream.schemas import AdvisorEvent, Disposition, Identifiers, InteractionEvent, NextBestAction
from cxstream.schemas.common import Channel, Language, RoutingGroup, ShortText
from cxstream.schemas.events import NBAAction, Presence, Skills
from cxstream.serve.common import error
from cxstream.serve.feed import LiveFeed
from cxstream.serve.publish import KafkaPublisher, PublishUnavailable
from cxstream.streams import topics as t

ADVISOR_SECRET: web.AppKey[bytes] = web.AppKey("advisor_secret", bytes)
FEED: web.AppKey[LiveFeed | None] = web.AppKey("feed", object)  # type: ignore[arg-type]
PUBLISHER: web.AppKey[KafkaPublisher | None] = web.AppKey("publisher", object)  # type: ignore[arg-type]

AdvisorId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.@-]{1,128}$")]
#: How long an action waits for the feed to see the offer it answers (the assignment may be a few ms old).
SEE_OFFER_S = 3.0
#: Server-sent events: a comment this often keeps proxies from closing an idle stream.
KEEPALIVE_S = 15.0
#: how long the context of an offered or held contact's customer is waited for when Redis does not have it
#: yet: the router may offer a contact before the context stage's write-behind (``CX_REDIS_FLUSH_MS``, 100 ms)
#: has copied that context to Redis, and a desk opens the context as soon as the offer shows
HELD_CONTEXT_WAIT_S = 1.0


def advisor_secret(configured: str, api_keys: frozenset[str]) -> bytes:
    """The secret desk keys are derived from: ``CX_ADVISOR_KEY_SECRET``, else one derived from the API keys.

    >>> advisor_secret("s", frozenset()) == b"s"
    True
    >>> advisor_secret("", frozenset({"b", "a"})) == advisor_secret("", frozenset({"a", "b"}))
    True
    """
    if configured:
        return configured.encode()
    return hashlib.sha256(b"cxstream advisor keys\0" + b"\0".join(sorted(k.encode() for k in api_keys))).digest()


def advisor_key(secret: bytes, advisor_id: str) -> str:
    """The desk key of *advisor_id*.

    >>> advisor_key(b"s", "ann").startswith("cxa_"), advisor_key(b"s", "ann") == advisor_key(b"s", "bob")
    (True, False)
    """
    mac = hmac.new(secret, b"advisor:" + advisor_id.encode(), hashlib.sha256).digest()[:24]
    return "cxa_" + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def is_advisor_key(secret: bytes, advisor_id: str, presented: str) -> bool:
    return presented.startswith("cxa_") and hmac.compare_digest(presented, advisor_key(secret, advisor_id))


# ------------------------------------------------------------------ request bodies
class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are refused (a typo must not pass silently)."""


class LoginBody(Body):
    """Sign in: the advisor becomes routable in ``routing_group`` with these skills, languages and capacity."""

    routing_group: RoutingGroup = "default"
    presence: Presence = "available"
    skills: Skills | None = None
    languages: Annotated[list[Language], msgspec.Meta(max_length=16)] | None = None
    capacity: Annotated[
        dict[Channel, Annotated[int, msgspec.Meta(ge=0, le=50)]],
        msgspec.Meta(description="Contacts of each channel the advisor can hold at once."),
    ] | None = None


class PresenceBody(Body):
    presence: Presence
    routing_group: RoutingGroup = "default"


class LogoutBody(Body):
    routing_group: RoutingGroup = "default"


class TransferBody(Body):
    """Hand the contact on: to an advisor (held for them a while), and/or to the queue of skills."""

    to_advisor_id: AdvisorId | None = None
    to_skills: Annotated[list[ShortText], msgspec.Meta(min_length=1, max_length=16)] | None = None


class CompleteBody(Body):
    """The disposition: the contact's true intent, whether it was resolved, a wrap-up code, the document used and notes."""

    resolved: bool
    intent: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    document: Annotated[
        str, msgspec.Meta(min_length=1, max_length=128, description="The knowledge document or response template used (its id): teaches the suggestions "
        "and, with action=resolve, the next-best action.")
    ] | None = None
    notes: Annotated[str, msgspec.Meta(max_length=2000, description="Redacted by ingest like any message text.")] | None = None
    close_contact: Annotated[bool, msgspec.Meta(description="Also close the contact on its channel (contact_closed).")] = True
    action: Annotated[NBAAction, msgspec.Meta(
        description="The next-best action taken (the bandit learns its outcome); none: the recommended one.")] | None = None


class NBAAnswer(Body):
    """The next-best actions ranked for a contact (the latest decision), or none yet."""

    contact_id: str
    customer_id: str
    decision: NextBestAction | None = None


class _NBAOfContext(msgspec.Struct):
    nba: list[NextBestAction] = []


class EmptyBody(Body):
    pass


BODIES: dict[str, type[Body]] = {
    "LoginBody": LoginBody, "PresenceBody": PresenceBody, "LogoutBody": LogoutBody,
    "TransferBody": TransferBody, "CompleteBody": CompleteBody,
}


class Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


async def read_body(request: web.Request, kind: type[Body]) -> Any:
    """The request's JSON body as *kind*; an empty body is ``{}``; else a 400 saying what is wrong."""
    raw = await request.read()
    if len(raw) > 64 * 1024:
        raise Refused(error(413, "body_too_large", "the JSON body must be at most 64 KiB"))
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise Refused(error(400, "invalid_body", str(exc))) from exc
    except msgspec.DecodeError as exc:
        raise Refused(error(400, "not_json", f"the body is not JSON: {exc}")) from exc
    except UnicodeDecodeError as exc:  # msgspec raises it for invalid UTF-8 in a string: it was a 500
        raise Refused(error(400, "not_utf8", f"the body is not UTF-8: byte {exc.start} of a string ({exc.reason})")) from exc
    except RecursionError as exc:  # nested thousands deep: it was a 500
        raise Refused(error(400, "not_json", "the body is not JSON: nested too deeply")) from exc


def _advisor(request: web.Request) -> str:
    advisor_id = request.match_info["advisor_id"]
    try:
        return msgspec.convert(advisor_id, AdvisorId)
    except msgspec.ValidationError as exc:
        raise Refused(error(400, "bad_advisor_id", "advisor ids are 1 to 128 letters, digits or _ . @ -")) from exc


def accepted(ev: AdvisorEvent, **extra: Any) -> web.Response:
    body = {"event_id": ev.event_id, "kind": ev.kind, "advisor_id": ev.advisor_id, **extra}
    return web.Response(status=202, body=orjson.dumps(body), content_type="application/json")


def _event(advisor_id: str, kind: str, **fields: Any) -> AdvisorEvent:
    return AdvisorEvent(event_id=f"desk-{uuid.uuid4().hex}", occurred_at=time.time(), advisor_id=advisor_id, kind=kind, **fields)  # type: ignore[arg-type]


async def _publish(request: web.Request, topic: str, key: str, record: Any) -> None:
    publisher = request.app[PUBLISHER]
    if publisher is None:
        raise Refused(error(503, "broker_unavailable", "this API process has no broker to publish to (CX_BROKER_URL)"))
    try:
        await publisher.send(topic, key, record)
    except PublishUnavailable as exc:
        raise Refused(error(503, "broker_unavailable", str(exc))) from exc
    feed = request.app[FEED]
    if feed is not None and isinstance(record, AdvisorEvent):  # this process's board need not wait to read it back
        feed.published(record)


async def _feed(request: web.Request) -> LiveFeed:
    feed = request.app[FEED]
    if feed is None:
        raise Refused(error(503, "feed_unavailable", "this API process has no broker to read offers from (CX_BROKER_URL)"))
    if not await feed.ready():
        raise Refused(error(503, "feed_unavailable", f"the offers feed is not ready: {feed.error or 'still reading the broker'}"))
    return feed


def guarded(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused as refusal:
            return refusal.response

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


# ------------------------------------------------------------------ handlers
@guarded
async def issue_key(request: web.Request) -> web.Response:
    """Issue an advisor's desk key (API key only)."""
    advisor_id = _advisor(request)
    key = advisor_key(request.app[ADVISOR_SECRET], advisor_id)
    return web.Response(body=orjson.dumps({"advisor_id": advisor_id, "key": key}), content_type="application/json")


@guarded
async def login(request: web.Request) -> web.Response:
    """Sign in: a ``login`` AdvisorEvent."""
    advisor_id = _advisor(request)
    body: LoginBody = await read_body(request, LoginBody)
    ev = _event(
        advisor_id, "login", routing_group=body.routing_group, presence=body.presence, skills=body.skills,
        languages=body.languages, capacity=body.capacity,
    )
    await _publish(request, t.ADVISOR_EVENTS.name, advisor_id, ev)
    return accepted(ev, routing_group=body.routing_group, presence=body.presence)


@guarded
async def presence(request: web.Request) -> web.Response:
    """Set presence: a ``presence`` AdvisorEvent."""
    advisor_id = _advisor(request)
    body: PresenceBody = await read_body(request, PresenceBody)
    ev = _event(advisor_id, "presence", routing_group=body.routing_group, presence=body.presence)
    await _publish(request, t.ADVISOR_EVENTS.name, advisor_id, ev)
    return accepted(ev, presence=body.presence)


@guarded
async def logout(request: web.Request) -> web.Response:
    """Sign out: a ``logout`` AdvisorEvent (open offers go back to the queue)."""
    advisor_id = _advisor(request)
    body: LogoutBody = await read_body(request, LogoutBody)
    ev = _event(advisor_id, "logout", routing_group=body.routing_group)
    await _publish(request, t.ADVISOR_EVENTS.name, advisor_id, ev)
    return accepted(ev)


@guarded
async def work(request: web.Request) -> web.Response:
    """The advisor's offers and contacts now."""
    advisor_id = _advisor(request)
    feed = await _feed(request)
    return web.Response(body=orjson.dumps({"advisor_id": advisor_id, "work": feed.board.work(advisor_id)}), content_type="application/json")


@guarded
async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``event: work`` with the advisor's offers and contacts, now and after each change."""
    advisor_id = _advisor(request)
    feed = await _feed(request)
    q = feed.subscribe(advisor_id)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    try:
        current = feed.board.work(advisor_id)
        while True:
            feed.used_at = time.monotonic()
            await response.write(b"event: work\ndata: " + orjson.dumps({"advisor_id": advisor_id, "now": time.time(), "work": current}) + b"\n\n")
            try:
                got = await asyncio.wait_for(q.get(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                got = feed.board.work(advisor_id)
            if got is None:  # the server is stopping
                break
            current = got
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.unsubscribe(advisor_id, q)
    return response


async def _offer(request: web.Request, feed: LiveFeed, advisor_id: str) -> Any:
    assignment_id = request.match_info["assignment_id"]
    deadline = time.monotonic() + SEE_OFFER_S
    while (w := feed.board.offer(advisor_id, assignment_id)) is None:
        if time.monotonic() > deadline:
            raise Refused(error(404, "unknown_offer", f"advisor {advisor_id!r} has no open offer {assignment_id!r}"))
        await asyncio.sleep(0.05)
    if w.status != "offered":
        raise Refused(error(409, "offer_answered", f"offer {assignment_id!r} was already accepted"))
    return w


@guarded
async def accept(request: web.Request) -> web.Response:
    """Accept an offer: ``offer_accepted``."""
    advisor_id = _advisor(request)
    await read_body(request, EmptyBody)
    w = await _offer(request, await _feed(request), advisor_id)
    a = w.assignment
    ev = _event(
        advisor_id, "offer_accepted", routing_group=a.routing_group, contact_id=a.contact_id, assignment_id=a.assignment_id,
        contact_key=a.contact_key,
    )
    await _publish(request, t.ADVISOR_EVENTS.name, advisor_id, ev)
    return accepted(ev, contact_id=a.contact_id, assignment_id=a.assignment_id)


@guarded
async def reject(request: web.Request) -> web.Response:
    """Reject an offer: ``offer_rejected`` (the contact goes back to the queue, offered to someone else)."""
    advisor_id = _advisor(request)
    await read_body(request, EmptyBody)
    w = await _offer(request, await _feed(request), advisor_id)
    a = w.assignment
    ev = _event(
        advisor_id, "offer_rejected", routing_group=a.routing_group, contact_id=a.contact_id, assignment_id=a.assignment_id,
        contact_key=a.contact_key,
    )
    await _publish(request, t.ADVISOR_EVENTS.name, advisor_id, ev)
    return accepted(ev, contact_id=a.contact_id, assignment_id=a.assignment_id)


async def _held(request: web.Request, advisor_id: str, *, active: bool) -> Any:
    feed = await _feed(request)
    contact_id = request.match_info["contact_id"]
    w = feed.board.holds(advisor_id, contact_id)
    if w is None:
        same = [x for x in feed.board.by_advisor.get(advisor_id, {}).values() if x.assignment.contact_id == contact_id]
        if len(same) > 1:
            keys = ", ".join(sorted(x.assignment.contact_key or "" for x in same))
            raise Refused(error(
                409, "ambiguous_contact",
                f"advisor {advisor_id!r} holds {len(same)} contacts with id {contact_id!r} (of different customers): "
                f"name one by its contact_key ({keys})",
            ))
        raise Refused(error(404, "unknown_contact", f"advisor {advisor_id!r} holds no contact {contact_id!r}"))
    if active and w.status != "active":
        raise Refused(error(409, "not_accepted", f"contact {contact_id!r} is offered, not accepted: accept it first"))
    return w


@guarded
async def transfer(request: web.Request) -> web.Response:
    """Transfer a contact the advisor holds: ``contact_transferred``."""
    advisor_id = _advisor(request)
    body: TransferBody = await read_body(request, TransferBody)
    if body.to_advisor_id is None and body.to_skills is None:
        return error(400, "invalid_body", "name where to transfer: to_advisor_id, to_skills or both")
    if body.to_advisor_id == advisor_id:
        return error(400, "invalid_body", "a contact cannot be transferred to the advisor who holds it")
    a = (await _held(request, advisor_id, active=True)).assignment
    ev = _event(
        advisor_id, "contact_transferred", routing_group=a.routing_group, contact_id=a.contact_id,
        assignment_id=a.assignment_id, transfer_to_advisor_id=body.to_advisor_id, transfer_to_skills=body.to_skills,
        contact_key=a.contact_key,
    )
    await _publish(request, t.ADVISOR_EVENTS.name, advisor_id, ev)
    return accepted(ev, contact_id=a.contact_id)


def customer_identifiers(customer_id: str) -> Identifiers:
    """The identifiers that name a customer by its canonical id (``kind:value`` keys, as identity makes them).

    >>> customer_identifiers("email:jane@x.org").email, customer_identifiers("C-1").customer_id
    ('jane@x.org', 'C-1')
    """
    kind, sep, value = customer_id.partition(":")
    if sep and kind in Identifiers.__struct_fields__:
        return Identifiers(**{kind: value})
    return Identifiers(customer_id=customer_id)


@guarded
async def complete(request: web.Request) -> web.Response:
    """Complete a contact with its disposition: ``contact_completed`` (the learner's ground truth), then ``contact_closed``."""
    advisor_id = _advisor(request)
    body: CompleteBody = await read_body(request, CompleteBody)
    a = (await _held(request, advisor_id, active=True)).assignment
    ev = _event(
        advisor_id, "contact_completed", routing_group=a.routing_group, contact_id=a.contact_id, assignment_id=a.assignment_id,
        disposition=Disposition(intent=body.intent, resolved=body.resolved, code=body.code, document=body.document, action=body.action),
        contact_key=a.contact_key,
    )
    await _publish(request, t.ADVISOR_EVENTS.name, advisor_id, ev)
    if body.close_contact:
        attrs: dict[str, str | int | float | bool] = {"resolved": body.resolved, "closed_by": "advisor", "advisor_id": advisor_id}
        closed = InteractionEvent(
            event_id=f"{ev.event_id}:closed", occurred_at=ev.occurred_at, channel=a.channel, kind="contact_closed",
            customer=customer_identifiers(a.customer_id), contact_id=a.contact_id, routing_group=a.routing_group,
            direction="outbound", text=body.notes or None, attributes=attrs,
        )
        await _publish(request, t.INTERACTIONS.name, a.customer_id, closed)
    disposition = {"intent": body.intent, "resolved": body.resolved, "code": body.code, "action": body.action}
    if body.document is not None:  # answered only when given: the answer stays as it was for older desks
        disposition["document"] = body.document
    return accepted(ev, contact_id=a.contact_id, disposition=disposition)


def add_routes(app: web.Application, context_of: Callable[[web.Request, str], Awaitable[web.Response]]) -> None:
    """The routes in the module docstring; *context_of* answers a customer's context by canonical id."""

    async def held_context(request: web.Request, customer_id: str) -> web.Response:
        """*customer_id*'s context, waited for up to :data:`HELD_CONTEXT_WAIT_S` (its contact was routed: it exists)."""
        deadline = time.monotonic() + HELD_CONTEXT_WAIT_S
        while True:
            found = await context_of(request, customer_id)
            if found.status != 404 or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(0.02)

    @guarded
    async def contact_context(request: web.Request) -> web.Response:
        """The context of the customer of a contact the advisor is offered or holds."""
        advisor_id = _advisor(request)
        w = await _held(request, advisor_id, active=False)
        return await held_context(request, w.assignment.customer_id)

    @guarded
    async def contact_nba(request: web.Request) -> web.Response:
        """The next-best actions ranked for a contact the advisor is offered or holds (from its customer's context)."""
        advisor_id = _advisor(request)
        a = (await _held(request, advisor_id, active=False)).assignment
        found = await held_context(request, a.customer_id)
        decision = None
        if found.status == 200 and found.body is not None:
            ctx = msgspec.json.decode(cast(bytes, found.body), type=_NBAOfContext)
            mine = [d for d in ctx.nba if d.contact_id == a.contact_id]
            decision = mine[-1] if mine else None
        elif found.status != 404:
            return found
        answer = NBAAnswer(contact_id=a.contact_id, customer_id=a.customer_id, decision=decision)
        return web.Response(body=msgspec.json.encode(answer), content_type="application/json")

    app.router.add_post("/advisors/{advisor_id}/key", issue_key)
    app.router.add_post("/advisors/{advisor_id}/login", login)
    app.router.add_post("/advisors/{advisor_id}/presence", presence)
    app.router.add_post("/advisors/{advisor_id}/logout", logout)
    app.router.add_get("/advisors/{advisor_id}/work", work)
    app.router.add_get("/advisors/{advisor_id}/events", events)
    app.router.add_post("/advisors/{advisor_id}/offers/{assignment_id}/accept", accept)
    app.router.add_post("/advisors/{advisor_id}/offers/{assignment_id}/reject", reject)
    app.router.add_post("/advisors/{advisor_id}/contacts/{contact_id}/transfer", transfer)
    app.router.add_post("/advisors/{advisor_id}/contacts/{contact_id}/complete", complete)
    app.router.add_get("/advisors/{advisor_id}/contacts/{contact_id}/context", contact_context)
    app.router.add_get("/advisors/{advisor_id}/contacts/{contact_id}/nba", contact_nba)


#: Routes a desk key opens (for its own advisor id); every other route needs the API key.
ADVISOR_ROUTES = frozenset({
    "/advisors/{advisor_id}/login", "/advisors/{advisor_id}/presence", "/advisors/{advisor_id}/logout",
    "/advisors/{advisor_id}/work", "/advisors/{advisor_id}/events",
    "/advisors/{advisor_id}/offers/{assignment_id}/accept", "/advisors/{advisor_id}/offers/{assignment_id}/reject",
    "/advisors/{advisor_id}/contacts/{contact_id}/transfer", "/advisors/{advisor_id}/contacts/{contact_id}/complete",
    "/advisors/{advisor_id}/contacts/{contact_id}/context", "/advisors/{advisor_id}/contacts/{contact_id}/suggestions",
    "/advisors/{advisor_id}/contacts/{contact_id}/nba",
})


async def shutdown(app: web.Application) -> None:
    """End every live stream, so that the server stops without waiting for desks to hang up."""
    feed = app[FEED]
    if feed is not None:
        feed.end_streams()


async def close(app: web.Application) -> None:
    feed, publisher = app[FEED], app[PUBLISHER]
    if feed is not None:
        await feed.close()
    if publisher is not None:
        with contextlib.suppress(Exception):
            await publisher.stop()
