"""Issue 18 on the real embedded broker: a contact id reused by another customer is routed (not silently
stuck), a contact the router cannot take is visible, and a CSAT survey redelivered after an identity merge
is counted once."""

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

from cxstream.schemas import (
    AdvisorEvent,
    Assignment,
    ContactRequest,
    Identifiers,
    InteractionEvent,
    OutcomeEvent,
    RoutingEvent,
)
from cxstream.schemas.routing import contact_key
from cxstream.streams import topics as t
from tests.integration.conftest import API_KEY, RunningEngine
from tests.integration.helpers import consume_until, produce, wait_for

pytestmark = pytest.mark.integration

_assignment = msgspec.json.Decoder(Assignment).decode
_routing_event = msgspec.json.Decoder(RoutingEvent).decode


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def get(engine: RunningEngine, path: str, **query: str) -> tuple[int, Any]:
    url = engine.http + path + ("?" + urllib.parse.urlencode(query) if query else "")
    req = urllib.request.Request(url, headers={"X-API-Key": API_KEY})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if resp.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def send(engine: RunningEngine, topic: str, *records: tuple[bytes, Any]) -> None:
    asyncio.run(produce(engine.broker, engine.topic(topic), list(records)))


def assignments(engine: RunningEngine, group: str, n: int) -> list[Assignment]:
    got = asyncio.run(consume_until(
        engine.broker, engine.topic(t.ASSIGNMENTS.name), lambda vs: sum(a.routing_group == group for a in vs) >= n,
        _assignment, timeout=90,
    ))
    return [a for a in got if a.routing_group == group]


def routing_events(engine: RunningEngine, group: str, done: Any) -> list[RoutingEvent]:
    got = asyncio.run(consume_until(
        engine.broker, engine.topic(t.ROUTING_EVENTS.name), lambda vs: done([e for e in vs if e.routing_group == group]),
        _routing_event, timeout=90,
    ))
    return [e for e in got if e.routing_group == group]


def context_by(engine: RunningEngine, **identifier: str) -> dict[str, Any] | None:
    status, body = get(engine, "/customers/context", **identifier)
    return body if status == 200 else None


def test_a_reused_contact_id_of_another_customer_is_routed_and_a_refused_one_is_visible(engine: RunningEngine) -> None:
    group, chat = uid("g"), "c-u1"
    now = time.time()
    advisors = [uid("adv") for _ in range(4)]
    send(engine, t.ADVISOR_EVENTS.name, *[
        (a.encode(), AdvisorEvent(event_id=uid("login"), occurred_at=now, advisor_id=a, kind="login", routing_group=group,
                                  presence="available", capacity={"chat": 1}))
        for a in advisors
    ])
    cust_a = Identifiers(email=f"{uid('a')}@example.com", phone="+441632960" + str(uuid.uuid4().int % 900 + 100))
    cust_b = Identifiers(email=f"{uid('b')}@example.com", phone="+441632961" + str(uuid.uuid4().int % 900 + 100))

    def opened(who: Identifiers, at: float) -> tuple[bytes, InteractionEvent]:
        ev = InteractionEvent(event_id=uid("open"), occurred_at=at, channel="chat", kind="contact_opened", customer=who,
                              contact_id=chat, needs_advisor=True, routing_group=group)
        return ev.event_id.encode(), ev

    # customer A opens chat c-u1; it is assigned and accepted
    send(engine, t.INTERACTIONS.name, opened(cust_a, now + 0.1))
    [a] = assignments(engine, group, 1)
    send(engine, t.ADVISOR_EVENTS.name, (a.advisor_id.encode(), AdvisorEvent(
        event_id=uid("acc"), occurred_at=now + 0.2, advisor_id=a.advisor_id, kind="offer_accepted", routing_group=group,
        contact_id=chat, assignment_id=a.assignment_id, contact_key=a.contact_key)))
    # later customer B, another email and phone, opens a chat with the same id; three advisors are free
    send(engine, t.INTERACTIONS.name, opened(cust_b, now + 1.0))
    got = assignments(engine, group, 2)
    [b] = [x for x in got if x.customer_id != a.customer_id]
    assert (b.contact_id, b.advisor_id != a.advisor_id) == (chat, True)
    assert (a.contact_key, b.contact_key) == (contact_key(a.customer_id, chat), contact_key(b.customer_id, chat))
    ctx_b = wait_for(lambda: (lambda c: c if c and c["open_contacts"].get(chat, {}).get("state") == "assigned" else None)(
        context_by(engine, email=cust_b.email or "")), timeout=60)
    assert ctx_b["customer_id"] == b.customer_id and ctx_b["open_contacts"][chat]["advisor_id"] == b.advisor_id
    ctx_a = context_by(engine, email=cust_a.email or "")
    assert ctx_a is not None and ctx_a["open_contacts"][chat]["advisor_id"] == a.advisor_id

    # B hangs up before accepting: the abandon reaches B's contact only (its key); A's stays with its advisor
    gone = InteractionEvent(event_id=uid("ab"), occurred_at=now + 2.0, channel="chat", kind="contact_abandoned",
                            customer=cust_b, contact_id=chat, routing_group=group)
    send(engine, t.INTERACTIONS.name, (gone.event_id.encode(), gone))
    evs = routing_events(engine, group, lambda es: any(e.kind == "abandoned" and e.customer_id == b.customer_id for e in es))
    ends = [e for e in evs if e.kind in ("completed", "abandoned")]
    assert [(e.customer_id, e.contact_key) for e in ends] == [(b.customer_id, b.contact_key)]

    # a producer reusing A's key for another customer: the router cannot take it, and says so
    bad = ContactRequest(event_id=uid("req"), contact_id=chat, customer_id=uid("C"), routing_group=group, channel="chat",
                         opened_at=now + 3.0, contact_key=a.contact_key)
    send(engine, t.ROUTING.name, (group.encode(), bad))
    evs = routing_events(engine, group, lambda es: any(e.kind == "rejected" for e in es))
    [rej] = [e for e in evs if e.kind == "rejected"]
    assert (rej.detail, rej.customer_id, rej.contact_key) == ("contact_key_in_use", bad.customer_id, a.contact_key)

    def counted() -> Any:
        status, q = get(engine, f"/queues/{group}")
        return q if status == 200 and q["total"]["rejected"] == 1 else None

    q = wait_for(counted, timeout=60)
    assert q["total"]["answered"] == 1 and q["total"]["offered"] == 2
    status, text = get(engine, "/metrics")
    assert status == 200 and b'cx_routing_events_total{kind="rejected"}' in text


def test_a_csat_redelivered_after_an_identity_merge_is_counted_once(engine: RunningEngine) -> None:
    """Two customers each answer a survey; the first is busy (its ring of recent event ids is full); they are
    found to be one person (merge); both surveys are delivered again: still two answers, mean 3."""
    email = f"{uid('x')}@example.com"
    phone = "+441632962" + str(uuid.uuid4().int % 900 + 100)
    now = time.time()
    s1 = OutcomeEvent(event_id=uid("csat"), occurred_at=now, customer=Identifiers(email=email), kind="csat", value=2)
    s2 = OutcomeEvent(event_id=uid("csat"), occurred_at=now + 0.1, customer=Identifiers(phone=phone), kind="csat", value=4)
    send(engine, t.OUTCOMES.name, (b"x", s1), (b"y", s2))
    wait_for(lambda: (context_by(engine, email=email) or {}).get("csat_count") == 1, timeout=60)
    wait_for(lambda: (context_by(engine, phone=phone) or {}).get("csat_count") == 1, timeout=60)
    # the first customer is busy: more messages than its ring of recent event ids holds (64)
    chatter = [InteractionEvent(event_id=uid("m"), occurred_at=now + 0.2 + i * 0.001, channel="chat", kind="message",
                                customer=Identifiers(email=email), text=f"message {i}") for i in range(70)]
    send(engine, t.INTERACTIONS.name, *[(b"x", m) for m in chatter])
    wait_for(lambda: (context_by(engine, email=email) or {}).get("interactions_total", 0) >= 70, timeout=90)
    # one person: a message carrying both identifiers merges the two customers
    link = InteractionEvent(event_id=uid("msg"), occurred_at=now + 1.0, channel="chat", kind="message",
                            customer=Identifiers(email=email, phone=phone), text="it's me")
    send(engine, t.INTERACTIONS.name, (b"z", link))
    merged = wait_for(lambda: (lambda c: c if c and c["merged_from"] and c["csat_count"] == 2 else None)(
        context_by(engine, email=email)), timeout=60)
    assert merged["csat_avg"] == 3.0
    # both surveys delivered again (at-least-once), then a marker event: both now resolve to the survivor
    marker = InteractionEvent(event_id=uid("msg"), occurred_at=now + 2.0, channel="chat", kind="message",
                              customer=Identifiers(phone=phone), text="marker")
    send(engine, t.OUTCOMES.name, (b"x", s1), (b"y", s2))
    send(engine, t.INTERACTIONS.name, (b"z", marker))
    after = wait_for(lambda: (lambda c: c if c and any(r["event_id"] == marker.event_id for r in c["recent"]) else None)(
        context_by(engine, phone=phone)), timeout=60)
    assert (after["customer_id"], after["csat_count"], after["csat_avg"]) == (merged["customer_id"], 2, 3.0)
    assert sorted(s["event_id"] for s in after["surveys"]) == sorted([s1.event_id, s2.event_id])
