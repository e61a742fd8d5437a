"""Pure context updates: (old context, event) -> (new context, effects).

No I/O and no clock: every time comes from the events, so a replay rebuilds the
same contexts.  The caller (``cxstream.agents.context``) persists the new
context and publishes the effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from cxstream.context.model import CustomerContext, InteractionSummary, OpenContact
from cxstream.schemas import Assignment, ContactRequest, ContactUpdate, InteractionEvent, OutcomeEvent

replace = msgspec.structs.replace


@dataclass(frozen=True)
class ContextLimits:
    """Bounds that keep a context's memory flat however long a customer lives."""

    max_interactions: int = 20
    max_event_ids: int = 64
    max_text_chars: int = 500
    max_identifiers_per_kind: int = 8


@dataclass
class Effects:
    """What an update asks the caller to publish."""

    duplicate: bool = False
    routing: list[ContactRequest | ContactUpdate] = field(default_factory=list)


def _new(customer_id: str, at: float) -> CustomerContext:
    return CustomerContext(customer_id=customer_id, created_at=at, updated_at=at)


def _seen(ctx: CustomerContext, event_id: str, limits: ContextLimits) -> tuple[bool, list[str]]:
    if event_id in ctx.recent_event_ids:
        return True, ctx.recent_event_ids
    ids = [*ctx.recent_event_ids, event_id]
    return False, ids[-limits.max_event_ids :]


def _merge_identifiers(ctx: CustomerContext, found: dict[str, str], limits: ContextLimits) -> dict[str, list[str]]:
    if all(v in ctx.identifiers.get(k, ()) for k, v in found.items()):
        return ctx.identifiers
    out = {k: list(v) for k, v in ctx.identifiers.items()}
    for kind, value in found.items():
        values = out.setdefault(kind, [])
        if value not in values:
            values.append(value)
            del values[: -limits.max_identifiers_per_kind]
    return out


def apply_interaction(
    ctx: CustomerContext | None,
    ev: InteractionEvent,
    customer_id: str,
    limits: ContextLimits = ContextLimits(),
    *,
    identifiers: dict[str, str] | None = None,
    redacted_text: str | None = None,
) -> tuple[CustomerContext, Effects]:
    """Fold one interaction into the customer's context.

    *identifiers* are the event's normalised identifiers; *redacted_text* the
    message text with personal data removed (the raw text is never stored).

    >>> from cxstream.schemas import Identifiers
    >>> ev = InteractionEvent(event_id="e1", occurred_at=10.0, channel="chat", kind="contact_opened",
    ...     customer=Identifiers(customer_id="c1"), contact_id="k1", needs_advisor=True)
    >>> ctx, fx = apply_interaction(None, ev, "c1")
    >>> sorted(ctx.open_contacts), [type(r).__name__ for r in fx.routing]
    (['k1'], ['ContactRequest'])
    >>> ctx2, fx2 = apply_interaction(ctx, ev, "c1")
    >>> fx2.duplicate, ctx2 is ctx
    (True, True)
    """
    if ctx is None:
        ctx = _new(customer_id, ev.occurred_at)
    dup, event_ids = _seen(ctx, ev.event_id, limits)
    if dup:
        return ctx, Effects(duplicate=True)
    fx = Effects()
    text = redacted_text if redacted_text is not None else None
    if text is not None and len(text) > limits.max_text_chars:
        text = text[: limits.max_text_chars] + "…"
    summary = InteractionSummary(
        event_id=ev.event_id,
        at=ev.occurred_at,
        channel=ev.channel,
        kind=ev.kind,
        contact_id=ev.contact_id,
        text=text,
        direction=ev.direction,
    )
    recent = [summary, *ctx.recent][: limits.max_interactions]
    open_contacts = ctx.open_contacts
    contacts_total = ctx.contacts_total
    cid = ev.contact_id
    if ev.kind == "contact_opened" and cid and cid not in open_contacts:
        open_contacts = {
            **open_contacts,
            cid: OpenContact(
                contact_id=cid,
                channel=ev.channel,
                opened_at=ev.occurred_at,
                routing_group=ev.routing_group,
                state="queued" if ev.needs_advisor else "open",
                needs_advisor=ev.needs_advisor,
            ),
        }
        contacts_total += 1
        if ev.needs_advisor:
            fx.routing.append(
                ContactRequest(
                    event_id=ev.event_id,
                    contact_id=cid,
                    customer_id=customer_id,
                    routing_group=ev.routing_group,
                    channel=ev.channel,
                    opened_at=ev.occurred_at,
                    language=ev.language or ctx.language,
                    priority=ev.priority,
                    required_skills=list(ev.required_skills),
                    last_advisor_id=ctx.last_advisor_id,
                )
            )
    elif ev.kind in ("contact_closed", "contact_abandoned") and cid and cid in open_contacts:
        closing = open_contacts[cid]
        open_contacts = {k: v for k, v in open_contacts.items() if k != cid}
        if closing.needs_advisor:
            fx.routing.append(
                ContactUpdate(
                    event_id=ev.event_id,
                    contact_id=cid,
                    routing_group=closing.routing_group,
                    kind="abandoned" if ev.kind == "contact_abandoned" else "closed",
                    at=ev.occurred_at,
                )
            )
    new = replace(
        ctx,
        updated_at=max(ctx.updated_at, ev.occurred_at),
        identifiers=_merge_identifiers(ctx, identifiers or {}, limits),
        recent=recent,
        open_contacts=open_contacts,
        last_channel=ev.channel,
        language=ev.language or ctx.language,
        interactions_total=ctx.interactions_total + 1,
        contacts_total=contacts_total,
        recent_event_ids=event_ids,
    )
    return new, fx


def apply_assignment(ctx: CustomerContext | None, a: Assignment, limits: ContextLimits = ContextLimits()) -> CustomerContext:
    """Record that an advisor was assigned to one of the customer's contacts.

    >>> a = Assignment(assignment_id="a1", contact_id="k1", customer_id="c1", advisor_id="adv1",
    ...     routing_group="default", channel="voice", contact_opened_at=1.0, decided_at=3.0, waited_s=2.0)
    >>> apply_assignment(None, a).last_advisor_id
    'adv1'
    """
    if ctx is None:
        ctx = _new(a.customer_id, a.decided_at)
    dup, event_ids = _seen(ctx, a.assignment_id, limits)
    if dup:
        return ctx
    open_contacts = ctx.open_contacts
    if a.contact_id in open_contacts:
        open_contacts = {
            **open_contacts,
            a.contact_id: replace(open_contacts[a.contact_id], state="assigned", advisor_id=a.advisor_id),
        }
    return replace(
        ctx,
        updated_at=max(ctx.updated_at, a.decided_at),
        open_contacts=open_contacts,
        last_advisor_id=a.advisor_id,
        last_advisor_at=a.decided_at,
        recent_event_ids=event_ids,
    )


def apply_outcome(
    ctx: CustomerContext | None,
    ev: OutcomeEvent,
    customer_id: str,
    limits: ContextLimits = ContextLimits(),
    *,
    identifiers: dict[str, str] | None = None,
) -> tuple[CustomerContext, bool]:
    """Fold a business outcome into the context; returns (context, was_duplicate)."""
    if ctx is None:
        ctx = _new(customer_id, ev.occurred_at)
    dup, event_ids = _seen(ctx, ev.event_id, limits)
    if dup:
        return ctx, True
    summary = InteractionSummary(event_id=ev.event_id, at=ev.occurred_at, channel="business", kind=f"outcome:{ev.kind}")
    return (
        replace(
            ctx,
            updated_at=max(ctx.updated_at, ev.occurred_at),
            identifiers=_merge_identifiers(ctx, identifiers or {}, limits),
            recent=[summary, *ctx.recent][: limits.max_interactions],
            recent_event_ids=event_ids,
        ),
        False,
    )
