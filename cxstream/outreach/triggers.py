"""The triggers: each a small pure function of (view, incoming event, state, config, now).

A trigger returns a :class:`Fire` (the trigger, a key that identifies *what* fired —
a contact, an intent, an arming epoch —, an anchor time, and the facts that justify it)
or ``None``.  Arming (hysteresis) and cooldowns are applied by :mod:`cxstream.outreach.decide`
through :func:`churn_arming` / :func:`sentiment_arming` and the state's marks, so each
function here only answers "does the condition hold now?".

Incoming events are the wire records (``InteractionEvent``, ``OutcomeEvent``,
``RoutingEvent``) or ``None`` for a tick / rescore.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from cxstream.outreach.config import OutreachConfig
from cxstream.outreach.state import OutreachState
from cxstream.outreach.view import ContactView, ContextView
from cxstream.schemas import InteractionEvent, OutcomeEvent, RoutingEvent

Event = InteractionEvent | OutcomeEvent | RoutingEvent | None
Fact = str | int | float | bool | None


class Fire(msgspec.Struct, frozen=True, kw_only=True):
    """A trigger whose condition holds."""

    trigger: str
    key: str
    anchor: float
    facts: dict[str, Fact] = {}


# --------------------------------------------------------------------------- level triggers


def churn_risk(view: ContextView, event: Event, state: OutreachState, config: OutreachConfig, now: float) -> Fire | None:
    """Churn risk at or above the threshold while the trigger is armed.

    >>> from cxstream.outreach.state import new_state
    >>> v = ContextView(customer_id="c1", churn_risk=0.72)
    >>> churn_risk(v, None, new_state("c1"), OutreachConfig(), 10.0).facts
    {'churn_risk': 0.72, 'threshold': 0.6}
    >>> churn_risk(v, None, new_state("c1"), OutreachConfig(churn_threshold=0.8), 10.0) is None
    True
    """
    risk = view.churn_risk
    if risk is None or not state.churn_armed or risk < config.churn_threshold:
        return None
    return Fire(
        trigger="churn_risk",
        key=f"epoch{state.churn_epoch}",
        anchor=float(state.churn_epoch),
        facts={"churn_risk": round(risk, 4), "threshold": config.churn_threshold},
    )


def churn_arming(state: OutreachState, view: ContextView, config: OutreachConfig) -> OutreachState:
    """Re-arm the churn trigger once the risk has fallen below threshold - hysteresis.

    >>> from cxstream.outreach.state import new_state
    >>> s = msgspec.structs.replace(new_state("c"), churn_armed=False)
    >>> churn_arming(s, ContextView(customer_id="c", churn_risk=0.55), OutreachConfig()).churn_armed
    False
    >>> r = churn_arming(s, ContextView(customer_id="c", churn_risk=0.45), OutreachConfig())
    >>> r.churn_armed, r.churn_epoch
    (True, 1)
    """
    if not state.churn_armed and view.churn_risk is not None and view.churn_risk < config.churn_rearm_below:
        return msgspec.structs.replace(state, churn_armed=True, churn_epoch=state.churn_epoch + 1)
    return state


def churn_cleared(view: ContextView, config: OutreachConfig) -> bool:
    """A pending churn outreach is cancelled once the risk is below the re-arm level."""
    return view.churn_risk is not None and view.churn_risk < config.churn_rearm_below


def _negative_streak(view: ContextView, config: OutreachConfig, now: float) -> list[tuple[float, float]]:
    recent = [p for p in view.sentiments if now - p[0] <= config.negative_window_s]
    streak: list[tuple[float, float]] = []
    for p in reversed(recent):
        if p[1] > config.negative_threshold:
            break
        streak.append(p)
    return streak


def negative_sentiment(
    view: ContextView, event: Event, state: OutreachState, config: OutreachConfig, now: float
) -> Fire | None:
    """The last ``negative_streak`` inbound messages (within the window) were all negative.

    >>> from cxstream.outreach.state import new_state
    >>> v = ContextView(customer_id="c", sentiments=[(1.0, 0.4), (2.0, -0.3), (3.0, -0.6), (4.0, -0.2)])
    >>> negative_sentiment(v, None, new_state("c"), OutreachConfig(), 5.0).facts["negative_streak"]
    3
    >>> negative_sentiment(v, None, new_state("c"), OutreachConfig(negative_streak=4), 5.0) is None
    True
    """
    if not state.sentiment_armed:
        return None
    streak = _negative_streak(view, config, now)
    if len(streak) < config.negative_streak:
        return None
    scores = [s for _, s in streak]
    return Fire(
        trigger="negative_sentiment",
        key=f"epoch{state.sentiment_epoch}",
        anchor=float(state.sentiment_epoch),
        facts={"negative_streak": len(streak), "sentiment_mean": round(sum(scores) / len(scores), 4), "sentiment_last": streak[0][1]},
    )


def sentiment_cleared(view: ContextView, config: OutreachConfig, now: float) -> bool:
    """The streak is broken: the latest message (in the window) is not negative, or none is left."""
    recent = [p for p in view.sentiments if now - p[0] <= config.negative_window_s]
    return not recent or recent[-1][1] > config.negative_threshold


def sentiment_arming(state: OutreachState, view: ContextView, config: OutreachConfig, now: float) -> OutreachState:
    """Re-arm the sentiment trigger once a message breaks the negative streak."""
    if not state.sentiment_armed and sentiment_cleared(view, config, now):
        return msgspec.structs.replace(state, sentiment_armed=True, sentiment_epoch=state.sentiment_epoch + 1)
    return state


def _repeat_group(view: ContextView, config: OutreachConfig, now: float) -> list[ContactView] | None:
    """The newest intent's unresolved contacts inside the repeat window, if they repeat."""
    recent = [c for c in view.contacts if c.intent and now - c.opened_at <= config.repeat_window_s]
    if not recent:
        return None
    by_intent: dict[str, list[ContactView]] = {}
    for c in recent:
        by_intent.setdefault(c.intent or "", []).append(c)
    best: list[ContactView] | None = None
    for group in by_intent.values():
        if len(group) < config.repeat_min_contacts or any(c.resolved is True for c in group):
            continue
        if best is None or (group[-1].opened_at, group[-1].contact_id) > (best[-1].opened_at, best[-1].contact_id):
            best = group
    return best


def repeat_contact(view: ContextView, event: Event, state: OutreachState, config: OutreachConfig, now: float) -> Fire | None:
    """Repeat contacts on the same intent within the window (72 h), none resolved.

    >>> from cxstream.outreach.state import new_state
    >>> cs = [ContactView(contact_id="k1", opened_at=0.0, intent="refund", resolved=False),
    ...       ContactView(contact_id="k2", opened_at=3600.0, intent="refund")]
    >>> f = repeat_contact(ContextView(customer_id="c", contacts=cs), None, new_state("c"), OutreachConfig(), 7200.0)
    >>> f.key, f.facts["contacts"], f.facts["first_contact_id"]
    ('refund', 2, 'k1')
    >>> cs2 = [cs[0], ContactView(contact_id="k2", opened_at=3600.0, intent="refund", resolved=True)]
    >>> repeat_contact(ContextView(customer_id="c", contacts=cs2), None, new_state("c"), OutreachConfig(), 7200.0) is None
    True
    """
    group = _repeat_group(view, config, now)
    if group is None:
        return None
    first, last = group[0], group[-1]
    return Fire(
        trigger="repeat_contact",
        key=first.intent or "",
        anchor=first.opened_at,
        facts={
            "intent": first.intent,
            "contacts": len(group),
            "first_contact_id": first.contact_id,
            "last_contact_id": last.contact_id,
            "window_h": round(config.repeat_window_s / 3600.0, 2),
        },
    )


def repeat_cleared(view: ContextView, config: OutreachConfig, key: str, now: float) -> bool:
    """A pending repeat-contact outreach is cancelled when a contact on that intent was resolved."""
    return any(c.intent == key and c.resolved is True for c in view.contacts)


# --------------------------------------------------------------------------- event triggers


def abandoned_contact(
    view: ContextView, event: Event, state: OutreachState, config: OutreachConfig, now: float
) -> Fire | None:
    """The customer left a call or chat before an advisor answered: offer a call-back.

    >>> from cxstream.outreach.state import new_state
    >>> ev = InteractionEvent(event_id="e", occurred_at=5.0, channel="voice", kind="contact_abandoned",
    ...     customer={"customer_id": "c"}, contact_id="k9")
    >>> abandoned_contact(ContextView(customer_id="c"), ev, new_state("c"), OutreachConfig(), 5.0).key
    'k9'
    """
    if isinstance(event, InteractionEvent) and event.kind == "contact_abandoned":
        cid = event.contact_id or event.event_id
        return Fire(trigger="abandoned_contact", key=cid, anchor=event.occurred_at,
                    facts={"contact_id": cid, "abandoned_channel": event.channel, "abandoned_at": event.occurred_at})
    if isinstance(event, RoutingEvent) and event.kind == "abandoned":
        return Fire(trigger="abandoned_contact", key=event.contact_id, anchor=event.at,
                    facts={"contact_id": event.contact_id, "abandoned_at": event.at, "routing_group": event.routing_group})
    return None


def abandoned_cleared(view: ContextView, fired_at: float) -> bool:
    """A pending call-back is cancelled when the customer opened a new contact since."""
    return any(c.opened_at > fired_at for c in view.contacts)


def payment_failed(view: ContextView, event: Event, state: OutreachState, config: OutreachConfig, now: float) -> Fire | None:
    """A failed payment (interaction or business outcome) with enough recent failures.

    >>> from cxstream.outreach.state import new_state
    >>> ev = OutcomeEvent(event_id="p1", occurred_at=9.0, customer={"customer_id": "c"}, kind="payment_failed", value=42.0)
    >>> payment_failed(ContextView(customer_id="c", failed_payments=2), ev, new_state("c"), OutreachConfig(), 9.0).facts
    {'failed_payments': 2, 'amount': 42.0, 'event_id': 'p1'}
    """
    if isinstance(event, InteractionEvent) and event.kind == "payment_failed":
        amount = event.attributes.get("amount")
    elif isinstance(event, OutcomeEvent) and event.kind == "payment_failed":
        amount = event.value
    else:
        return None
    failures = max(view.failed_payments, 1)
    if failures < config.payment_min_failures:
        return None
    amt = float(amount) if isinstance(amount, int | float) and not isinstance(amount, bool) else None
    return Fire(trigger="payment_failed", key="payment", anchor=event.occurred_at,
                facts={"failed_payments": failures, "amount": amt, "event_id": event.event_id})


def business_event(view: ContextView, event: Event, state: OutreachState, config: OutreachConfig, now: float) -> Fire | None:
    """A configured business event (``kind=business_event``, attribute ``event``) or outcome kind.

    >>> from cxstream.outreach.state import new_state
    >>> ev = InteractionEvent(event_id="b1", occurred_at=1.0, channel="web", kind="business_event",
    ...     customer={"customer_id": "c"}, attributes={"event": "service_outage"})
    >>> business_event(ContextView(customer_id="c"), ev, new_state("c"), OutreachConfig(), 1.0).key
    'service_outage'
    >>> business_event(ContextView(customer_id="c"), ev, new_state("c"), OutreachConfig(business_events=["price_rise"]), 1.0) is None
    True
    """
    if isinstance(event, InteractionEvent) and event.kind == "business_event":
        name = event.attributes.get("event", event.attributes.get("name"))
        name = name if isinstance(name, str) and name else "business_event"
        if config.business_events and name not in config.business_events:
            return None
        return Fire(trigger="business_event", key=name[:64], anchor=event.occurred_at,
                    facts={"event": name[:64], "event_id": event.event_id})
    if isinstance(event, OutcomeEvent) and event.kind in config.business_outcome_kinds:
        return Fire(trigger="business_event", key=event.kind, anchor=event.occurred_at,
                    facts={"event": event.kind, "event_id": event.event_id, "contact_id": event.contact_id})
    return None


def sla_breached(view: ContextView, event: Event, state: OutreachState, config: OutreachConfig, now: float) -> Fire | None:
    """The router reported that one of the customer's contacts breached its SLA.

    >>> from cxstream.outreach.state import new_state
    >>> ev = RoutingEvent(event_id="r1", kind="sla_breached", routing_group="default", contact_id="k3", at=50.0)
    >>> sla_breached(ContextView(customer_id="c"), ev, new_state("c"), OutreachConfig(), 50.0).key
    'k3'
    """
    if isinstance(event, RoutingEvent) and event.kind == "sla_breached":
        return Fire(trigger="sla_breached", key=event.contact_id, anchor=event.at,
                    facts={"contact_id": event.contact_id, "breached_at": event.at, "routing_group": event.routing_group})
    return None


TriggerFn = Callable[[ContextView, Event, OutreachState, OutreachConfig, float], Fire | None]

#: Every trigger function, by name.
TRIGGER_FUNCTIONS: dict[str, TriggerFn] = {
    "abandoned_contact": abandoned_contact,
    "payment_failed": payment_failed,
    "sla_breached": sla_breached,
    "repeat_contact": repeat_contact,
    "churn_risk": churn_risk,
    "business_event": business_event,
    "negative_sentiment": negative_sentiment,
}
