"""Languages and health on the real broker: a French chat is detected, routed to the advisor who serves
French (not the English one idle longer), its sentiment is "unknown"; the health score is on the context API."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import msgspec
import pytest

from cxstream.schemas import AdvisorEvent, Assignment, Identifiers, InteractionEvent, OutcomeEvent
from cxstream.streams import topics as t
from tests.integration.conftest import API_KEY, RunningEngine
from tests.integration.helpers import consume_until, produce, wait_for

pytestmark = pytest.mark.integration

FRENCH = "Bonjour, ma carte bancaire a été débitée deux fois ce mois-ci et personne ne me répond. C'est inadmissible !"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def get(engine: RunningEngine, path: str) -> tuple[int, Any]:
    req = urllib.request.Request(engine.http + path, headers={"X-API-Key": API_KEY})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def metrics_text(engine: RunningEngine) -> str:
    req = urllib.request.Request(engine.http + "/metrics", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return str(resp.read().decode())


def test_a_french_chat_is_detected_routed_in_french_with_sentiment_unknown_and_health_on_the_api(engine: RunningEngine) -> None:
    group, customer, contact = uid("g"), uid("C"), uid("chat")
    english, french = uid("anna-en"), uid("bruno-fr")
    now = time.time()
    logins = [
        AdvisorEvent(event_id=uid("login"), occurred_at=now - 60, advisor_id=english, kind="login", routing_group=group,
                     presence="available", languages=["en"], capacity={"chat": 2}),  # idle longest: first pick without languages
        AdvisorEvent(event_id=uid("login"), occurred_at=now - 1, advisor_id=french, kind="login", routing_group=group,
                     presence="available", languages=["fr", "en"], capacity={"chat": 2}),
    ]
    asyncio.run(produce(engine.broker, engine.topic(t.ADVISOR_EVENTS.name), [(a.advisor_id.encode(), a) for a in logins]))
    ids = Identifiers(customer_id=customer)
    profile = OutcomeEvent(event_id=uid("o"), occurred_at=now - 0.5, customer=ids, kind="profile",
                           attributes={"tenure_months": 3, "contract": "Month-to-month", "payment_method": "Electronic check"})
    asyncio.run(produce(engine.broker, engine.topic(t.OUTCOMES.name), [(customer.encode(), profile)]))
    # the channel sends no language tag: the detector must find it in the text
    opened = InteractionEvent(event_id=uid("open"), occurred_at=now, channel="chat", kind="contact_opened", customer=ids,
                              contact_id=contact, needs_advisor=True, routing_group=group, text=FRENCH)
    message = InteractionEvent(event_id=uid("msg"), occurred_at=now + 0.1, channel="chat", kind="message", customer=ids,
                               contact_id=contact, routing_group=group, text="Je suis vraiment très déçu par votre service.")
    asyncio.run(produce(engine.broker, engine.topic(t.INTERACTIONS.name), [(customer.encode(), opened), (customer.encode(), message)]))

    dec = msgspec.json.Decoder(Assignment).decode
    got = asyncio.run(consume_until(engine.broker, engine.topic(t.ASSIGNMENTS.name),
                                    lambda vs: any(a.contact_id == contact for a in vs), dec, timeout=90))
    [a] = [x for x in got if x.contact_id == contact]
    assert a.advisor_id == french, a
    assert a.language == "fr" and a.reasons["language_match"] == 1.0 and "language_fallback" not in a.reasons

    def context() -> Any:
        status, body = get(engine, f"/customers/{customer}/context")
        return body if status == 200 and len(body.get("recent", [])) >= 3 and body.get("health") is not None else None

    ctx = wait_for(context, timeout=60)
    msg = next(r for r in ctx["recent"] if r["kind"] == "message")
    assert (msg["language"], msg["language_detected"], msg["sentiment"], msg["sentiment_label"]) == ("fr", "fr", None, "unknown")
    assert ctx["language"] == "fr" and ctx["preferred_language"] == "fr" and ctx["sentiment_recent"] == []
    # month-to-month, 3 months, electronic check: below the base, and the factors say why
    assert ctx["health"] < 50 and ctx["health_band"] in ("watch", "at_risk", "critical")
    factors = {f["factor"]: f["points"] for f in ctx["health_factors"]}
    assert factors["payment_method"] < 0 and factors["tenure_months"] < 0, ctx["health_factors"]

    # Prometheus: the customer's health was observed once for the contact's routing group; French was counted
    line = f'cx_customer_health_count{{routing_group="{group}"}} 1.0'
    text = wait_for(lambda: (lambda m: m if line in m else None)(metrics_text(engine)), timeout=30)
    assert re.search(r'^cx_message_languages_total\{language="fr"\} [1-9]', text, re.M), "no French message counted"
