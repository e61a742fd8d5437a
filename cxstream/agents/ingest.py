"""Ingest: validate every input, normalise identifiers, redact text, and hand it to the next stage.

* ``cx.interactions.v1`` and ``cx.outcomes.v1`` -> ``cx.resolve.v1`` (one partition), where
  the identity stage resolves the canonical customer.  Identifiers are normalised here
  (E.164 phones, lower-cased emails, trimmed handles); placeholders and malformed values
  are dropped from the event and travel along as refusals, which the identity stage
  records on ``cx.identity.v1``.  Message text is redacted here, so that the raw text
  stays only in the source topic.
* An interaction with no identifier at all is *anonymous*: it goes straight to
  ``cx.customer-events.v1`` keyed ``anon-`` + a hash of ``attributes.session_id`` (or of
  the contact id), else the channel's anonymous bucket ``anon-{channel}``.
* ``cx.advisor-events.v1`` -> ``cx.routing.v1``, keyed by routing group.
* With the identity fast path (``CX_IDENTITY_FAST_PATH``: by default while the worker is its
  group's only one), a customer event whose identifiers all already belong to one customer goes
  straight to ``cx.customer-events.v1`` keyed by that customer, past the identity stage, when
  nothing earlier of the same customer is still on the identity stage's road
  (:mod:`cxstream.agents.fastpath`).

A batch stage (:mod:`cxstream.streams.batch`): anything that fails goes to
``cx.dead-letter.v1`` with its coordinates and the reason; the stream goes on.  Nothing is dropped silently: duplicates are dropped
(and counted) downstream, where the per-customer and per-group state lives.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Literal

import msgspec

from cxstream.agents.fastpath import FastPath
from cxstream.context.identity import partition_identifiers
from cxstream.context.redact import redact
from cxstream.context.resolver import fingerprint
from cxstream.schemas import (
    AdvisorEvent,
    Identifiers,
    InteractionEvent,
    OutcomeEvent,
    RefusedIdentifier,
    ResolveRequest,
)
from cxstream.streams import metrics
from cxstream.streams import topics as t
from cxstream.streams.batch import BatchRuntime, BatchStage, Record
from cxstream.streams.codecs import InvalidInput, decode, encode
from cxstream.streams.settings import Settings


@dataclass(frozen=True)
class Routed:
    """Where a valid input goes next: (key, payload) on the next topic; for the identity stage, the event too."""

    key: bytes
    value: bytes
    to: Literal["resolve", "customer", "routing"] = "resolve"
    event: InteractionEvent | OutcomeEvent | None = None  # as normalised (to "resolve" only)
    refused: bool = False  # an identifier was refused (to "resolve" only)


def anonymous_key(ev: InteractionEvent) -> str:
    """The context key of an interaction without any customer identifier.

    >>> from cxstream.schemas import Identifiers
    >>> e = InteractionEvent(event_id="e", occurred_at=1, channel="web", kind="page_view", customer=Identifiers(),
    ...     attributes={"session_id": "s-42"})
    >>> anonymous_key(e)
    'anon-3afa47acc87b6799'
    >>> anonymous_key(msgspec.structs.replace(e, attributes={}))
    'anon-web'
    """
    session = ev.attributes.get("session_id")
    if isinstance(session, str) and session.strip():
        seed = f"session:{session.strip()}"
    elif ev.contact_id:
        seed = f"contact:{ev.contact_id}"
    else:
        return f"anon-{ev.channel}"
    return "anon-" + hashlib.sha256(seed.encode()).hexdigest()[:16]


def check_not_future(occurred_at: float, max_future_s: float | None, now: float | None = None) -> None:
    """Raise ``future_dated`` if *occurred_at* is more than *max_future_s* after *now* (default: the clock).

    Event time drives the contexts (``updated_at``, milestones) and the router's clock (SLA and
    offer timers): one event dated next year would expire every timer of its routing group.  A
    producer whose clock is off by more than the tolerance, or that sends milliseconds, is told
    so in the dead-letter topic.  Out-of-order (late) events are valid and processed.

    >>> check_not_future(1000.0, 60, now=990.0)
    >>> try: check_not_future(1061.0, 60, now=1000.0)
    ... except InvalidInput as e: print(e.error_type, "-", e.reason)
    future_dated - occurred_at is 61 s after the engine's clock (tolerance 60 s)
    """
    if max_future_s is None or max_future_s < 0:
        return
    ahead = occurred_at - (time.time() if now is None else now)
    if ahead > max_future_s:
        raise InvalidInput("future_dated", f"occurred_at is {ahead:.0f} s after the engine's clock (tolerance {max_future_s:g} s)")


def route_customer_event(
    raw: bytes | None, kind: type[InteractionEvent] | type[OutcomeEvent], max_bytes: int, max_future_s: float | None = None,
    now: float | None = None,
) -> Routed:
    """Validate a customer-facing input and say where it goes next; raises :class:`InvalidInput`.

    >>> r = route_customer_event(b'{"event_id":"e1","occurred_at":1,"channel":"chat","kind":"message",'
    ...     b'"customer":{"email":"Jane@X.org","phone":"0"},"text":"mail me: Jane@X.org"}', InteractionEvent, 65536)
    >>> req = decode(r.value, ResolveRequest)
    >>> (r.to, req.event.customer.email, req.event.text, [(x.kind, x.reason) for x in req.refused])
    ('resolve', 'jane@x.org', 'mail me: [email]', [('phone', 'blocked_value')])
    """
    ev: InteractionEvent | OutcomeEvent = decode(raw, kind, max_bytes)
    check_not_future(ev.occurred_at, max_future_s, now)
    ids, bad = partition_identifiers(ev.customer)
    if not ids:
        if bad:
            raise InvalidInput("bad_identifier", "no usable customer identifier: " + "; ".join(d for _, d in bad.values()))
        if isinstance(ev, OutcomeEvent):
            raise InvalidInput("no_identifier", "an outcome must name its customer: the event carries no identifier")
    if isinstance(ev, InteractionEvent) and ev.text:
        ev = msgspec.structs.replace(ev, text=redact(ev.text))
    sent = ev.customer
    # Downstream stages see normalised identifiers only.
    ev = msgspec.structs.replace(ev, customer=Identifiers(**ids))
    if not ids:
        assert isinstance(ev, InteractionEvent)
        return Routed(anonymous_key(ev).encode(), encode(ev), "customer")
    refused = [
        RefusedIdentifier(
            kind=k, fingerprint=fingerprint(k, (getattr(sent, k) or "").strip().lower()), reason=reason, detail=detail  # type: ignore[arg-type]
        )
        for k, (reason, detail) in bad.items()
    ]
    return Routed(ev.event_id.encode(), encode(ResolveRequest(event=ev, refused=refused)), "resolve", ev, bool(refused))


def route_advisor_event(raw: bytes | None, max_bytes: int, max_future_s: float | None = None, now: float | None = None) -> Routed:
    """Validate an advisor event and key it by routing group; raises :class:`InvalidInput`."""
    ev: AdvisorEvent = decode(raw, AdvisorEvent, max_bytes)
    check_not_future(ev.occurred_at, max_future_s, now)
    return Routed(ev.routing_group.encode(), encode(ev), "routing")


def stage(runtime: BatchRuntime, settings: Settings) -> BatchStage:
    """The ingest stage: the three input topics, validated and handed on in batches."""
    st = runtime.stage("ingest", [t.INTERACTIONS, t.OUTCOMES, t.ADVISOR_EVENTS])
    fast: FastPath | None = None
    if settings.identity_fast_path_mode != "off":
        fast = FastPath(runtime, settings, runtime.table_changelog("identity"), runtime.topic(t.RESOLVE))
        runtime.on_start.append(fast.start)
        runtime.on_stop.append(fast.stop)
    targets = {"resolve": st.output(runtime.topic(t.RESOLVE)), "customer": st.output(runtime.topic(t.CUSTOMER_EVENTS)),
               "routing": st.output(runtime.topic(t.ROUTING))}
    limit, ahead = settings.max_event_bytes, settings.max_future_skew_s
    interactions, outcomes = runtime.topic(t.INTERACTIONS), runtime.topic(t.OUTCOMES)
    accepted = {name: metrics.EVENTS_IN.labels(name, "accepted") for name in st.inputs}
    anonymous = metrics.EVENTS_IN.labels(interactions, "anonymous")

    async def handle(rec: Record) -> None:
        if rec.topic == interactions:
            routed = route_customer_event(rec.value, InteractionEvent, limit, ahead)
        elif rec.topic == outcomes:
            routed = route_customer_event(rec.value, OutcomeEvent, limit, ahead)
        else:
            routed = route_advisor_event(rec.value, limit, ahead)
        (accepted[rec.topic] if routed.to != "customer" else anonymous).inc()
        if fast is not None and routed.event is not None:
            way = fast.road.choose(rec.topic, rec.partition, runtime.assignments, routed.event, routed.refused, runtime.alone, runtime.group_told)
            if way.fast:
                assert way.owner is not None
                await targets["customer"].send(key=way.owner.encode(), value=encode(routed.event), tracked=way.tracked)
            else:
                await targets["resolve"].send(key=routed.key, value=routed.value, tracked=way.tracked)
            return
        await targets[routed.to].send(key=routed.key, value=routed.value)

    st.handler = handle
    return st
