"""Simulated advisor desktops: what an advisor does with an offer, for demos and load tests.

:func:`respond` is pure and seeded by the assignment id, so the same offer always
gets the same answer: accept after a short ring, then complete the contact after
a handle time drawn for its channel, with a disposition; the channel system then
closes the contact.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from cxstream.schemas import AdvisorEvent, Assignment, Disposition, Identifiers, InteractionEvent
from cxstream.schemas.events import AdvisorKind

#: (min, max) handle time in seconds per channel, scaled by ``DesktopProfile.time_scale``.
HANDLE_S = {"voice": (4.0, 12.0), "chat": (3.0, 9.0), "email": (2.0, 6.0)}


@dataclass(frozen=True)
class DesktopProfile:
    """How simulated advisors behave."""

    ring_s: tuple[float, float] = (0.2, 1.0)
    time_scale: float = 1.0
    reject_rate: float = 0.0
    intents: tuple[str, ...] = ("billing", "card_issue", "tech_support", "cancel_service")


@dataclass(frozen=True)
class Step:
    """One thing a desktop (or its channel system) sends, *after_s* seconds after the offer."""

    after_s: float
    record: AdvisorEvent | InteractionEvent


def respond(a: Assignment, profile: DesktopProfile = DesktopProfile()) -> list[Step]:
    """The desktop's answer to an offer, deterministic in the assignment id.

    >>> a = Assignment(assignment_id="a1", contact_id="k1", customer_id="C-1", advisor_id="ann",
    ...     routing_group="default", channel="chat", contact_opened_at=0.0, decided_at=1.0, waited_s=1.0)
    >>> [s.record.kind for s in respond(a)]
    ['offer_accepted', 'contact_completed', 'contact_closed']
    """
    rng = random.Random(int.from_bytes(hashlib.blake2b(a.assignment_id.encode(), digest_size=8).digest(), "big"))
    ring = rng.uniform(*profile.ring_s)

    def answer(kind: AdvisorKind, suffix: str, disposition: Disposition | None = None) -> AdvisorEvent:
        return AdvisorEvent(event_id=f"{a.assignment_id}:{suffix}", occurred_at=0.0, kind=kind, advisor_id=a.advisor_id,
                            routing_group=a.routing_group, contact_id=a.contact_id, assignment_id=a.assignment_id,
                            disposition=disposition)

    if rng.random() < profile.reject_rate:
        return [Step(ring, answer("offer_rejected", "reject"))]
    lo, hi = HANDLE_S.get(a.channel, (3.0, 9.0))
    handle = ring + rng.uniform(lo, hi) * profile.time_scale
    intent = a.intent or rng.choice(profile.intents)
    customer = Identifiers(customer_id=a.customer_id) if ":" not in a.customer_id else _identifiers(a.customer_id)
    return [
        Step(ring, answer("offer_accepted", "accept")),
        Step(handle, answer("contact_completed", "done", Disposition(intent=intent, resolved=rng.random() < 0.8))),
        Step(
            handle + 0.05,
            InteractionEvent(
                event_id=f"{a.assignment_id}:closed", occurred_at=0.0, channel=a.channel, kind="contact_closed",
                customer=customer, contact_id=a.contact_id, routing_group=a.routing_group,
            ),
        ),
    ]


def _identifiers(customer_key: str) -> Identifiers:
    """Identifiers from a ``kind:value`` customer key (as :func:`customer_key` makes them)."""
    kind, _, value = customer_key.partition(":")
    return Identifiers(**{kind: value}) if kind in Identifiers.__struct_fields__ else Identifiers(customer_id=customer_key)
