"""End to end through the real topics: events in, context in Redis, assignments out, bad input dead-lettered."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import msgspec
import psutil
import pytest

from cxstream.schemas import AdvisorEvent, Assignment, DeadLetter, Identifiers, InteractionEvent
from cxstream.streams import topics as t
from tests.integration.conftest import API_KEY, RunningEngine
from tests.integration.helpers import consume_until, produce, wait_for

pytestmark = pytest.mark.integration


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def get(engine: RunningEngine, path: str, key: str | None = API_KEY) -> tuple[int, Any]:
    req = urllib.request.Request(engine.http + path, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if resp.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def login(advisor: str, group: str, at: float, **kw: Any) -> tuple[bytes, AdvisorEvent]:
    ev = AdvisorEvent(
        event_id=uid("login"), occurred_at=at, advisor_id=advisor, kind="login", routing_group=group,
        presence="available", **kw,
    )
    return advisor.encode(), ev


def opened(customer: Identifiers, contact: str, group: str, at: float, channel: str = "voice") -> InteractionEvent:
    return InteractionEvent(
        event_id=uid("open"), occurred_at=at, channel=channel, kind="contact_opened", customer=customer,
        contact_id=contact, needs_advisor=True, routing_group=group,
    )


def assignments_for(engine: RunningEngine, group: str, n: int) -> list[Assignment]:
    dec = msgspec.json.Decoder(Assignment).decode
    got = asyncio.run(
        consume_until(
            engine.broker, engine.topic(t.ASSIGNMENTS.name),
            lambda vs: len([a for a in vs if a.routing_group == group]) >= n, dec,
        )
    )
    return [a for a in got if a.routing_group == group]


def test_interaction_in_context_in_redis_assignment_out(engine: RunningEngine) -> None:
    group, advisor, customer_id, contact = uid("g"), uid("adv"), uid("C"), uid("k")
    now = time.time()
    asyncio.run(produce(engine.broker, engine.topic(t.ADVISOR_EVENTS.name), [login(advisor, group, now, capacity={"voice": 1})]))
    ids = Identifiers(customer_id=customer_id, email="Jane.Doe@Example.com")
    message = InteractionEvent(
        event_id=uid("msg"), occurred_at=now + 0.2, channel="voice", kind="message", customer=ids,
        contact_id=contact, text="my card 4111 1111 1111 1111 was charged twice, mail jane@example.com",
    )
    asyncio.run(
        produce(engine.broker, engine.topic(t.INTERACTIONS.name), [(b"k", opened(ids, contact, group, now + 0.1)), (b"k", message)])
    )

    (a,) = assignments_for(engine, group, 1)
    assert (a.advisor_id, a.contact_id, a.customer_id, a.channel) == (advisor, contact, customer_id, "voice")
    assert a.waited_s >= 0 and a.reasons, "an assignment says why this advisor"

    def context() -> dict[str, Any] | None:
        status, body = get(engine, f"/customers/{customer_id}/context")
        return body if status == 200 and body.get("last_advisor_id") == advisor and len(body["recent"]) == 2 else None

    ctx = wait_for(context)
    assert ctx["customer_id"] == customer_id
    assert ctx["identifiers"]["email"] == ["jane.doe@example.com"]
    assert ctx["open_contacts"][contact]["state"] == "assigned"
    text = ctx["recent"][0]["text"]
    assert "4111" not in text and "jane@example.com" not in text and "[card]" in text and "[email]" in text


def test_contact_waits_in_queue_until_an_advisor_frees_up(engine: RunningEngine) -> None:
    group, advisor = uid("g"), uid("adv")
    now = time.time()
    asyncio.run(produce(engine.broker, engine.topic(t.ADVISOR_EVENTS.name), [login(advisor, group, now, capacity={"voice": 1})]))
    c1, c2 = Identifiers(customer_id=uid("C")), Identifiers(customer_id=uid("C"))
    k1, k2 = uid("k"), uid("k")
    asyncio.run(
        produce(
            engine.broker, engine.topic(t.INTERACTIONS.name),
            [(b"a", opened(c1, k1, group, now + 0.1)), (b"b", opened(c2, k2, group, now + 0.2))],
        )
    )
    (first,) = assignments_for(engine, group, 1)
    # The two customers' requests reach the router through different partitions: either may come first.
    assert first.contact_id in (k1, k2)
    other = k2 if first.contact_id == k1 else k1
    time.sleep(1.0)
    assert len(assignments_for(engine, group, 1)) == 1, "the advisor has one voice slot: the second call waits"
    done = AdvisorEvent(
        event_id=uid("done"), occurred_at=time.time(), advisor_id=advisor, kind="contact_completed",
        routing_group=group, contact_id=first.contact_id, assignment_id=first.assignment_id,
    )
    accept = AdvisorEvent(
        event_id=uid("acc"), occurred_at=time.time(), advisor_id=advisor, kind="offer_accepted",
        routing_group=group, contact_id=first.contact_id, assignment_id=first.assignment_id,
    )
    asyncio.run(produce(engine.broker, engine.topic(t.ADVISOR_EVENTS.name), [(advisor.encode(), accept), (advisor.encode(), done)]))
    _, second = assignments_for(engine, group, 2)
    assert (second.contact_id, second.advisor_id) == (other, advisor)
    assert second.waited_s > 0.5


def test_duplicate_event_is_applied_once(engine: RunningEngine) -> None:
    group, advisor, customer_id = uid("g"), uid("adv"), uid("C")
    now = time.time()
    asyncio.run(produce(engine.broker, engine.topic(t.ADVISOR_EVENTS.name), [login(advisor, group, now, capacity={"chat": 3})]))
    ev = opened(Identifiers(customer_id=customer_id), uid("k"), group, now + 0.1, channel="chat")
    asyncio.run(produce(engine.broker, engine.topic(t.INTERACTIONS.name), [(b"x", ev), (b"x", ev)]))
    assignments_for(engine, group, 1)
    ctx = wait_for(lambda: (lambda r: r[1] if r[0] == 200 else None)(get(engine, f"/customers/{customer_id}/context")))
    time.sleep(1.0)
    _, ctx = get(engine, f"/customers/{customer_id}/context")
    assert ctx["interactions_total"] == 1
    assert len(assignments_for(engine, group, 1)) == 1


BAD_INPUTS = [
    (b"not json at all {", "not_json"),
    (b'{"event_id": "x", "occurred_at": 1, "channel": "fax", "kind": "message", "customer": {"email": "a@b.co"}}', "invalid"),
    # (an interaction with no identifier at all is anonymous, not bad: see test_identity.py)
    (b'{"event_id": "x", "occurred_at": 1, "channel": "chat", "kind": "message", "customer": {"email": "not-an-email"}}', "bad_identifier"),
    (b'{"event_id": "x", "occurred_at": 1, "channel": "chat", "kind": "message", "customer": {"phone": "000000"}}', "bad_identifier"),
    (b'{"event_id": "x", "occurred_at": 1, "channel": "chat", "kind": "message", "customer": {"email": "a@b.co"}, "text": "' + b"x" * 70000 + b'"}', "too_large"),
]


def test_malformed_events_go_to_the_dead_letter_topic_with_reason(engine: RunningEngine) -> None:
    marker = uid("bad").encode()
    asyncio.run(produce(engine.broker, engine.topic(t.INTERACTIONS.name), [(marker, raw) for raw, _ in BAD_INPUTS]))
    dec = msgspec.json.Decoder(DeadLetter).decode
    letters = asyncio.run(
        consume_until(
            engine.broker, engine.topic(t.DEAD_LETTER.name),
            lambda vs: len([d for d in vs if d.key == marker.decode()]) >= len(BAD_INPUTS), dec,
        )
    )
    mine = sorted((d for d in letters if d.key == marker.decode()), key=lambda d: d.offset)
    assert [d.error_type for d in mine] == [kind for _, kind in BAD_INPUTS]
    for d, (raw, _) in zip(mine, BAD_INPUTS, strict=True):
        assert d.source_topic == engine.topic(t.INTERACTIONS.name)
        assert d.agent == "ingest" and d.reason and d.offset >= 0 and d.partition >= 0
        if d.raw_truncated:  # a dead letter keeps the first CX_DEAD_LETTER_MAX_RAW_BYTES of the input, and its size
            assert raw.decode().startswith(d.raw) and d.raw_bytes == len(raw) and d.error_type == "too_large"
        else:
            assert d.raw == raw.decode()
    assert "fax" in mine[1].reason and "channel" in mine[1].reason

    # the stream goes on: a good event after the bad ones is processed
    customer_id = uid("C")
    good = InteractionEvent(event_id=uid("ok"), occurred_at=time.time(), channel="web", kind="page_view", customer=Identifiers(customer_id=customer_id))
    asyncio.run(produce(engine.broker, engine.topic(t.INTERACTIONS.name), [(marker, good)]))
    wait_for(lambda: get(engine, f"/customers/{customer_id}/context")[0] == 200)


def test_http_errors_say_what_was_wrong(engine: RunningEngine) -> None:
    status, body = get(engine, "/customers/nobody-here/context")
    assert status == 404 and body["error"] == "unknown_customer"
    status, body = get(engine, "/customers/x/context", key="wrong")
    assert status == 401 and "API key" in body["detail"]
    status, body = get(engine, "/customers/x/context", key=None)
    assert status == 401
    status, body = get(engine, "/healthz", key=None)
    assert status == 200 and body["redis"] == "ok" and body["engine"] == "ok"
    status, body = get(engine, "/metrics")
    assert status == 200 and b"cx_events_in_total" in body


def test_engine_pointed_at_external_servers_starts_none_of_its_own(engine: RunningEngine) -> None:
    assert "embedded broker" not in engine.output() and "embedded redis" not in engine.output()
    # Its only children are its HTTP API processes (CX_HTTP_WORKERS, default 1) and its learner's
    # (CX_LEARNER_PROCESS, default 1), which start nothing themselves.
    children = psutil.Process(engine.proc.pid).children(recursive=True)
    commands = sorted(c.cmdline()[1:4] for c in children)
    assert commands == [["-m", "cxstream.cli", "learn"], ["-m", "cxstream.cli", "serve"]], f"the engine started processes: {commands}"
    assert all(c.ppid() == engine.proc.pid for c in children)
