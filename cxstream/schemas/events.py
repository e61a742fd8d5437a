"""Inbound records: what channel systems, advisor desktops and business systems publish.

| record            | topic                   | key           |
|-------------------|-------------------------|---------------|
| InteractionEvent  | cx.interactions.v1      | any (customer identifier recommended) |
| AdvisorEvent      | cx.advisor-events.v1    | advisor id    |
| OutcomeEvent      | cx.outcomes.v1          | any           |
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from cxstream.schemas.common import (
    Attributes,
    Channel,
    EventId,
    EventTime,
    Identifiers,
    Language,
    Record,
    RoutingGroup,
    ShortText,
)

InteractionKind = Literal[
    "message",  # a customer (or advisor) message on any channel
    "contact_opened",  # a call/chat/email thread starts; with needs_advisor it is routed
    "contact_closed",  # the contact ended (resolved or not)
    "contact_abandoned",  # the customer left before an advisor answered
    "page_view",
    "payment_failed",
    "business_event",
    "survey",
]

Skills = Annotated[
    dict[str, Annotated[int, msgspec.Meta(ge=1, le=5)]],
    msgspec.Meta(description="Skill name to proficiency, 1 (novice) to 5 (expert)."),
]


class InteractionEvent(Record, frozen=True, tag="cx.InteractionEvent.v1", tag_field="type"):
    """Anything a customer did or said on any channel.

    A ``contact_opened`` with ``needs_advisor`` true makes a contact routable: the
    router assigns it to an advisor.  Messages carry ``text``; the engine redacts
    personal data from text before it reaches logs, Redis or the dead-letter metadata.
    ``language`` is the channel's tag when it knows one; the engine also detects the
    language of inbound text (a confident detection that disagrees wins), routes the
    contact on it and scores sentiment only in English (docs/INTEL.md "Languages").
    """

    event_id: EventId
    occurred_at: EventTime
    channel: Annotated[Channel, msgspec.Meta(description="The channel the interaction happened on.")]
    kind: Annotated[InteractionKind, msgspec.Meta(description="What happened.")]
    customer: Annotated[Identifiers, msgspec.Meta(description="Identifiers of the customer known to the channel.")]
    contact_id: Annotated[str, msgspec.Meta(max_length=128, description="The contact (call, chat, email thread) this belongs to.")] | None = None
    needs_advisor: Annotated[bool, msgspec.Meta(description="With kind=contact_opened: route this contact to an advisor.")] = False
    text: Annotated[str, msgspec.Meta(max_length=8000, description="Message text, for kind=message.")] | None = None
    direction: Annotated[Literal["inbound", "outbound"], msgspec.Meta(description="From the customer (inbound) or to them.")] = "inbound"
    language: Language | None = None
    routing_group: RoutingGroup = "default"
    priority: Annotated[int, msgspec.Meta(ge=0, le=10, description="Business priority, 0 (normal) to 10 (highest).")] = 0
    required_skills: Annotated[list[ShortText], msgspec.Meta(max_length=16, description="Skills an advisor must have; empty means any.")] = []
    attributes: Attributes = {}


#: The next-best-action kinds (``cxstream.intel.nba.ACTIONS``): what the engine recommends and the advisor reports doing.
NBAAction = Literal["resolve", "offer_retention", "call_back", "escalate_tier", "vip_desk"]


class Disposition(Record, frozen=True):
    """What the advisor recorded when the contact ended: the ground truth for learning."""

    intent: Annotated[str, msgspec.Meta(max_length=128, description="The true intent of the contact.")] | None = None
    resolved: Annotated[bool, msgspec.Meta(description="Was the customer's issue resolved?")] = True
    code: Annotated[str, msgspec.Meta(max_length=64, description="The centre's own wrap-up code.")] | None = None
    document: Annotated[
        str,
        msgspec.Meta(
            min_length=1, max_length=128,
            description="The knowledge document or response template the advisor used (its id); teaches the suggestions "
            "(and, with action=resolve, the next-best action's document).",
        ),
    ] | None = None
    action: Annotated[
        NBAAction, msgspec.Meta(description="The next-best action the advisor took (the bandit learns its outcome); "
                                "none: the recommended one is taken as done.")
    ] | None = None


AdvisorKind = Literal[
    "login",
    "logout",
    "presence",
    "skills",
    "offer_accepted",
    "offer_rejected",
    "contact_completed",
    "contact_transferred",
]
Presence = Literal["available", "busy", "wrap_up", "away", "offline"]


class AdvisorEvent(Record, frozen=True, tag="cx.AdvisorEvent.v1", tag_field="type"):
    """A change of an advisor's (human agent's) state, sent by the advisor desktop."""

    event_id: EventId
    occurred_at: EventTime
    advisor_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    kind: Annotated[AdvisorKind, msgspec.Meta(description="What changed.")]
    routing_group: RoutingGroup = "default"
    presence: Annotated[Presence | None, msgspec.Meta(description="New presence, for login/presence.")] = None
    skills: Skills | None = None
    languages: Annotated[list[Language], msgspec.Meta(max_length=16, description="Languages the advisor serves in.")] | None = None
    capacity: Annotated[
        dict[Channel, Annotated[int, msgspec.Meta(ge=0, le=50)]] | None,
        msgspec.Meta(description="How many contacts of each channel the advisor can hold at once (voice blocks other work)."),
    ] = None
    contact_id: Annotated[str, msgspec.Meta(max_length=128, description="The contact, for offer_* and contact_completed.")] | None = None
    assignment_id: Annotated[str, msgspec.Meta(max_length=128, description="The offer answered, for offer_*.")] | None = None
    disposition: Disposition | None = None
    transfer_to_advisor_id: Annotated[
        str, msgspec.Meta(max_length=128, description="For contact_transferred: the advisor to hand the contact to.")
    ] | None = None
    transfer_to_skills: Annotated[
        list[ShortText], msgspec.Meta(max_length=16, description="For contact_transferred: the skills (queue) to hand it to.")
    ] | None = None
    contact_key: Annotated[
        str,
        msgspec.Meta(
            max_length=160,
            description="The router's key of the contact, as the Assignment gave it (contact ids are unique only within one channel system).",
        ),
    ] | None = None


OutcomeKind = Literal[
    "churned",
    "retained",
    "csat",
    "nps",
    "payment_failed",
    "complaint",
    "converted",
    "outreach_response",
    "profile",
    "consent",
    "erasure_requested",
]


class OutcomeEvent(Record, frozen=True, tag="cx.OutcomeEvent.v1", tag_field="type"):
    """What a business system reports back: churn, satisfaction, payments, consent, erasure."""

    event_id: EventId
    occurred_at: EventTime
    customer: Identifiers
    kind: Annotated[OutcomeKind, msgspec.Meta(description="What is being reported.")]
    value: Annotated[float | None, msgspec.Meta(description="Score for csat (1-5) or nps (0-10); amount for payments.")] = None
    contact_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    outreach_id: Annotated[str, msgspec.Meta(max_length=128, description="The outreach this outcome answers, if any.")] | None = None
    attributes: Annotated[
        Attributes,
        msgspec.Meta(description=(
            "Free-form scalar attributes from the source system (at most 64 keys). For kind=profile the context "
            "keeps: tier, value, timezone (IANA name, for outreach quiet hours) and the account facts the churn "
            "model reads: tenure_months, monthly_charges, monthly_value, total_charges, lifetime_value (numbers); "
            "contract, payment_method, plan, segment (strings); products ('|'-separated); paperless_billing "
            "(boolean or yes/no). For kind=consent: boolean flags."
        )),
    ] = {}
