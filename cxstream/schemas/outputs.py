"""Outbound records: what the engine publishes for desktops, campaign systems and operators.

| record          | topic                  | key           |
|-----------------|------------------------|---------------|
| Assignment      | cx.assignments.v1      | advisor id    |
| RoutingEvent    | cx.routing-events.v1   | routing group |
| OutreachEvent   | cx.outreach.v1         | customer id   |
| DeadLetter      | cx.dead-letter.v1      | source topic  |

Every output carries a deterministic id: a consumer that sees the same id twice
(at-least-once delivery after a crash) drops the second copy.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from cxstream.schemas.common import Channel, EventTime, Language, Record, RoutingGroup
from cxstream.schemas.events import Disposition


class Assignment(Record, tag="cx.Assignment.v1", tag_field="type"):
    """An offer of one contact to one advisor (human agent), with why this advisor."""

    assignment_id: Annotated[str, msgspec.Meta(description="Deterministic: the same input stream gives the same ids.")]
    contact_id: str
    customer_id: Annotated[str, msgspec.Meta(description="Canonical customer id: look the context up with it.")]
    advisor_id: str
    routing_group: RoutingGroup
    channel: Channel
    contact_opened_at: Annotated[EventTime, msgspec.Meta(description="Event time at which the contact was opened at the source.")]
    decided_at: Annotated[EventTime, msgspec.Meta(description="Router clock when the decision was taken (event time of the input that triggered it).")]
    waited_s: Annotated[float, msgspec.Meta(ge=0, description="How long the contact waited for this offer, in router time.")]
    attempt: Annotated[int, msgspec.Meta(ge=1, description="1 for the first offer of this contact, 2 after a reject or timeout...")] = 1
    policy: Annotated[str, msgspec.Meta(description="Routing policy that decided.")] = "default"
    score: Annotated[float, msgspec.Meta(description="Total score of the chosen advisor.")] = 0.0
    reasons: Annotated[dict[str, float], msgspec.Meta(description="The score's breakdown: why this advisor.")] = {}
    intent: str | None = None
    priority: int = 0
    language: Language | None = None


RoutingEventKind = Literal[
    "queued",
    "escalated",
    "sla_breached",
    "offer_timeout",
    "offer_rejected",
    "abandoned",
    "overflow",
    "transferred",
    "completed",
]


class RoutingEvent(Record, tag="cx.RoutingEvent.v1", tag_field="type"):
    """Something the router did or saw that is not an assignment: queueing, escalation, breach."""

    event_id: str
    kind: RoutingEventKind
    routing_group: RoutingGroup
    contact_id: str
    at: EventTime
    advisor_id: str | None = None
    step: Annotated[int, msgspec.Meta(ge=0, description="Escalation step reached, for kind=escalated.")] = 0
    detail: str | None = None
    customer_id: Annotated[str, msgspec.Meta(description="Canonical id of the contact's customer.")] | None = None
    disposition: Annotated[
        Disposition, msgspec.Meta(description="For kind=completed: what the advisor recorded (true intent, resolved).")
    ] | None = None


class OutreachEvent(Record, tag="cx.OutreachEvent.v1", tag_field="type"):
    """A recommendation to contact a customer before they have to call."""

    outreach_id: Annotated[str, msgspec.Meta(description="Deterministic id of this outreach.")]
    customer_id: str
    reason: Annotated[str, msgspec.Meta(description="The trigger that fired, e.g. 'churn_risk'.")]
    channel: Channel
    created_at: EventTime
    expires_at: EventTime
    priority: Annotated[int, msgspec.Meta(ge=0, le=10)] = 5
    language: Language | None = None
    context: Annotated[dict[str, str | int | float | bool | None], msgspec.Meta(description="The facts that justify the outreach.")] = {}


class DeadLetter(Record, tag="cx.DeadLetter.v1", tag_field="type"):
    """An input the engine could not use, with its coordinates and the reason: nothing is dropped silently."""

    source_topic: str
    partition: int
    offset: int
    agent: Annotated[str, msgspec.Meta(description="The stage that refused it, e.g. 'ingest'.")]
    reason: Annotated[str, msgspec.Meta(description="Human-readable reason, e.g. the validation error and its path.")]
    error_type: Annotated[str, msgspec.Meta(description="Machine-readable class: too_large, not_json, invalid, duplicate_key...")]
    failed_at: EventTime
    raw: Annotated[str, msgspec.Meta(description=(
        "The payload as received: UTF-8 text, or 'base64:'-prefixed when not UTF-8; only its first "
        "CX_DEAD_LETTER_MAX_RAW_BYTES bytes when raw_truncated."
    ))]
    key: str | None = None
    raw_bytes: Annotated[int, msgspec.Meta(ge=0, description="Size of the payload as received, bytes (0: no payload).")] = 0
    raw_truncated: Annotated[bool, msgspec.Meta(description=(
        "True when raw holds only the start of the payload; the whole of it is at source_topic/partition/offset."
    ))] = False
