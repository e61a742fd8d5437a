"""The advisor desktop's HTTP API on a real engine, broker and Redis: key scoping, refusals, and the events it publishes.

The engine runs against the session's broker and Redis through ``CX_BROKER_URL`` and
``CX_REDIS_URL`` (as it would against any Kafka), so its API processes read offers and
publish desk actions on that broker.  Each test works in a routing group of its own.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import msgspec
import pytest

from cxstream.schemas import AdvisorEvent, InteractionEvent
from cxstream.streams import topics as t
from tests.integration.conftest import API_KEY, RunningEngine
from tests.integration.helpers import read_to_end, wait_for

pytestmark = pytest.mark.integration


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def call(base: str, path: str, method: str = "GET", body: Any = None, key: str | None = API_KEY, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def desk_key(engine: RunningEngine, advisor: str) -> str:
    status, body = call(engine.http, f"/advisors/{advisor}/key", "POST")
    assert status == 200, body
    return str(body["key"])


def offer(engine: RunningEngine, advisor: str, key: str, contact_id: str) -> dict[str, Any]:
    def offered() -> Any:
        _, body = call(engine.http, f"/advisors/{advisor}/work", key=key)
        return next((w for w in body.get("work", []) if w["contact_id"] == contact_id and w["status"] == "offered"), None)

    found: dict[str, Any] = wait_for(offered, timeout=30)
    return found


def chat(engine: RunningEngine, group: str, email: str, text: str) -> str:
    status, body = call(engine.http, "/chat/messages", "POST", {"email": email, "text": text, "routing_group": group})
    assert status == 202, body
    return str(body["contact_id"])


def test_a_desk_key_opens_only_its_own_advisors_routes(engine: RunningEngine) -> None:
    ann, bob = uid("ann"), uid("bob")
    key = desk_key(engine, ann)
    assert key.startswith("cxa_") and key != desk_key(engine, bob)
    assert call(engine.http, f"/advisors/{ann}/work", key=key)[0] == 200
    assert call(engine.http, f"/advisors/{ann}/work", key=None)[0] == 401
    assert call(engine.http, f"/advisors/{ann}/work", key="wrong")[0] == 401
    status, body = call(engine.http, f"/advisors/{bob}/presence", "POST", {"presence": "away"}, key=key)
    assert (status, body["error"]) == (403, "forbidden") and bob in body["detail"]
    for path, method in [("/queues", "GET"), ("/wallboard/data", "GET"), (f"/advisors/{ann}/key", "POST"), ("/customers/context?email=a@b.co", "GET")]:
        status, body = call(engine.http, path, method, key=key)
        assert status == 403, (path, body)
    assert call(engine.http, f"/advisors/{bob}/work")[0] == 200  # the API key opens every advisor's routes
    # the pages and the OpenAPI document need no key; the document names the new routes
    status, doc = call(engine.http, "/openapi.json", key=None)
    assert status == 200 and "/advisors/{advisor_id}/contacts/{contact_id}/complete" in doc["paths"]
    assert "CompleteBody" in doc["components"]["schemas"]


@pytest.mark.parametrize(
    ("path", "body", "raw", "error", "says"),
    [
        ("/advisors/{a}/login", {"skills": {"billing": 9}}, None, "invalid_body", "skills"),
        ("/advisors/{a}/login", {"capacity": {"fax": 1}}, None, "invalid_body", "capacity"),
        ("/advisors/{a}/login", {"colour": "red"}, None, "invalid_body", "colour"),
        ("/advisors/{a}/presence", {}, None, "invalid_body", "presence"),
        ("/advisors/{a}/presence", {"presence": "asleep"}, None, "invalid_body", "presence"),
        ("/advisors/{a}/presence", None, b"{not json", "not_json", "JSON"),
        ("/advisors/{a}/contacts/k1/transfer", {}, None, "invalid_body", "to_advisor_id"),
        ("/advisors/{a}/contacts/k1/complete", {"intent": "billing"}, None, "invalid_body", "resolved"),
        ("/advisors/{a}/contacts/k1/complete", {"resolved": True}, None, "unknown_contact", "k1"),
        ("/advisors/{a}/offers/as-nope/accept", None, None, "unknown_offer", "as-nope"),
        ("/advisors/bad%20id/login", {}, None, "bad_advisor_id", "advisor ids"),
        ("/chat/messages", {"text": "hi"}, None, "no_identifier", "email or phone"),
        ("/chat/messages", {"text": "hi", "email": "not-an-email"}, None, "bad_identifier", "email"),
        ("/chat/messages", {"email": "a@example.org"}, None, "invalid_body", "text"),
    ],
)
def test_bad_input_is_a_4xx_that_says_what_was_wrong(engine: RunningEngine, path: str, body: Any, raw: bytes | None, error: str, says: str) -> None:
    status, answer = call(engine.http, path.format(a=uid("adv")), "POST", body, raw=raw)
    assert 400 <= status < 500 and answer["error"] == error and says in answer["detail"], (status, answer)


def test_each_desk_action_publishes_the_advisor_event_the_router_understands(engine: RunningEngine) -> None:
    group, advisor = uid("g"), uid("tess")
    key = desk_key(engine, advisor)
    ok = lambda r: r[0] == 202 or pytest.fail(str(r))  # noqa: E731

    ok(call(engine.http, f"/advisors/{advisor}/login", "POST", {"routing_group": group, "skills": {"billing": 4}, "languages": ["en"], "capacity": {"chat": 3}}, key=key))
    ok(call(engine.http, f"/advisors/{advisor}/presence", "POST", {"routing_group": group, "presence": "busy"}, key=key))
    ok(call(engine.http, f"/advisors/{advisor}/presence", "POST", {"routing_group": group, "presence": "available"}, key=key))

    first = chat(engine, group, f"{uid('c')}@example.org", "I was charged twice")
    a1 = offer(engine, advisor, key, first)
    assert a1["routing_group"] == group and a1["expires_at"] - a1["offered_at"] == pytest.approx(30.0)
    status, body = call(engine.http, f"/advisors/{advisor}/contacts/{first}/complete", "POST", {"resolved": True}, key=key)
    assert (status, body["error"]) == (409, "not_accepted")
    ok(call(engine.http, f"/advisors/{advisor}/offers/{a1['assignment_id']}/accept", "POST", key=key))
    assert call(engine.http, f"/advisors/{advisor}/offers/{a1['assignment_id']}/accept", "POST", key=key)[0] == 409
    status, ctx = call(engine.http, f"/advisors/{advisor}/contacts/{first}/context", key=key)
    assert status == 200 and ctx["customer_id"] == a1["customer_id"]
    ok(call(engine.http, f"/advisors/{advisor}/contacts/{first}/complete", "POST",
            {"resolved": False, "intent": "billing", "code": "refund", "notes": "refund promised"}, key=key))

    second = chat(engine, group, f"{uid('c')}@example.org", "my card does not work")
    a2 = offer(engine, advisor, key, second)
    ok(call(engine.http, f"/advisors/{advisor}/offers/{a2['assignment_id']}/reject", "POST", key=key))

    third = chat(engine, group, f"{uid('c')}@example.org", "cancel my plan")
    a3 = offer(engine, advisor, key, third)
    ok(call(engine.http, f"/advisors/{advisor}/offers/{a3['assignment_id']}/accept", "POST", key=key))
    wait_for(lambda: any(w["status"] == "active" for w in call(engine.http, f"/advisors/{advisor}/work", key=key)[1]["work"]), timeout=10)
    ok(call(engine.http, f"/advisors/{advisor}/contacts/{third}/transfer", "POST", {"to_skills": ["retention"]}, key=key))
    ok(call(engine.http, f"/advisors/{advisor}/logout", "POST", {"routing_group": group}, key=key))

    decode = msgspec.json.Decoder(AdvisorEvent).decode
    mine: list[AdvisorEvent] = []

    def published() -> bool:
        mine[:] = [e for raw in asyncio.run(read_to_end(engine.broker, engine.topic(t.ADVISOR_EVENTS.name))) if (e := decode(raw)).advisor_id == advisor]
        return len(mine) >= 9

    wait_for(published, timeout=20)
    assert [e.kind for e in mine] == [
        "login", "presence", "presence", "offer_accepted", "contact_completed", "offer_rejected", "offer_accepted",
        "contact_transferred", "logout",
    ]
    login, busy = mine[0], mine[1]
    assert (login.routing_group, login.presence, login.skills, login.capacity) == (group, "available", {"billing": 4}, {"chat": 3})
    assert busy.presence == "busy"
    accept1, done, reject, _, transfer = mine[3], mine[4], mine[5], mine[6], mine[7]
    assert (accept1.contact_id, accept1.assignment_id) == (first, a1["assignment_id"])
    assert done.disposition is not None and (done.disposition.intent, done.disposition.resolved, done.disposition.code) == ("billing", False, "refund")
    assert (reject.contact_id, reject.assignment_id) == (second, a2["assignment_id"])
    assert (transfer.contact_id, transfer.transfer_to_skills) == (third, ["retention"])
    assert all(e.routing_group == group for e in mine)

    def interaction(raw: bytes) -> InteractionEvent | None:
        try:
            return msgspec.json.decode(raw, type=InteractionEvent)
        except msgspec.DecodeError:  # other tests' deliberately bad input
            return None

    closed = [
        e for raw in asyncio.run(read_to_end(engine.broker, engine.topic(t.INTERACTIONS.name)))
        if (e := interaction(raw)) is not None and e.contact_id == first and e.kind == "contact_closed"
    ]
    assert len(closed) == 1 and closed[0].text == "refund promised" and closed[0].attributes["resolved"] is False

    # the router took every action: the queue statistics of the group count them
    def counted() -> Any:
        status, g = call(engine.http, f"/queues/{group}")
        tot = g.get("total", {}) if status == 200 else {}
        return tot if tot.get("completed") == 1 and tot.get("offers_rejected") == 1 and tot.get("transfers") == 1 else None

    wait_for(counted, timeout=20)
