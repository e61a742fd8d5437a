"""Records on the router's own input topic, ``cx.routing.v1`` (key = routing group).

The router of a routing group consumes one totally ordered stream: contact
requests (from the context stage), contact updates, advisor events (forwarded by
ingest) and clock ticks.  Its decisions are a pure function of that stream, so a
replay of the topic reproduces the same assignments.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from cxstream.schemas.common import Channel, EventTime, Language, Record, RoutingGroup, ShortText
from cxstream.schemas.events import AdvisorEvent


class ContactRequest(Record, tag="cx.ContactRequest.v1", tag_field="type"):
    """A contact that needs an advisor, enriched with what the context knows of the customer."""

    event_id: str
    contact_id: str
    customer_id: str
    routing_group: RoutingGroup
    channel: Channel
    opened_at: Annotated[EventTime, msgspec.Meta(description="Event time at which the contact was opened.")]
    language: Language | None = None
    priority: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    required_skills: list[ShortText] = []
    intent: str | None = None
    intent_confidence: float | None = None
    churn_risk: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    tier: str | None = None
    last_advisor_id: str | None = None


class ContactUpdate(Record, tag="cx.ContactUpdate.v1", tag_field="type"):
    """A contact left the queue or ended: abandoned by the customer, or closed; or was transferred.

    ``transferred`` (added for the router, optional fields only): the advisor holding the
    contact hands it on, to ``to_advisor_id`` (held for that advisor a while, then anyone
    eligible) and/or to the queue of ``to_skills``; the contact keeps its queue position.
    """

    event_id: str
    contact_id: str
    routing_group: RoutingGroup
    kind: Literal["abandoned", "closed", "transferred"]
    at: EventTime
    to_advisor_id: str | None = None
    to_skills: list[ShortText] | None = None


class RouterTick(Record, tag="cx.RouterTick.v1", tag_field="type"):
    """The router's clock: published periodically so timers fire in a replayable order."""

    routing_group: RoutingGroup
    at: EventTime


RouterInput = ContactRequest | ContactUpdate | AdvisorEvent | RouterTick
