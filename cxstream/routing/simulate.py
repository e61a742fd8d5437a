"""Discrete-event simulation of a voice contact centre driving :meth:`Router.apply` in simulated time.

Pure and deterministic (seeded ``random.Random``; no I/O, no wall clock).  The router sees
exactly what it would see in production: advisor logins/logouts (:class:`AdvisorEvent`),
contact requests, offer acceptances and completions, abandonments
(:class:`ContactUpdate`) and :class:`RouterTick` at the router's own ``next_deadline()``.

Desktop model: every offer is accepted at once (same event time) and the
service lasts ``service_time(advisor, call_type, rng)`` seconds; a customer not yet
offered when their patience runs out abandons.  An overflow (callback offer) is only
announced: the customer keeps waiting, and their patience decides.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from cxstream.routing.config import RoutingConfig
from cxstream.routing.router import Router
from cxstream.schemas.events import AdvisorEvent
from cxstream.schemas.outputs import Assignment, RoutingEvent
from cxstream.schemas.routing import ContactRequest, ContactUpdate, RouterInput, RouterTick

ServiceTime = Callable[[str, str, random.Random], float]


class SimCall(msgspec.Struct, frozen=True, kw_only=True):
    """A call to route: when it arrives, its type (used as the required skill), priority, patience."""

    call_id: str
    customer_id: str
    arrival: float
    call_type: str
    priority: int = 0
    patience_s: float | None = None  #: None: never abandons


class SimShift(msgspec.Struct, frozen=True, kw_only=True):
    """An advisor logged in from ``start`` to ``end`` with these skills."""

    advisor_id: str
    start: float
    end: float
    skills: dict[str, int] = {}


class SimOutcome(msgspec.Struct, kw_only=True):
    """What happened to one call in the simulation."""

    call_id: str
    call_type: str
    arrival: float
    answered_at: float | None = None
    abandoned_at: float | None = None
    advisor_id: str | None = None
    service_s: float | None = None


@dataclass
class SimResult:
    """Per-call outcomes, router event counts and the final router statistics."""

    outcomes: list[SimOutcome]
    staffed_s: float
    events: dict[str, int] = field(default_factory=dict)
    router_stats: dict[str, object] = field(default_factory=dict)
    inputs: int = 0


# event classes, in the order they are applied at equal times
_DONE, _READY, _LOGIN, _ARRIVE, _ABANDON, _LOGOUT, _TICK = range(7)


def simulate(
    calls: list[SimCall],
    shifts: list[SimShift],
    config: RoutingConfig,
    service_time: ServiceTime,
    *,
    seed: int = 0,
    skills_as_requirement: bool = True,
    wrap_up_s: float = 0.0,
    group: str = "sim",
    on_output: Callable[[Assignment | RoutingEvent], None] | None = None,
    on_input: Callable[[RouterInput], None] | None = None,
) -> SimResult:
    """Replay *calls* against advisors on *shifts* through a :class:`Router` with *config*.

    ``skills_as_requirement``: the call type is sent as the contact's required skill (and
    advisors log in with their skills); when False, contacts require nothing and every
    advisor may take every call.  ``on_input`` sees every router input in the order applied (a
    recording another router, e.g. the engine's, can replay); ``on_output`` every output.  ``wrap_up_s``: after each call the advisor's desktop sends
    presence ``wrap_up``, then ``available`` this many seconds later (after-call work).
    """
    router = Router(group=group, config=config)
    heap: list[tuple[float, int, int, object]] = []
    n = 0

    def push(t: float, cls: int, payload: object) -> None:
        nonlocal n
        n += 1
        heapq.heappush(heap, (t, cls, n, payload))

    for s in shifts:
        push(s.start, _LOGIN, s)
        push(s.end, _LOGOUT, s)
    outcomes: dict[str, SimOutcome] = {}
    types: dict[str, str] = {}
    for c in calls:
        push(c.arrival, _ARRIVE, c)
        outcomes[c.call_id] = SimOutcome(call_id=c.call_id, call_type=c.call_type, arrival=c.arrival)
        types[c.call_id] = c.call_type
        if c.patience_s is not None:
            push(c.arrival + c.patience_s, _ABANDON, c)
    counts: dict[str, int] = {}
    ticks: set[float] = set()
    eid = 0
    inputs = 0

    def feed(msg: RouterInput) -> None:
        nonlocal inputs
        inputs += 1
        if on_input is not None:
            on_input(msg)
        for o in router.apply(msg):
            if on_output is not None:
                on_output(o)
            if isinstance(o, RoutingEvent):
                counts[o.kind] = counts.get(o.kind, 0) + 1
                continue
            counts["assignment"] = counts.get("assignment", 0) + 1
            out = outcomes[o.contact_id]
            at = o.decided_at
            # Common random numbers: a call's service draw depends only on the seed, the call and the
            # advisor (not on how many draws came before), so two policies that give the same call to
            # the same advisor see the same service time, and figures differ by policy, not by luck.
            draw_rng = random.Random(f"{seed}/{o.contact_id}")
            service = max(0.0, service_time(o.advisor_id, types[o.contact_id], draw_rng))
            out.answered_at, out.advisor_id, out.service_s = at, o.advisor_id, service
            pending_accepts.append((at, o))
            push(at + service, _DONE, (o.advisor_id, o.contact_id))

    pending_accepts: list[tuple[float, Assignment]] = []

    def accept_pending() -> None:
        nonlocal eid
        while pending_accepts:
            at, o = pending_accepts.pop(0)
            eid += 1
            feed(
                AdvisorEvent(
                    event_id=f"sim-{eid}",
                    occurred_at=at,
                    advisor_id=o.advisor_id,
                    kind="offer_accepted",
                    routing_group=group,
                    contact_id=o.contact_id,
                    assignment_id=o.assignment_id,
                )
            )

    while heap:
        t, cls, _, payload = heapq.heappop(heap)
        eid += 1
        ev_id = f"sim-{eid}"
        msg: RouterInput
        if cls == _ARRIVE:
            assert isinstance(payload, SimCall)
            msg = ContactRequest(
                event_id=ev_id,
                contact_id=payload.call_id,
                customer_id=payload.customer_id,
                routing_group=group,
                channel="voice",
                opened_at=t,
                priority=min(10, payload.priority),
                required_skills=[payload.call_type] if skills_as_requirement else [],
                intent=payload.call_type,
            )
        elif cls == _ABANDON:
            assert isinstance(payload, SimCall)
            if outcomes[payload.call_id].answered_at is not None:
                continue  # answered before the customer's patience ran out
            # The router applies a hang-up at t before its own timers due at t (an escalation that
            # would widen the call to an idle advisor): the call is abandoned, never offered at t too.
            outcomes[payload.call_id].abandoned_at = t
            msg = ContactUpdate(event_id=ev_id, contact_id=payload.call_id, routing_group=group, kind="abandoned", at=t)
        elif cls == _DONE:
            assert isinstance(payload, tuple)
            adv, cid = str(payload[0]), str(payload[1])
            if wrap_up_s > 0:
                feed(
                    AdvisorEvent(
                        event_id=ev_id + "w",
                        occurred_at=t,
                        advisor_id=adv,
                        kind="presence",
                        routing_group=group,
                        presence="wrap_up",
                    )
                )
                push(t + wrap_up_s, _READY, adv)
            msg = AdvisorEvent(
                event_id=ev_id,
                occurred_at=t,
                advisor_id=adv,
                kind="contact_completed",
                routing_group=group,
                contact_id=cid,
            )
        elif cls == _READY:
            router_adv = router.advisor(str(payload))
            if router_adv is None or router_adv.presence != "wrap_up":
                continue  # logged out meanwhile
            msg = AdvisorEvent(
                event_id=ev_id,
                occurred_at=t,
                advisor_id=str(payload),
                kind="presence",
                routing_group=group,
                presence="available",
            )
        elif cls == _LOGIN:
            assert isinstance(payload, SimShift)
            msg = AdvisorEvent(
                event_id=ev_id,
                occurred_at=t,
                advisor_id=payload.advisor_id,
                kind="login",
                routing_group=group,
                presence="available",
                skills=dict(payload.skills) if skills_as_requirement else {},
                capacity={"voice": 1},
            )
        elif cls == _LOGOUT:
            assert isinstance(payload, SimShift)
            msg = AdvisorEvent(
                event_id=ev_id, occurred_at=t, advisor_id=payload.advisor_id, kind="logout", routing_group=group
            )
        else:
            ticks.discard(t)
            msg = RouterTick(routing_group=group, at=t)
        feed(msg)
        accept_pending()
        due = router.next_deadline()
        if due is not None and due > router.clock and due not in ticks:
            ticks.add(due)
            push(due, _TICK, None)
    staffed = sum(s.end - s.start for s in shifts)
    return SimResult(
        outcomes=list(outcomes.values()),
        staffed_s=staffed,
        events=dict(sorted(counts.items())),
        router_stats=router.stats(),
        inputs=inputs,
    )
