"""The outreach core's entry points: :func:`evaluate` and :func:`record_outcome`.  Pure.

``evaluate(state, view, event, now, config)`` is called by the outreach agent after every
context update of a customer (``event`` = the record that caused it) and on ticks
(``event=None``, so that recommendations held back by quiet hours or an open contact go
out when the guardrail clears).  ``now`` is event time; nothing reads a clock.

1. **Arming**: the churn trigger re-arms once the risk falls below threshold - hysteresis;
   the sentiment trigger once a message breaks the negative streak.
2. **Pending** recommendations that expired, or whose condition cleared (risk fell back,
   repeat contact resolved, the customer came back after an abandoned call), are dropped.
3. **Triggers** run; a trigger that fires (and is not in its cooldown for that key, nor
   disarmed) adds a pending recommendation with a deterministic ``outreach_id``.
4. **Guardrails** (:mod:`cxstream.outreach.guardrails`): a final one (erased, opted out, no
   consent) drops every pending recommendation; a transient one (open contact, frequency
   cap, quiet hours) holds them; otherwise the highest-priority one is sent as an
   :class:`~cxstream.schemas.OutreachEvent` (the others ride along, named in
   ``context["also"]``), or recorded as control when the customer is in the holdout.

Every block is reported once per (recommendation, guardrail) as a :class:`Suppression`;
``final=True`` when the recommendation is dropped for good.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

from cxstream.outreach import guardrails as g
from cxstream.outreach.config import LEVEL_TRIGGERS, TRIGGERS, OutreachConfig
from cxstream.outreach.state import Mark, OpenOutreach, OutreachState, Pending, new_state
from cxstream.outreach.triggers import (
    TRIGGER_FUNCTIONS,
    Event,
    Fact,
    abandoned_cleared,
    churn_arming,
    churn_cleared,
    repeat_cleared,
    sentiment_arming,
    sentiment_cleared,
)
from cxstream.outreach.view import ContextView
from cxstream.schemas import OutcomeEvent, OutreachEvent

replace = msgspec.structs.replace

#: Outcome kinds attributed to an outreach, and the ones that count as success / close it.
ATTRIBUTED_KINDS: frozenset[str] = frozenset({"outreach_response", "converted", "retained", "churned"})
POSITIVE_KINDS: frozenset[str] = frozenset({"outreach_response", "converted", "retained"})
CLOSING_KINDS: frozenset[str] = frozenset({"converted", "retained", "churned"})
#: ``attributes.response`` values of an ``outreach_response`` that are not a success.
NEGATIVE_RESPONSES: frozenset[str] = frozenset({"declined", "unsubscribed", "complaint", "opt_out", "bounced"})


class Suppression(msgspec.Struct, frozen=True, kw_only=True):
    """A recommended outreach that a guardrail (or the holdout) stopped.

    ``final``: dropped for good (final guardrail, holdout, expired or cleared while held
    back, or pushed out of a full pending list); else it is held and retried.  ``cause``:
    ``blocked`` (the guardrail blocks it now), ``expired``, ``cleared`` (its condition no
    longer holds), ``overflow``.
    """

    outreach_id: str
    customer_id: str
    trigger: str
    guardrail: str
    at: float
    final: bool
    cause: Literal["blocked", "expired", "cleared", "overflow"] = "blocked"


class Attribution(msgspec.Struct, frozen=True, kw_only=True):
    """An outcome recorded against the outreach it answers."""

    outreach_id: str
    customer_id: str
    trigger: str
    kind: str
    at: float
    latency_s: float
    explicit: bool  # the outcome named the outreach_id (else: latest open outreach in the window)
    control: bool  # the outreach was held out (control group), not sent
    success: bool  # a positive outcome (response, conversion, retention)
    first_success: bool  # the first positive outcome for this outreach (count it once)


def outreach_id(customer_id: str, trigger: str, key: str, anchor: float) -> str:
    """Deterministic id of a recommendation: hash of customer, trigger, key and anchor.

    The key says *what* fired (a contact id, an intent, an arming epoch), the anchor *when*
    in the data (an event time or the epoch), so a replay gives the same ids and a
    redelivered event the same id.

    >>> outreach_id("c1", "churn_risk", "epoch0", 0.0)
    'or-2ffa5b55f0c6308e'
    >>> outreach_id("c1", "churn_risk", "epoch1", 1.0) != outreach_id("c1", "churn_risk", "epoch0", 0.0)
    True
    """
    text = "\x1f".join((customer_id, trigger, key, repr(float(anchor))))
    return "or-" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _cleared(p: Pending, view: ContextView, config: OutreachConfig, now: float) -> bool:
    if p.trigger == "churn_risk":
        return churn_cleared(view, config)
    if p.trigger == "negative_sentiment":
        return sentiment_cleared(view, config, now)
    if p.trigger == "repeat_contact":
        return repeat_cleared(view, config, p.key, now)
    if p.trigger == "abandoned_contact":
        return abandoned_cleared(view, p.fired_at)
    return False


def _rank(p: Pending) -> tuple[int, float, int]:
    return (-p.priority, p.fired_at, TRIGGERS.index(p.trigger) if p.trigger in TRIGGERS else len(TRIGGERS))


def _priority(trigger: str, facts: dict[str, Fact], config: OutreachConfig) -> int:
    base = config.trigger(trigger).priority
    if trigger == "churn_risk":  # +0..3 with how far above the threshold the risk is
        risk = facts.get("churn_risk")
        if isinstance(risk, float) and config.churn_threshold < 1.0:
            base += int(3 * (risk - config.churn_threshold) / (1.0 - config.churn_threshold))
    return max(0, min(10, base))


def _suppress(p: Pending, customer_id: str, guardrail: str, now: float, final: bool, cause: str = "blocked") -> Suppression:
    return Suppression(outreach_id=p.outreach_id, customer_id=customer_id, trigger=p.trigger, guardrail=guardrail,
                       at=now, final=final, cause=cause)  # type: ignore[arg-type]


def evaluate(
    state: OutreachState | None, view: ContextView, event: Event, now: float, config: OutreachConfig
) -> tuple[OutreachState, list[OutreachEvent], list[Suppression]]:
    """Run triggers and guardrails for one customer; returns (new state, outreach to send, suppressions).

    >>> v = ContextView(customer_id="c1", churn_risk=0.8, consent={"email": True}, timezone="Europe/London")
    >>> s, out, sup = evaluate(None, v, None, 1704110400.0, OutreachConfig())
    >>> [(e.reason, e.channel, e.priority, e.expires_at - e.created_at) for e in out], sup
    ([('churn_risk', 'email', 6, 259200.0)], [])
    >>> s2, out2, _ = evaluate(s, v, None, 1704110400.0 + 60, OutreachConfig())  # rescore: no re-fire
    >>> out2
    []
    """
    cid = view.customer_id
    state = state if state is not None else new_state(cid)
    sup: list[Suppression] = []
    state = sentiment_arming(churn_arming(state, view, config), view, config, now)

    # drop what expired or cleared
    pending: list[Pending] = []
    for p in state.pending:
        if now >= p.expires_at:
            sup.append(_suppress(p, cid, p.blocked_by or "expired", now, True, "expired"))
        elif _cleared(p, view, config, now):
            sup.append(_suppress(p, cid, p.blocked_by or "cleared", now, True, "cleared"))
        else:
            pending.append(p)
    marks = state.marks
    if marks:
        horizon = max(config.trigger(t).cooldown_s for t in TRIGGERS)
        marks = [m for m in marks if now - m.at < horizon]
    sent = [t for t in state.sent if now - t < config.cap_window_s]
    opened = [o for o in state.open if now <= o.attribute_until]

    # triggers
    churn_armed, sentiment_armed = state.churn_armed, state.sentiment_armed
    ids = {p.outreach_id for p in pending}
    for name in TRIGGERS:
        if not config.enabled(name):
            continue
        fire = TRIGGER_FUNCTIONS[name](view, event, state, config, now)
        if fire is None:
            continue
        settings = config.trigger(name)
        if name not in LEVEL_TRIGGERS or name == "repeat_contact":
            if any(m.trigger == name and m.key == fire.key and now - m.at < settings.cooldown_s for m in marks):
                continue
        oid = outreach_id(cid, name, fire.key, fire.anchor)
        if oid in ids:
            continue
        ids.add(oid)
        pending.append(
            Pending(outreach_id=oid, trigger=name, key=fire.key, fired_at=now, expires_at=now + settings.expiry_s,
                    priority=_priority(name, fire.facts, config), facts=fire.facts)
        )
        marks.append(Mark(trigger=name, key=fire.key, at=now))
        if name == "churn_risk":
            churn_armed = False
        elif name == "negative_sentiment":
            sentiment_armed = False
    if not pending and not sup and not state.pending and churn_armed == state.churn_armed \
            and sentiment_armed == state.sentiment_armed and len(marks) == len(state.marks) \
            and len(sent) == len(state.sent) and len(opened) == len(state.open):
        return state, [], []  # fast path: nothing fired, nothing held, nothing aged out
    marks = marks[-config.max_marks :]
    state = replace(state, churn_armed=churn_armed, sentiment_armed=sentiment_armed, marks=marks, sent=sent, open=opened)
    if not pending:
        return replace(state, pending=[], suppressed_total=state.suppressed_total + sum(s.final for s in sup)), [], sup

    # guardrails
    out: list[OutreachEvent] = []
    blocked = g.check(view, sent, now, config)
    if blocked in g.FINAL:
        sup.extend(_suppress(p, cid, blocked, now, True) for p in pending)
        pending = []
    elif blocked is not None:
        held: list[Pending] = []
        for p in pending:
            if p.blocked_by != blocked:
                sup.append(_suppress(p, cid, blocked, now, False))
                p = replace(p, blocked_by=blocked)
            held.append(p)
        held.sort(key=_rank)
        for p in held[config.max_pending :]:
            sup.append(_suppress(p, cid, p.blocked_by or "overflow", now, True, "overflow"))
        pending = held[: config.max_pending]
    else:
        pending.sort(key=_rank)
        best, others = pending[0], pending[1:]
        pending = []
        record = OpenOutreach(outreach_id=best.outreach_id, trigger=best.trigger, sent_at=now,
                              attribute_until=now + config.attribution_window_s)
        if g.in_holdout(cid, config):
            sup.append(_suppress(best, cid, g.HOLDOUT, now, True))
            state = replace(state, open=[*opened, replace(record, control=True)][-config.max_open :])
        else:
            channel = g.choose_channel(view, config, best.trigger)
            assert channel is not None  # the consent guardrail passed
            context: dict[str, Fact] = {**best.facts, "trigger_fired_at": best.fired_at, "routing_group": view.routing_group}
            if best.blocked_by:
                context["held_by"] = best.blocked_by
            if others:
                context["also"] = ",".join(sorted({p.trigger for p in others}))
            out.append(
                OutreachEvent(
                    outreach_id=best.outreach_id, customer_id=cid, reason=best.trigger, channel=channel,  # type: ignore[arg-type]
                    created_at=now, expires_at=best.expires_at, priority=best.priority, language=view.language,
                    context=context,
                )
            )
            state = replace(
                state,
                sent=[*sent, now][-max(1, config.cap_max) :],
                open=[*opened, record][-config.max_open :],
                sent_total=state.sent_total + 1,
            )
    state = replace(state, pending=pending, suppressed_total=state.suppressed_total + sum(s.final for s in sup))
    return state, out, sup


def record_outcome(state: OutreachState, outcome: OutcomeEvent) -> tuple[OutreachState, Attribution | None]:
    """Record a business outcome against the outreach it answers; returns (new state, attribution or None).

    Kinds ``outreach_response``, ``converted``, ``retained`` and ``churned`` are attributed:
    to the outreach named by ``outcome.outreach_id`` when it is open, else (no id given) to
    the newest open outreach sent before the outcome and within the attribution window.
    ``converted``/``retained``/``churned`` close the outreach; a response leaves it open for
    the final outcome.

    >>> s = OutreachState(customer_id="c1", open=[OpenOutreach(outreach_id="or-1", trigger="churn_risk",
    ...     sent_at=100.0, attribute_until=1000.0)])
    >>> o = OutcomeEvent(event_id="x", occurred_at=400.0, customer={"customer_id": "c1"}, kind="converted")
    >>> s2, a = record_outcome(s, o)
    >>> (a.outreach_id, a.trigger, a.latency_s, a.explicit, a.first_success), s2.open
    (('or-1', 'churn_risk', 300.0, False, True), [])
    """
    if outcome.kind not in ATTRIBUTED_KINDS:
        return state, None
    at = outcome.occurred_at
    target: OpenOutreach | None = None
    explicit = outcome.outreach_id is not None
    if explicit:
        target = next((o for o in state.open if o.outreach_id == outcome.outreach_id), None)
    else:
        candidates = [o for o in state.open if o.sent_at <= at <= o.attribute_until]
        target = max(candidates, key=lambda o: (o.sent_at, o.outreach_id), default=None)
    if target is None:
        return state, None
    response = outcome.attributes.get("response")
    success = outcome.kind in POSITIVE_KINDS and not (
        outcome.kind == "outreach_response"
        and ((isinstance(response, str) and response.lower() in NEGATIVE_RESPONSES) or (outcome.value is not None and outcome.value <= 0))
    )
    first = success and not target.success
    updated = replace(target, responded=target.responded or outcome.kind == "outreach_response", success=target.success or success)
    if outcome.kind in CLOSING_KINDS:
        opened = [o for o in state.open if o.outreach_id != target.outreach_id]
    else:
        opened = [updated if o.outreach_id == target.outreach_id else o for o in state.open]
    attribution = Attribution(
        outreach_id=target.outreach_id, customer_id=state.customer_id, trigger=target.trigger, kind=outcome.kind, at=at,
        latency_s=round(at - target.sent_at, 3), explicit=explicit, control=target.control, success=success,
        first_success=first,
    )
    return replace(state, open=opened), attribution
