"""Outbound records: what the engine publishes for desktops, campaign systems and operators.

| record          | topic                  | key           |
|-----------------|------------------------|---------------|
| Assignment      | cx.assignments.v1      | advisor id    |
| RoutingEvent    | cx.routing-events.v1   | routing group |
| OutreachEvent   | cx.outreach.v1         | customer id   |
| NextBestAction  | cx.nba.v1              | customer id   |
| DeadLetter      | cx.dead-letter.v1      | source topic  |

Every output carries a deterministic id: a consumer that sees the same id twice
(at-least-once delivery after a crash) drops the second copy.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from cxstream.schemas.common import Channel, EventTime, Language, Record, RoutingGroup
from cxstream.schemas.events import Disposition, NBAAction


class Assignment(Record, frozen=True, tag="cx.Assignment.v1", tag_field="type"):
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
    contact_key: Annotated[
        str,
        msgspec.Meta(description="The router's key of the contact (unique per customer): echo it on desk actions about this contact."),
    ] | None = None


QueuedReason = Literal[
    "held_for_last_advisor", "held_for_faster_advisor", "no_advisor_logged_in", "no_advisor_with_skills", "advisors_busy"
]
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
    "rejected",
]


class RoutingEvent(Record, frozen=True, tag="cx.RoutingEvent.v1", tag_field="type"):
    """Something the router did or saw that is not an assignment: queueing, escalation, breach.

    ``rejected``: a contact request the router could not take (``detail`` says why, e.g.
    ``contact_key_in_use``) or a contact update it could not match (``update_ambiguous``).
    """

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
    contact_key: Annotated[str, msgspec.Meta(description="The router's key of the contact (see Assignment).")] | None = None
    reason: Annotated[
        QueuedReason,
        msgspec.Meta(description="For kind=queued: why the contact was not offered at once (docs/ROUTING.md, 'Why a contact waits')."),
    ] | None = None


class OutreachEvent(Record, frozen=True, tag="cx.OutreachEvent.v1", tag_field="type"):
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


class RankedAction(Record, frozen=True):
    """One action of a next-best-action ranking, with why it stands there."""

    action: NBAAction
    estimate: Annotated[float, msgspec.Meta(ge=0, le=1, description="Estimated reward (0..1) of this action here.")]
    score: Annotated[float, msgspec.Meta(description="Ranking score: the estimate plus the exploration bonus (CX_NBA_ALPHA).")]
    probability: Annotated[float, msgspec.Meta(ge=0, le=1, description="The probability the policy gave this action in this decision.")]
    pulls: Annotated[int, msgspec.Meta(ge=0, description="Outcomes learned by the model that answered.")]
    source: Annotated[Literal["intent", "shared"], msgspec.Meta(
        description="intent: this intent's own arm answered; shared: the action's model over all intents (fewer than CX_NBA_MIN_PULLS outcomes here).")]
    document_id: Annotated[str | None, msgspec.Meta(description="For resolve: the document that resolved this intent best.")] = None


class NextBestAction(Record, frozen=True, tag="cx.NextBestAction.v1", tag_field="type"):
    """The ranked next-best actions for an open contact or an outreach, with the logged propensity.

    ``ranked`` starts with the chosen action.  ``propensity`` is the probability the policy
    gave the chosen action (ε-greedy: ``1 - ε + ε/K`` when greedy, ``ε/K`` when exploring):
    what off-policy evaluation of another policy needs.
    """

    decision_id: Annotated[str, msgspec.Meta(description="Deterministic: nba:{source event id}.")]
    customer_id: str
    decided_at: EventTime
    intent: Annotated[str, msgspec.Meta(description="The intent the arms were chosen for ('-': not known).")]
    chosen: NBAAction
    propensity: Annotated[float, msgspec.Meta(ge=0, le=1, description="The probability the policy gave the chosen action (> 0).")]
    greedy: Annotated[NBAAction, msgspec.Meta(description="The best-ranked action (chosen unless exploring).")]
    explored: bool
    epsilon: Annotated[float, msgspec.Meta(ge=0, le=1)]
    ranked: list[RankedAction]
    model_version: str
    features: Annotated[dict[str, float | str], msgspec.Meta(description="The context features decided on (learned with the outcome).")] = {}
    contact_id: Annotated[str, msgspec.Meta(description="The open contact decided for.")] | None = None
    outreach_id: Annotated[str, msgspec.Meta(description="The outreach decided for.")] | None = None


class DeadLetter(Record, frozen=True, tag="cx.DeadLetter.v1", tag_field="type"):
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
