"""Ingest: validate every input, normalise identifiers, and key it for the next stage.

* ``cx.interactions.v1`` and ``cx.outcomes.v1`` -> ``cx.customer-events.v1``, keyed by
  the customer the event belongs to.
* ``cx.advisor-events.v1`` -> ``cx.routing.v1``, keyed by routing group.

Anything that fails goes to ``cx.dead-letter.v1`` with its coordinates and the
reason; the stream goes on.  Nothing is dropped silently: duplicates are dropped
(and counted) downstream, where the per-customer and per-group state lives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faust
import msgspec

from cxstream.context.identity import InvalidIdentifier, customer_key, normalised
from cxstream.schemas import AdvisorEvent, Identifiers, InteractionEvent, OutcomeEvent
from cxstream.streams import metrics
from cxstream.streams.app import Topics
from cxstream.streams.codecs import InvalidInput, decode, encode
from cxstream.streams.deadletter import process_events
from cxstream.streams.settings import Settings


@dataclass(frozen=True)
class Routed:
    """Where a valid input goes next: (key, payload) on the next topic."""

    key: bytes
    value: bytes


def route_customer_event(raw: bytes | None, kind: type[InteractionEvent] | type[OutcomeEvent], max_bytes: int) -> Routed:
    """Validate a customer-facing input and key it by customer; raises :class:`InvalidInput`.

    >>> r = route_customer_event(b'{"event_id":"e1","occurred_at":1,"channel":"chat","kind":"message",'
    ...     b'"customer":{"email":"Jane@X.org"}}', InteractionEvent, 65536)
    >>> r.key
    b'email:jane@x.org'
    """
    ev = decode(raw, kind, max_bytes)
    try:
        ids = normalised(ev.customer)
    except InvalidIdentifier as exc:
        raise InvalidInput("bad_identifier", str(exc)) from exc
    key = customer_key(ids)
    if key is None:
        raise InvalidInput("no_identifier", "the event carries no usable customer identifier")
    # Downstream stages see normalised identifiers only.
    return Routed(key.encode(), encode(msgspec.structs.replace(ev, customer=Identifiers(**ids))))


def route_advisor_event(raw: bytes | None, max_bytes: int) -> Routed:
    """Validate an advisor event and key it by routing group; raises :class:`InvalidInput`."""
    ev = decode(raw, AdvisorEvent, max_bytes)
    return Routed(ev.routing_group.encode(), encode(ev))


def register(app: faust.App, topics: Topics, settings: Settings) -> None:
    """Declare the ingest agents on *app*."""

    def make_agent(source: faust.TopicT, target: faust.TopicT, route: Callable[[bytes | None], Routed], name: str) -> None:
        async def handle(event: faust.EventT) -> None:
            routed = route(event.value)
            metrics.EVENTS_IN.labels(event.message.tp.topic, "accepted").inc()
            await target.send(key=routed.key, value=routed.value)

        async def ingest(stream: faust.StreamT[bytes]) -> None:
            await process_events(stream, name, topics.dead_letter, handle)

        app.agent(source, name=f"cxstream.{name}")(ingest)

    limit = settings.max_event_bytes
    make_agent(topics.interactions, topics.customer_events, lambda raw: route_customer_event(raw, InteractionEvent, limit), "ingest-interactions")
    make_agent(topics.outcomes, topics.customer_events, lambda raw: route_customer_event(raw, OutcomeEvent, limit), "ingest-outcomes")
    make_agent(topics.advisor_events, topics.routing, lambda raw: route_advisor_event(raw, limit), "ingest-advisor-events")
