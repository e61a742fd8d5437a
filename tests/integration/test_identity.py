"""One customer, every channel: identity resolution and the 360° context through the real engine."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import msgspec
import pytest

from cxstream.agents.ingest import anonymous_key
from cxstream.schemas import (
    AdvisorEvent,
    Assignment,
    CustomersMerged,
    Identifiers,
    IdentityOutput,
    InteractionEvent,
    LinkRefused,
)
from cxstream.streams import topics as t
from tests.integration.conftest import API_KEY, RunningEngine
from tests.integration.helpers import consume_until, produce, wait_for

pytestmark = pytest.mark.integration

_identity = msgspec.json.Decoder(IdentityOutput)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def get(engine: RunningEngine, path: str, **query: str) -> tuple[int, Any]:
    url = engine.http + path + ("?" + urllib.parse.urlencode(query) if query else "")
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {API_KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def send(engine: RunningEngine, *events: InteractionEvent) -> None:
    asyncio.run(produce(engine.broker, engine.topic(t.INTERACTIONS.name), [(e.event_id.encode(), e) for e in events]))


def interaction(at: float, channel: str, kind: str, contact: str, **kw: Any) -> InteractionEvent:
    return InteractionEvent(event_id=uid(kind), occurred_at=at, channel=channel, kind=kind, contact_id=contact, **kw)  # type: ignore[arg-type]


def identity_records(engine: RunningEngine, done: Any) -> list[Any]:
    return asyncio.run(consume_until(engine.broker, engine.topic(t.IDENTITY.name), done, _identity.decode))


def test_chat_then_call_then_email_reply_is_one_customer_with_one_context(engine: RunningEngine) -> None:
    n = uuid.uuid4().int % 10**5
    email, phone_national, phone = f"Jane.{n}@Example.org", f"07700 9{n:05d}", f"+4477009{n:05d}"
    group, advisor = uid("g"), uid("adv")
    now = time.time()
    asyncio.run(produce(engine.broker, engine.topic(t.ADVISOR_EVENTS.name), [(advisor.encode(), AdvisorEvent(
        event_id=uid("login"), occurred_at=now, advisor_id=advisor, kind="login", routing_group=group,
        presence="available", capacity={"chat": 2, "voice": 1},
    ))]))
    chat, call, mail = uid("chat"), uid("call"), uid("mail")
    # 1. web chat with an email address; the bot recognised the intent; an advisor takes it
    send(engine,
         interaction(now + 0.1, "chat", "contact_opened", chat, customer=Identifiers(email=email), needs_advisor=True, routing_group=group),
         interaction(now + 0.2, "chat", "message", chat, customer=Identifiers(email=email),
                     text=f"my card was charged twice, this is awful. call me on {phone_national}", attributes={"intent": "double_charge"}))
    wait_for(lambda: get(engine, "/customers/context", email=email)[1].get("last_advisor_id") == advisor)
    # 2. a call from a phone number nobody knows yet: a new customer, for now
    send(engine, interaction(now + 1, "voice", "contact_opened", call, customer=Identifiers(phone=phone_national)))
    status, first_view = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(get(engine, "/customers/context", phone=phone)))
    caller_id = first_view["customer_id"]
    jane_id = get(engine, "/customers/context", email=email)[1]["customer_id"]
    assert caller_id != jane_id
    # 3. the IVR verifies the caller's email: one person -> a merge into the first-seen customer
    send(engine, interaction(now + 2, "voice", "message", call, customer=Identifiers(phone=phone, email=email.upper()), text="verified"))

    def merged() -> dict[str, Any] | None:
        status, body = get(engine, "/customers/context", phone=phone_national)
        return body if status == 200 and body["customer_id"] == jane_id and call in body["open_contacts"] else None

    ctx = wait_for(merged)
    # the advisor who takes the call sees the chat, its intent, its sentiment and who served them last
    assert ctx["latest_intent"] == "double_charge" and ctx["last_advisor_id"] == advisor
    channels = {r["channel"] for r in ctx["recent"]}
    assert channels == {"chat", "voice"}
    chat_msg = next(r for r in ctx["recent"] if r["channel"] == "chat" and r["kind"] == "message")
    assert chat_msg["sentiment"] < -0.3 and "[phone]" in chat_msg["text"] and phone_national not in chat_msg["text"]
    assert set(ctx["open_by_channel"] if "open_by_channel" in ctx else {c["channel"] for c in ctx["open_contacts"].values()}) == {"chat", "voice"}
    assert sorted(ctx["identifiers"]) == ["email", "phone"] and ctx["merged_from"] == [caller_id]
    # 4. an email reply lands on the same context
    send(engine, interaction(now + 3, "email", "message", mail, customer=Identifiers(email=email), text="thanks, all sorted now!"))
    ctx = wait_for(lambda: (lambda b: b if b.get("last_channel") == "email" else None)(get(engine, f"/customers/{jane_id}/context")[1]))
    assert ctx["sentiment_last"] > 0.3 and ctx["interactions_total"] == 5
    assert ctx["channel_counts"] == {"chat": 2, "voice": 2, "email": 1}

    # every way in resolves to the same context: id, old id (alias), kind:value, any identifier notation
    for path, query in [
        (f"/customers/{caller_id}/context", {}),
        (f"/customers/email:{email.lower()}/context", {}),
        ("/customers/-/context", {"phone": phone}),
        ("/customers/context", {"email": f"  {email.upper()} "}),
    ]:
        status, body = get(engine, path, **query)
        assert status == 200 and body["customer_id"] == jane_id, (path, query, status, body)

    # the advisor finishes the chat; a second call from the same phone is routed with the history,
    # and the router knows who served them last
    dec = msgspec.json.Decoder(Assignment).decode
    got = asyncio.run(consume_until(engine.broker, engine.topic(t.ASSIGNMENTS.name), lambda vs: any(a.contact_id == chat for a in vs), dec))
    (chat_offer,) = [a for a in got if a.contact_id == chat]
    asyncio.run(produce(engine.broker, engine.topic(t.ADVISOR_EVENTS.name), [(advisor.encode(), AdvisorEvent(
        event_id=uid(kind), occurred_at=time.time(), advisor_id=advisor, kind=kind, routing_group=group,  # type: ignore[arg-type]
        contact_id=chat, assignment_id=chat_offer.assignment_id,
    )) for kind in ("offer_accepted", "contact_completed")]))
    call2 = uid("call")
    send(engine, interaction(now + 4, "voice", "contact_opened", call2, customer=Identifiers(phone=phone), needs_advisor=True, routing_group=group))
    got = asyncio.run(consume_until(engine.broker, engine.topic(t.ASSIGNMENTS.name), lambda vs: any(a.contact_id == call2 for a in vs), dec))
    (a,) = [a for a in got if a.contact_id == call2]
    assert a.customer_id == jane_id and a.intent == "double_charge"
    assert a.advisor_id == advisor and a.reasons["sticky"] > 0, a.reasons

    # the merge is an event of its own, and the identity log holds no identifier in clear
    records = identity_records(engine, lambda vs: any(isinstance(r, CustomersMerged) and r.survivor_id == jane_id for r in vs))
    (m,) = [r for r in records if isinstance(r, CustomersMerged) and r.survivor_id == jane_id]
    assert m.absorbed_id == caller_id and m.kind in ("email", "phone")
    raw = msgspec.json.encode(records)
    assert email.lower().encode() not in raw and phone.encode() not in raw


def test_malformed_or_unknown_identifiers_get_400_or_404_with_a_reason(engine: RunningEngine) -> None:
    for query, code, error in [
        ({"phone": "call me maybe"}, 400, "bad_identifier"),
        ({"email": "jane-at-example"}, 400, "bad_identifier"),
        ({"email": "null"}, 400, "bad_identifier"),
        ({"phone": "0000000000"}, 400, "bad_identifier"),
        ({"shoe_size": "42"}, 400, "unknown_identifier_kind"),
        ({"email": "a@b.co", "phone": "+447700900123"}, 400, "too_many_identifiers"),
        ({"email": f"{uid('nobody')}@example.org"}, 404, "unknown_customer"),
    ]:
        status, body = get(engine, "/customers/context", **query)
        assert (status, body["error"]) == (code, error), (query, body)
        assert body["detail"]
    assert get(engine, "/customers/phone:12/context")[0] == 400
    req = urllib.request.Request(engine.http + "/customers/context?email=a@b.co", headers={"X-API-Key": "wrong"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    exc.value.close()
    assert exc.value.code == 401


def test_shared_and_junk_identifiers_never_merge_customers_and_every_refusal_is_recorded(engine: RunningEngine) -> None:
    office = f"+44207946{uuid.uuid4().int % 10**4:04d}"
    crm = [uid("C") for _ in range(5)]
    now = time.time()
    send(engine, *[
        interaction(now + i * 0.01, "voice", "message", uid("k"), customer=Identifiers(customer_id=c, phone=office), text="hello")
        for i, c in enumerate(crm)
    ])
    junk_email = uid("j") + "@x.org"
    send(engine, interaction(now + 1, "chat", "message", uid("k"), customer=Identifiers(email=junk_email, phone="0000000", social_handle="null")))
    for c in crm:
        ctx = wait_for(lambda c=c: (lambda r: r[1] if r[0] == 200 else None)(get(engine, f"/customers/{c}/context")))
        assert ctx["customer_id"] == c and ctx["merged_from"] == [] and ctx["interactions_total"] == 1
    records = identity_records(engine, lambda vs: sum(isinstance(r, LinkRefused) and r.customer_id in crm for r in vs) >= 5)
    reasons = [r.reason for r in records if isinstance(r, LinkRefused) and r.customer_id in crm]
    # C2..C4 are refused as conflicting; the fourth customer quarantines the value; C5 meets a quarantined value
    assert reasons.count("conflicting_ids") == 3 and reasons.count("shared_value") == 2, reasons
    assert not any(isinstance(r, CustomersMerged) and r.survivor_id in crm for r in records)
    status, body = get(engine, "/customers/context", phone=office)
    assert status == 409 and body["error"] == "ambiguous_identifier"
    junk = identity_records(engine, lambda vs: sum(isinstance(r, LinkRefused) and r.reason == "blocked_value" for r in vs) >= 2)
    junk_ctx = wait_for(lambda: (lambda r: r[1] if r[0] == 200 else None)(get(engine, "/customers/context", email=junk_email)))
    assert {r.kind for r in junk if isinstance(r, LinkRefused) and r.customer_id == junk_ctx["customer_id"]} == {"phone", "social_handle"}


def test_anonymous_web_session_still_updates_its_context(engine: RunningEngine) -> None:
    session = uid("sess")
    views = [
        InteractionEvent(event_id=uid("pv"), occurred_at=time.time() + i, channel="web", kind="page_view", customer=Identifiers(),
                         attributes={"session_id": session, "page": f"/help/{i}"})
        for i in range(3)
    ]
    send(engine, *views)
    key = anonymous_key(views[0])
    ctx = wait_for(lambda: (lambda r: r[1] if r[0] == 200 and r[1]["interactions_total"] == 3 else None)(get(engine, f"/customers/{key}/context")))
    assert ctx["anonymous"] and ctx["journey_stage"] == "anonymous" and ctx["identifiers"] == {}
