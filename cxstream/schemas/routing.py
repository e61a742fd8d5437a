"""Records on the router's own input topic, ``cx.routing.v1`` (key = routing group).

The router of a routing group consumes one totally ordered stream: contact
requests (from the context stage), contact updates, advisor events (forwarded by
ingest) and clock ticks.  Its decisions are a pure function of that stream, so a
replay of the topic reproduces the same assignments.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import msgspec

from cxstream.schemas.common import Channel, EventTime, Language, Record, RoutingGroup, ShortText
from cxstream.schemas.events import AdvisorEvent

#: The router's key of a contact (``contact_key`` on the router's records): at most this long.
ContactKey = Annotated[
    str,
    msgspec.Meta(
        max_length=160,
        description=(
            "The router's key of the contact: unique per customer (contact ids are unique only within one "
            "channel system). Echo it from the Assignment on desk actions; without it the contact id is used."
        ),
    ),
]


def contact_key(customer_id: str, contact_id: str) -> str:
    """The router's key of *customer_id*'s contact *contact_id*: the contact id and a hash of both.

    Two customers' contacts with the same id get different keys; the same customer's contact
    always the same key (a re-sent contact is the same contact).  The context stage makes it when
    it opens the contact and keeps it with the open contact, so it survives identity merges.

    >>> contact_key("C-1", "c-u1"), contact_key("C-2", "c-u1") != contact_key("C-1", "c-u1")
    ('c-u1~dc700c885283af4b', True)
    """
    digest = hashlib.blake2b(f"{customer_id}\x1f{contact_id}".encode(), digest_size=8).hexdigest()
    return f"{contact_id}~{digest}"


class ContactRequest(Record, frozen=True, tag="cx.ContactRequest.v1", tag_field="type"):
    """A contact that needs an advisor, enriched with what the context knows of the customer.

    ``contact_key`` (optional; the context stage always sends it): the router's key of the
    contact, :func:`contact_key`.  Without it the router keys the contact by ``contact_id``, or,
    if another customer's contact holds that id, by :func:`contact_key` of this customer.
    """

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
    contact_key: ContactKey | None = None


class ContactUpdate(Record, frozen=True, tag="cx.ContactUpdate.v1", tag_field="type"):
    """A contact left the queue or ended: abandoned by the customer, or closed; or was transferred.

    ``transferred`` (added for the router, optional fields only): the advisor holding the
    contact hands it on, to ``to_advisor_id`` (held for that advisor a while, then anyone
    eligible) and/or to the queue of ``to_skills``; the contact keeps its queue position.

    ``contact_key`` (optional): the contact's key as its request gave it; without it the router
    finds the contact by ``contact_id`` if exactly one contact it owns has that id.
    """

    event_id: str
    contact_id: str
    routing_group: RoutingGroup
    kind: Literal["abandoned", "closed", "transferred"]
    at: EventTime
    to_advisor_id: str | None = None
    to_skills: list[ShortText] | None = None
    contact_key: ContactKey | None = None


class RouterTick(Record, frozen=True, tag="cx.RouterTick.v1", tag_field="type"):
    """The router's clock: published periodically so timers fire in a replayable order."""

    routing_group: RoutingGroup
    at: EventTime


RouterInput = ContactRequest | ContactUpdate | AdvisorEvent | RouterTick
