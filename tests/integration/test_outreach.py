"""Proactive outreach through the real engine: an abandoned call becomes a call-back offer, once, with consent."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from cxstream.schemas import Identifiers, InteractionEvent, OutcomeEvent, OutreachEvent
from cxstream.streams import topics as t
from tests.integration.conftest import RunningEngine
from tests.integration.helpers import consume_until, produce, read_to_end
from tests.integration.test_pipeline import uid

pytestmark = pytest.mark.integration


def abandoned_call(cust: Identifiers, group: str) -> list[tuple[bytes, InteractionEvent]]:
    k, now = uid("k"), time.time()
    key = (cust.customer_id or "").encode()
    return [
        (key, InteractionEvent(event_id=uid("o"), occurred_at=now, channel="voice", kind="contact_opened", customer=cust,
                               contact_id=k, needs_advisor=True, routing_group=group)),
        (key, InteractionEvent(event_id=uid("a"), occurred_at=now + 0.5, channel="voice", kind="contact_abandoned",
                               customer=cust, contact_id=k, routing_group=group)),
    ]


def test_abandoned_call_gets_a_call_back_offer_on_a_consented_channel(engine: RunningEngine) -> None:
    group = uid("g")  # nobody is logged in: the call can only be abandoned
    consenting, silent = Identifiers(customer_id=uid("C")), Identifiers(customer_id=uid("C"))
    consent = OutcomeEvent(event_id=uid("c"), occurred_at=time.time() - 5, customer=consenting, kind="consent",
                           attributes={"sms": True})
    asyncio.run(produce(engine.broker, engine.topic(t.OUTCOMES.name), [(b"c", consent)]))
    time.sleep(1.0)
    asyncio.run(produce(engine.broker, engine.topic(t.INTERACTIONS.name),
                        abandoned_call(consenting, group) + abandoned_call(silent, group)))

    decode = msgspec.json.Decoder(OutreachEvent).decode
    got = asyncio.run(consume_until(
        engine.broker, engine.topic(t.OUTREACH.name),
        lambda vs: any(v.customer_id == consenting.customer_id for v in vs), decode,
    ))
    mine = [v for v in got if v.customer_id == consenting.customer_id]
    assert len(mine) == 1, "one offer, though the abandon reached the context twice (channel and router)"
    offer = mine[0]
    assert (offer.reason, offer.channel) == ("abandoned_contact", "sms")
    assert offer.expires_at > offer.created_at and offer.outreach_id
    time.sleep(1.0)
    everything = [decode(v) for v in asyncio.run(read_to_end(engine.broker, engine.topic(t.OUTREACH.name)))]
    assert offer in everything
    assert not [v for v in everything if v.customer_id == silent.customer_id], "no consent, no outreach"
