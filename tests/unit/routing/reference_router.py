"""Reference for the equivalence tests: the router as it was before its indexes (issue 7), verbatim
but for this docstring, the state's class name and the ``queued`` event's reason (found by a scan here).

It scans every advisor and every contact on every input: the straightforward statement of the
routing rules (docs/ROUTING.md) that :class:`cxstream.routing.Router` must match decision for
decision, output byte for output byte.  Its own ``to_state`` is the old whole-state JSON.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

from cxstream.routing.config import RoutingConfig
from cxstream.routing.ids import short_id
from cxstream.routing.policy import (
    could_serve,
    eligible,
    hold_target,
    learn_completion,
    learn_key,
    resolution_key,
    score,
    why_queued,
)
from cxstream.routing.queue import ContactState, base_priority, order, queue_name
from cxstream.routing.roster import (
    AdvisorState,
    Learned,
    account,
    can_take_work,
    has_room,
    release,
    roll_day,
    speaks,
    take,
)
from cxstream.routing.stats import QueueStats, live
from cxstream.schemas.events import AdvisorEvent, Disposition
from cxstream.schemas.outputs import Assignment, QueuedReason, RoutingEvent
from cxstream.schemas.routing import ContactRequest, ContactUpdate, RouterInput, RouterTick, contact_key

Output = Assignment | RoutingEvent

STATE_VERSION = 1


class RefState(msgspec.Struct, kw_only=True):
    """Everything the router knows; serialised whole by :meth:`Router.to_state`."""

    version: int = STATE_VERSION
    group: str
    config: RoutingConfig
    clock: float = 0.0
    seq: int = 0  #: contacts accepted so far (queue positions)
    out_seq: int = 0  #: routing events emitted so far
    advisors: dict[str, AdvisorState] = {}
    contacts: dict[str, ContactState] = {}
    recent_ids: list[str] = []
    queues: dict[str, QueueStats] = {}
    learned: dict[str, Learned] = {}  #: group mean handle time per skill key


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(RefState)


def input_time(msg: RouterInput) -> float:
    """The event time an input carries."""
    if isinstance(msg, ContactRequest):
        return msg.opened_at
    if isinstance(msg, AdvisorEvent):
        return msg.occurred_at
    return msg.at


class ReferenceRouter:
    """Routes the contacts of one routing group to its advisors.  See the module docstring."""

    def __init__(self, group: str = "default", config: RoutingConfig | None = None) -> None:
        self._s = RefState(group=group, config=config or RoutingConfig())
        self._recent: deque[str] = deque()
        self._seen: set[str] = set()

    # ------------------------------------------------------------------ state
    @property
    def group(self) -> str:
        return self._s.group

    @property
    def config(self) -> RoutingConfig:
        return self._s.config

    @property
    def clock(self) -> float:
        return self._s.clock

    def to_state(self) -> bytes:
        """The whole state as JSON bytes; ``Router.from_state`` restores it exactly."""
        self._s.recent_ids = list(self._recent)
        return _ENCODER.encode(self._s)

    @classmethod
    def from_state(cls, data: bytes) -> ReferenceRouter:
        """Restore a router written by :meth:`to_state`."""
        state = _DECODER.decode(data)
        if state.version != STATE_VERSION:
            raise ValueError(f"router state version {state.version} is not {STATE_VERSION}")
        router = cls.__new__(cls)
        router._s = state
        router._recent = deque(state.recent_ids)
        router._seen = set(state.recent_ids)
        return router

    def reconfigure(self, config: RoutingConfig) -> None:
        """Apply a new configuration (e.g. after a restart with a changed file); state is kept."""
        self._s.config = config

    def contact(self, contact_id: str, key: str | None = None) -> ContactState | None:
        """The router's view of a contact it still owns (a copy is not made: do not mutate)."""
        return self._find(contact_id, key)

    def _find(self, contact_id: str, key: str | None = None, advisor_id: str | None = None) -> ContactState | None:
        if key:
            return self._s.contacts.get(key)
        found = [c for c in self._s.contacts.values() if c.contact_id == contact_id]
        if len(found) > 1:
            found = [c for c in found if advisor_id is None or c.advisor_id == advisor_id]
        return found[0] if len(found) == 1 else None

    def advisor(self, advisor_id: str) -> AdvisorState | None:
        """The router's view of an advisor (do not mutate)."""
        return self._s.advisors.get(advisor_id)

    # ------------------------------------------------------------------ input
    def apply(self, msg: RouterInput) -> list[Output]:
        """Apply one input; return the assignments and routing events it caused, in order."""
        out: list[Output] = []
        if msg.routing_group != self._s.group:
            return out
        event_id = None if isinstance(msg, RouterTick) else msg.event_id
        if event_id is not None:
            if event_id in self._seen:
                return out
            self._remember(event_id)
        t = input_time(msg)
        if isinstance(msg, ContactUpdate) and msg.kind != "transferred":  # an ending goes before timers due at its instant
            self._advance(t, out, before=True)
            self._on_update(msg, self._s.clock, out)
            self._advance(t, out)
            self._dispatch(self._s.clock, out)
            return out
        self._advance(t, out)
        now = self._s.clock
        new_contact: ContactState | None = None
        if isinstance(msg, ContactRequest):
            new_contact = self._on_request(msg, now, out)
        elif isinstance(msg, ContactUpdate):
            self._on_update(msg, now, out)
        elif isinstance(msg, AdvisorEvent):
            self._on_advisor(msg, now, out)
        self._dispatch(now, out)
        if new_contact is not None and new_contact.status == "waiting":
            advisors = self._s.advisors.values()
            reason = why_queued(new_contact, now, self._s.config, anyone_logged_in=any(a.logged_in for a in advisors),
                                anyone_could=any(could_serve(a, new_contact, self._s.config) for a in advisors))
            self._emit(out, "queued", new_contact, now, detail=new_contact.queue, reason=reason)
        return out

    def _remember(self, event_id: str) -> None:
        self._recent.append(event_id)
        self._seen.add(event_id)
        while len(self._recent) > self._s.config.dedupe_window:
            self._seen.discard(self._recent.popleft())

    # ------------------------------------------------------------------ timers
    def _escalating(self) -> bool:
        cfg = self._s.config
        return cfg.escalate and cfg.policy == "default"

    def _timer(self, c: ContactState) -> float | None:
        if c.status == "offered":
            return c.offer_deadline
        if c.status != "waiting":
            return None
        cfg = self._s.config
        sla = cfg.sla_for(c.channel)
        due: list[float] = []
        if not c.sla_breached:
            due.append(c.opened_at + sla)
        if self._escalating() and c.step < len(cfg.escalation_at):
            due.append(c.esc_from + cfg.escalation_at[c.step] * sla)
        if c.hold_for is not None:
            due.append(c.hold_until)
        fallback = cfg.language_fallback_due(c.channel, c.opened_at) if c.language and not c.language_relaxed else None
        if fallback is not None:
            due.append(fallback)
        return min(due) if due else None

    def next_deadline(self) -> float | None:
        """Event time of the next timer (SLA, escalation, hold, offer timeout), if any."""
        best: float | None = None
        for c in self._s.contacts.values():
            t = self._timer(c)
            if t is not None and (best is None or t < best):
                best = t
        return best

    def _advance(self, t: float, out: list[Output], before: bool = False) -> None:
        """Move the clock to *t*, firing every timer due on the way at its own time."""
        while True:
            due = self.next_deadline()
            if due is None or due > t or (before and due == t):
                break
            now = max(due, self._s.clock)
            self._s.clock = now
            self._fire(now, out)
            self._dispatch(now, out)
        if t > self._s.clock:
            self._s.clock = t

    def _fire(self, now: float, out: list[Output]) -> None:
        cfg = self._s.config
        for c in list(self._s.contacts.values()):
            if c.status == "offered":
                if c.offer_deadline is not None and c.offer_deadline <= now:
                    self._offer_timeout(c, now, out)
                continue
            if c.status != "waiting":
                continue
            sla = cfg.sla_for(c.channel)
            if not c.sla_breached and c.opened_at + sla <= now:
                c.sla_breached = True
                self._stats(c.queue).sla_breaches += 1
                self._emit(out, "sla_breached", c, now, detail=f"sla_s={sla:g}")
            if self._escalating():
                while c.step < len(cfg.escalation_at) and c.esc_from + cfg.escalation_at[c.step] * sla <= now:
                    self._escalate(c, c.step + 1, now, out, "sla_timer")
            if c.language and not c.language_relaxed:
                fallback = cfg.language_fallback_due(c.channel, c.opened_at)
                if fallback is not None and fallback <= now:
                    c.language_relaxed = True  # no advisor serving its language took it in time: anyone may
            if c.hold_for is not None and c.hold_until <= now:
                c.hold_for = None

    def _escalate(self, c: ContactState, step: int, now: float, out: list[Output], why: str) -> None:
        last = len(self._s.config.escalation_at)
        c.step = step
        st = self._stats(c.queue)
        st.escalations += 1
        if step >= last:
            st.overflows += 1
            offer = "callback_offered" if c.channel == "voice" else "self_service_offered"
            self._emit(out, "overflow", c, now, step=step, detail=f"{offer};{why}")
        else:
            name = {1: "drop_secondary_skills", 2: "widen_to_all_advisors"}.get(step, f"step_{step}")
            self._emit(out, "escalated", c, now, step=step, detail=f"{name};{why}")

    # ------------------------------------------------------------------ contacts
    def _stats(self, queue: str) -> QueueStats:
        st = self._s.queues.get(queue)
        if st is None:
            st = self._s.queues[queue] = QueueStats()
        return st

    def _on_request(self, msg: ContactRequest, now: float, out: list[Output]) -> ContactState | None:
        cfg = self._s.config
        if msg.contact_key:
            key = msg.contact_key
        else:
            same = [c for c in self._s.contacts.values() if c.contact_id == msg.contact_id and c.customer_id == msg.customer_id]
            if same:
                self._stats(same[0].queue).duplicate_requests += 1
                return None
            key = contact_key(msg.customer_id, msg.contact_id) if msg.contact_id in self._s.contacts else msg.contact_id
        existing = self._s.contacts.get(key)
        if existing is not None:
            if existing.customer_id == msg.customer_id:
                self._stats(existing.queue).duplicate_requests += 1
                return None
            self._stats(queue_name(msg.channel, cfg.skills_for(msg.required_skills, msg.intent))).rejected += 1
            self._s.out_seq += 1
            out.append(RoutingEvent(
                event_id=short_id("re", self._s.group, "rejected", key, self._s.out_seq), kind="rejected",
                routing_group=self._s.group, contact_id=msg.contact_id, at=now, detail="contact_key_in_use",
                customer_id=msg.customer_id, contact_key=key,
            ))
            return None
        skills = cfg.skills_for(msg.required_skills, msg.intent)
        c = ContactState(
            contact_id=msg.contact_id,
            customer_id=msg.customer_id,
            channel=msg.channel,
            opened_at=msg.opened_at,
            queue=queue_name(msg.channel, skills),
            seq=self._s.seq,
            language=msg.language,
            priority=msg.priority,
            points=base_priority(msg.priority, msg.tier, msg.churn_risk, cfg),
            required_skills=skills,
            intent=msg.intent,
            churn_risk=msg.churn_risk,
            tier=msg.tier,
            last_advisor_id=msg.last_advisor_id,
            esc_from=msg.opened_at,
            key=key,
        )
        self._s.seq += 1
        hold = cfg.sticky_wait_s.get(msg.channel, 0.0)
        last = self._s.advisors.get(msg.last_advisor_id or "")
        if cfg.policy == "default" and hold > 0 and last is not None and last.logged_in and speaks(last, msg.language):
            c.hold_for = last.advisor_id
            c.hold_until = msg.opened_at + hold
        self._s.contacts[key] = c
        self._stats(c.queue).offered += 1
        return c

    def _on_update(self, msg: ContactUpdate, now: float, out: list[Output]) -> None:
        c = self._find(msg.contact_id, msg.contact_key)
        if c is None:
            if not msg.contact_key and sum(x.contact_id == msg.contact_id for x in self._s.contacts.values()) > 1:
                self._s.out_seq += 1
                out.append(RoutingEvent(
                    event_id=short_id("re", self._s.group, "rejected", msg.contact_id, self._s.out_seq),
                    kind="rejected", routing_group=self._s.group, contact_id=msg.contact_id, at=now,
                    detail=f"update_ambiguous;kind={msg.kind}",
                ))
            return
        if msg.kind == "transferred":
            self._transfer(c, msg, now, out)
        elif c.status == "active":
            self._complete(c, now, out, detail=f"{msg.kind}_in_service")
        elif c.answered:
            self._drop_offer(c, now)
            st = self._stats(c.queue)
            if msg.kind == "abandoned":
                st.abandoned_after_answer += 1
            else:
                st.completed += 1
            del self._s.contacts[c.key]
            self._emit(out, msg.kind if msg.kind == "abandoned" else "completed", c, now, detail=f"{msg.kind}_after_transfer")
        elif msg.kind == "abandoned":
            self._drop_offer(c, now)
            waited = max(0.0, now - c.opened_at)
            st = self._stats(c.queue)
            st.abandoned += 1
            if waited < self._s.config.short_abandon_s:
                st.short_abandoned += 1
            del self._s.contacts[c.key]
            self._emit(out, "abandoned", c, now, detail=f"waited_s={waited:.3f}")
        else:  # closed before an advisor answered (e.g. self-service, callback taken)
            self._drop_offer(c, now)
            self._stats(c.queue).closed_unanswered += 1
            del self._s.contacts[c.key]
            self._emit(out, "completed", c, now, detail="closed_unanswered")

    def _drop_offer(self, c: ContactState, now: float) -> str | None:
        """Release the advisor holding *c* (if any) and put *c* back to waiting; returns the advisor id."""
        prev = c.advisor_id
        if prev is not None:
            adv = self._s.advisors.get(prev)
            if adv is not None:
                release(adv, c.key, c.channel, now)
        c.status = "waiting"
        c.advisor_id = None
        c.assignment_id = None
        c.offered_at = None
        c.offer_deadline = None
        return prev

    def _requeue(self, c: ContactState, now: float, out: list[Output]) -> None:
        self._drop_offer(c, now)
        if self._escalating() and c.attempts >= self._s.config.max_offers and c.step < 2:
            self._escalate(c, 2, now, out, "too_many_offers")

    def _offer_timeout(self, c: ContactState, now: float, out: list[Output]) -> None:
        prev = c.advisor_id
        adv = self._s.advisors.get(prev or "")
        self._stats(c.queue).offer_timeouts += 1
        self._emit(out, "offer_timeout", c, now, advisor_id=prev)
        if prev is not None:
            c.declined.append(prev)
        self._requeue(c, now, out)
        if adv is not None and adv.logged_in:
            account(adv, now)
            adv.presence = "away"

    def _accept(self, c: ContactState, now: float) -> None:
        c.status = "active"
        c.accepted_at = now
        c.offer_deadline = None
        if not c.answered:
            c.answered = True
            wait = max(0.0, now - c.opened_at)
            st = self._stats(c.queue)
            st.answered += 1
            st.wait_answered_s += wait
            if wait <= self._s.config.sla_for(c.channel):
                st.answered_in_sla += 1

    def _complete(
        self, c: ContactState, now: float, out: list[Output], detail: str | None = None, disposition: Disposition | None = None
    ) -> None:
        if c.status == "offered":
            self._accept(c, now)
        cfg = self._s.config
        adv = self._s.advisors.get(c.advisor_id or "")
        handle = max(0.0, now - (c.accepted_at if c.accepted_at is not None else now))
        st = self._stats(c.queue)
        st.completed += 1
        st.handle_s += handle
        learn_completion(
            self._s.learned, adv, learn_key(c), handle, cfg, disposition.resolved if disposition is not None else None
        )
        if adv is not None:
            roll_day(adv, now)
            adv.handled += 1
            adv.handled_today += 1
            release(adv, c.key, c.channel, now)
        del self._s.contacts[c.key]
        self._emit(out, "completed", c, now, advisor_id=c.advisor_id, detail=detail, disposition=disposition)

    def _transfer(self, c: ContactState, msg: ContactUpdate, now: float, out: list[Output]) -> None:
        cfg = self._s.config
        if c.status == "active" and c.accepted_at is not None:
            self._stats(c.queue).handle_s += max(0.0, now - c.accepted_at)
        prev = self._drop_offer(c, now)
        c.points += cfg.transfer_boost
        c.step = 0
        c.esc_from = now
        c.declined = [prev] if prev is not None else []
        if msg.to_skills is not None:
            c.required_skills = list(msg.to_skills)
        c.hold_for = msg.to_advisor_id
        c.hold_until = now + cfg.transfer_hold_s if msg.to_advisor_id else 0.0
        if msg.to_advisor_id is not None and msg.to_advisor_id in c.declined:
            c.declined.remove(msg.to_advisor_id)
        self._stats(c.queue).transfers += 1
        target = msg.to_advisor_id or ",".join(c.required_skills) or "queue"
        self._emit(out, "transferred", c, now, advisor_id=prev, detail=f"to={target}")

    # ------------------------------------------------------------------ advisors
    def _on_advisor(self, ev: AdvisorEvent, now: float, out: list[Output]) -> None:
        adv = self._s.advisors.get(ev.advisor_id)
        if adv is None:
            adv = AdvisorState(advisor_id=ev.advisor_id, idle_since=now, mark=now)
            self._s.advisors[ev.advisor_id] = adv
        account(adv, now)
        roll_day(adv, now)
        if ev.skills is not None:
            adv.skills = dict(ev.skills)
        if ev.languages is not None:
            adv.languages = list(ev.languages)
        if ev.capacity is not None:
            adv.capacity = {str(k): int(v) for k, v in ev.capacity.items()}
        kind = ev.kind
        if kind == "presence" and not adv.logged_in:
            return  # presence without a login (e.g. a wrap-up ending after logout) does not log in
        if kind == "login" or (kind == "presence" and ev.presence not in (None, "offline")):
            was_free = can_take_work(adv)
            adv.logged_in = True
            adv.presence = ev.presence or ("available" if kind == "login" else adv.presence)
            if adv.presence == "available" and not was_free and not adv.held:
                adv.idle_since = now
            if adv.presence == "away":
                self._withdraw_offers(adv, now, out)
        elif kind == "logout" or (kind == "presence" and ev.presence == "offline"):
            adv.logged_in = False
            adv.presence = "offline"
            self._withdraw_offers(adv, now, out)
        elif kind in ("offer_accepted", "offer_rejected", "contact_completed", "contact_transferred"):
            c = self._find(ev.contact_id or "", ev.contact_key, adv.advisor_id)
            if c is None or c.advisor_id != adv.advisor_id:
                return
            if kind == "contact_transferred":  # the desktop's transfer button: to an advisor or a queue
                update = ContactUpdate(
                    event_id=ev.event_id, contact_id=c.contact_id, routing_group=ev.routing_group, contact_key=c.key,
                    kind="transferred", at=now, to_advisor_id=ev.transfer_to_advisor_id,
                    to_skills=ev.transfer_to_skills,
                )
                self._transfer(c, update, now, out)
                return
            if kind == "contact_completed":
                if c.status in ("offered", "active"):
                    self._complete(c, now, out, disposition=ev.disposition)
                return
            if c.status != "offered" or (ev.assignment_id is not None and ev.assignment_id != c.assignment_id):
                return  # stale answer to an offer already withdrawn
            if kind == "offer_accepted":
                self._accept(c, now)
            else:
                self._stats(c.queue).offers_rejected += 1
                self._emit(out, "offer_rejected", c, now, advisor_id=adv.advisor_id)
                c.declined.append(adv.advisor_id)
                self._requeue(c, now, out)

    def _withdraw_offers(self, adv: AdvisorState, now: float, out: list[Output]) -> None:
        for cid in list(adv.held):
            c = self._s.contacts.get(cid)
            if c is not None and c.status == "offered":
                self._emit(out, "offer_rejected", c, now, advisor_id=adv.advisor_id, detail="advisor_unavailable")
                self._requeue(c, now, out)

    # ------------------------------------------------------------------ decisions
    def _has_any_room(self, adv: AdvisorState) -> bool:
        cfg = self._s.config
        channels = adv.capacity if adv.capacity is not None else cfg.default_capacity
        return any(n > 0 and has_room(adv, ch, cfg) for ch, n in channels.items())

    def _dispatch(self, now: float, out: list[Output]) -> None:
        """Offer waiting contacts, in queue order, to the best eligible free advisor."""
        free = [a for a in self._s.advisors.values() if can_take_work(a) and self._has_any_room(a)]
        if not free:
            return
        waiting = [c for c in self._s.contacts.values() if c.status == "waiting"]
        if not waiting:
            return
        cfg = self._s.config
        for a in free:
            roll_day(a, now)
        today = int(now // 86400)
        max_today = max(
            (a.handled_today for a in self._s.advisors.values() if a.logged_in and a.day == today), default=0
        )
        for c in order(waiting, now, cfg):
            best: AdvisorState | None = None
            best_score = 0.0
            best_why: dict[str, float] = {}
            group = self._s.learned.get(learn_key(c))
            resolved = self._s.learned.get(resolution_key(learn_key(c)))
            for a in free:
                if not eligible(a, c, now, cfg):
                    continue
                sc, why = score(a, c, now, cfg, group, max_today, resolved)
                if best is None or sc > best_score or (sc == best_score and a.advisor_id < best.advisor_id):
                    best, best_score, best_why = a, sc, why
            if best is None:
                continue
            reserved = {
                w.hold_for
                for w in self._s.contacts.values()
                if w.status == "waiting" and w.hold_for is not None and now < w.hold_until
            }
            target = hold_target(c, best, now, cfg, self._s.advisors.values(), self._s.contacts, self._s.learned, reserved)
            if target is not None:
                c.hold_for, c.hold_until = target[0], target[1]
                self._stats(c.queue).holds += 1
                continue
            self._offer(c, best, now, best_score, best_why, out)
            if not (can_take_work(best) and self._has_any_room(best)):
                free.remove(best)
                if not free:
                    return

    def _offer(
        self, c: ContactState, adv: AdvisorState, now: float, sc: float, why: dict[str, float], out: list[Output]
    ) -> None:
        cfg = self._s.config
        c.attempts += 1
        aid = short_id("as", self._s.group, c.contact_id if c.key == c.contact_id else c.key, c.opened_at, c.attempts)
        take(adv, c.key, c.channel, now, c.queue)
        c.status = "offered"
        c.advisor_id = adv.advisor_id
        c.assignment_id = aid
        c.offered_at = now
        c.offer_deadline = now + cfg.offer_timeout_s
        c.hold_for = None
        self._stats(c.queue).offers += 1
        out.append(
            Assignment(
                assignment_id=aid,
                contact_id=c.contact_id,
                customer_id=c.customer_id,
                advisor_id=adv.advisor_id,
                routing_group=self._s.group,
                channel=c.channel,  # type: ignore[arg-type]
                contact_opened_at=c.opened_at,
                decided_at=now,
                waited_s=max(0.0, now - c.opened_at),
                attempt=c.attempts,
                policy=cfg.policy,
                score=round(sc, 6),
                reasons=why,
                intent=c.intent,
                priority=c.priority,
                language=c.language,
                contact_key=c.key,
            )
        )

    def _emit(
        self,
        out: list[Output],
        kind: str,
        c: ContactState,
        now: float,
        *,
        advisor_id: str | None = None,
        step: int = 0,
        detail: str | None = None,
        disposition: Disposition | None = None,
        reason: QueuedReason | None = None,
    ) -> None:
        self._s.out_seq += 1
        out.append(
            RoutingEvent(
                event_id=short_id("re", self._s.group, kind, c.contact_id, self._s.out_seq),
                kind=kind,  # type: ignore[arg-type]
                routing_group=self._s.group,
                contact_id=c.contact_id,
                at=now,
                advisor_id=advisor_id,
                step=step,
                detail=detail,
                customer_id=c.customer_id,
                disposition=disposition,
                contact_key=c.key,
                reason=reason,
            )
        )

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, Any]:
        """The same figures as the router's (one implementation: they are a function of the state)."""
        s = self._s
        return live(s.group, s.config.policy, s.clock, s.advisors.values(), s.contacts.values(), s.queues)
