"""The live feed of the desk and the wallboard: what each advisor is offered and holds, and what the router did.

Every HTTP API process that serves a desk or a wallboard runs one :class:`LiveFeed`: an
aiokafka consumer with no consumer group, assigned every partition of
``cx.assignments.v1``, ``cx.routing-events.v1``, ``cx.advisor-events.v1``,
``cx.outreach.v1`` and ``cx.model-events.v1``, read from :data:`LOOKBACK_S` ago.  So any
API process answers for any advisor, whichever process an advisor's previous request
reached.  The feed starts on the first request that needs it (a process that never
serves a desk costs the broker nothing) and stops after :data:`IDLE_STOP_S` without one.

:class:`Board` is the feed's state, a pure function of the records applied in order
(no I/O, unit-tested on its own):

* per advisor, the contacts offered to them (``offered``) and accepted (``active``):
  an :class:`~cxstream.schemas.Assignment` opens an offer; the advisor's own
  ``offer_accepted`` makes it active; ``offer_timeout`` / ``offer_rejected`` /
  ``transferred`` routing events and ``contact_completed`` / ``completed`` /
  ``abandoned`` end it.  The router stays the judge: the board only mirrors its records.
* the recent routing events a supervisor watches (SLA breaches, abandons, escalations,
  offer timeouts), the recent outreach recommendations, each model's latest accuracy;
* the end-to-end latency of each assignment: from the event time of the input that
  triggered the decision (``decided_at``) to the assignment's record on the broker (its
  Kafka timestamp), the hop an advisor desktop sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import tomllib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from cxstream.routing.config import RoutingConfig
from cxstream.schemas import AdvisorEvent, Assignment, OutreachEvent, RoutingEvent
from cxstream.schemas.learning import ModelEvent
from cxstream.streams import topics as t
from cxstream.streams.admin import partitions_of
from cxstream.streams.security import kafka_client_kwargs
from cxstream.streams.settings import Settings

log = logging.getLogger(__name__)

#: How far back a starting feed reads: offers and contacts opened before it started are shown too.
LOOKBACK_S = 3600.0
#: A feed nobody asked anything of for this long stops (and starts again on the next request).
IDLE_STOP_S = 600.0
#: Latency points kept for the wallboard's plot (the last hour).
HISTORY_S = 3600.0
#: Routing events the wallboard lists.
WATCHED = frozenset({"sla_breached", "abandoned", "escalated", "offer_timeout", "overflow"})
#: Routing events that end an advisor's hold on a contact.
_ENDS = frozenset({"offer_timeout", "offer_rejected", "transferred", "completed", "abandoned"})

_decode_assignment = msgspec.json.Decoder(Assignment).decode
_decode_routing = msgspec.json.Decoder(RoutingEvent).decode
_decode_advisor = msgspec.json.Decoder(AdvisorEvent).decode
_decode_outreach = msgspec.json.Decoder(OutreachEvent).decode
_decode_model = msgspec.json.Decoder(ModelEvent).decode


def offer_timeouts(routing_config_file: str) -> Callable[[str], float]:
    """The offer timeout of each routing group, as the router reads it from ``CX_ROUTING_CONFIG_FILE``.

    >>> offer_timeouts("")("default")
    30.0
    """
    default = RoutingConfig().offer_timeout_s
    groups: dict[str, float] = {}
    if routing_config_file:
        path = Path(routing_config_file)
        try:
            text = path.read_text()
            raw = tomllib.loads(text) if path.suffix == ".toml" else msgspec.json.decode(text)
            default = float(raw.get("default", {}).get("offer_timeout_s", default))
            groups = {g: float(c.get("offer_timeout_s", default)) for g, c in raw.get("groups", {}).items()}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.warning("cannot read offer timeouts from %s: %r; using %.0f s", path, exc, default)
    return lambda group: groups.get(group, default)


@dataclass
class Work:
    """One contact an advisor is offered or holds."""

    assignment: Assignment
    status: str  # offered | active
    offered_at: float  # wall clock of the assignment's record
    expires_at: float  # offered_at + the group's offer timeout (while offered)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status, "offered_at": self.offered_at, "expires_at": self.expires_at,
            **msgspec.to_builtins(self.assignment),
        }


def work_key(a: Assignment) -> str:
    """The board's key of an assignment's contact: the router's key (contact ids are unique only per channel system)."""
    return a.contact_key or a.contact_id


@dataclass
class Board:
    """The feed's state (see the module docstring): pure, applied one record at a time.

    >>> b = Board(timeout=lambda g: 30.0)
    >>> a = Assignment(assignment_id="a1", contact_id="k1", customer_id="C-1", advisor_id="ann",
    ...     routing_group="default", channel="chat", contact_opened_at=99.0, decided_at=100.0, waited_s=1.0)
    >>> b.assignment(a, 100.5)
    'ann'
    >>> [(w["contact_id"], w["status"], w["expires_at"]) for w in b.work("ann")]
    [('k1', 'offered', 130.5)]
    >>> b.advisor_event(AdvisorEvent(event_id="e1", occurred_at=101.0, advisor_id="ann", kind="offer_accepted",
    ...     contact_id="k1", assignment_id="a1"))
    'ann'
    >>> [w["status"] for w in b.work("ann")]
    ['active']
    >>> b.routing_event(RoutingEvent(event_id="r1", kind="completed", routing_group="default", contact_id="k1",
    ...     at=150.0, advisor_id="ann"), 150.0)
    'ann'
    >>> b.work("ann")
    []
    """

    timeout: Callable[[str], float]
    by_advisor: dict[str, dict[str, Work]] = field(default_factory=dict)
    seen: deque[str] = field(default_factory=lambda: deque(maxlen=4096))
    recent_routing: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))
    recent_outreach: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency: deque[tuple[float, float]] = field(default_factory=deque)  # (wall at, seconds)

    def work(self, advisor_id: str) -> list[dict[str, Any]]:
        """The advisor's offers and contacts, oldest first."""
        items = self.by_advisor.get(advisor_id, {}).values()
        return [w.to_json() for w in sorted(items, key=lambda w: w.offered_at)]

    def holds(self, advisor_id: str, contact_id: str, key: str | None = None) -> Work | None:
        """The advisor's work on a contact: by the router's key (*key*, or *contact_id* given as one),
        else by contact id if only one of the advisor's contacts has it (two customers' contacts may)."""
        held = self.by_advisor.get(advisor_id, {})
        w = held.get(key or contact_id)
        if w is not None or key:
            return w
        same = [x for x in held.values() if x.assignment.contact_id == contact_id]
        return same[0] if len(same) == 1 else None

    def offer(self, advisor_id: str, assignment_id: str) -> Work | None:
        for w in self.by_advisor.get(advisor_id, {}).values():
            if w.assignment.assignment_id == assignment_id:
                return w
        return None

    def assignment(self, a: Assignment, at: float) -> str | None:
        """Apply an assignment (*at*: its record's wall time); returns the advisor whose work changed."""
        if a.assignment_id in self.seen:
            return None  # a copy (at-least-once delivery)
        self.seen.append(a.assignment_id)
        self.latency.append((at, max(0.0, at - a.decided_at)))
        while self.latency and self.latency[0][0] < at - HISTORY_S:
            self.latency.popleft()
        key = work_key(a)
        for other, held in self.by_advisor.items():  # a contact is offered to one advisor at a time
            if other != a.advisor_id:
                held.pop(key, None)
        self.by_advisor.setdefault(a.advisor_id, {})[key] = Work(a, "offered", at, at + self.timeout(a.routing_group))
        return a.advisor_id

    def advisor_event(self, ev: AdvisorEvent) -> str | None:
        held = self.by_advisor.get(ev.advisor_id, {})
        w = self.holds(ev.advisor_id, ev.contact_id or "", ev.contact_key)
        if ev.kind in ("logout",) or (ev.kind == "presence" and ev.presence == "offline"):
            offered = [c for c, x in held.items() if x.status == "offered"]
            for c in offered:
                del held[c]
            return ev.advisor_id if offered else None
        if w is None:
            return None
        if ev.kind == "offer_accepted" and w.status == "offered" and ev.assignment_id in (None, w.assignment.assignment_id):
            w.status = "active"
            return ev.advisor_id
        if ev.kind == "contact_completed":
            del held[work_key(w.assignment)]
            return ev.advisor_id
        return None

    def routing_event(self, ev: RoutingEvent, at: float) -> str | None:
        if ev.kind in WATCHED:
            self.recent_routing.appendleft({**msgspec.to_builtins(ev), "seen_at": at})
        if ev.kind not in _ENDS:
            return None
        advisors = [ev.advisor_id] if ev.advisor_id else list(self.by_advisor)
        changed = None
        for advisor in advisors:
            held = self.by_advisor.get(advisor or "", {})
            w = self.holds(advisor or "", ev.contact_id, ev.contact_key)
            if w is None:
                continue
            if ev.kind in ("offer_timeout", "offer_rejected") and w.status != "offered":
                continue  # an answer to an older offer of the same contact
            del held[work_key(w.assignment)]
            changed = advisor
        return changed

    def outreach(self, ev: OutreachEvent) -> None:
        self.recent_outreach.appendleft(msgspec.to_builtins(ev))

    def model(self, ev: ModelEvent) -> None:
        self.models[ev.model] = msgspec.to_builtins(ev)

    def latency_series(self, now: float, bucket_s: float = 60.0) -> list[dict[str, float]]:
        """Per minute of the last hour with assignments: count, p50 and max of the end-to-end latency in seconds.

        >>> b = Board(timeout=lambda g: 30.0)
        >>> b.latency.extend([(1000.0, 0.1), (1010.0, 0.3), (1070.0, 0.2)])
        >>> b.latency_series(1100.0)
        [{'at': 960.0, 'count': 2, 'p50_s': 0.3, 'max_s': 0.3}, {'at': 1020.0, 'count': 1, 'p50_s': 0.2, 'max_s': 0.2}]
        """
        buckets: dict[float, list[float]] = {}
        for at, lat in self.latency:
            if at >= now - HISTORY_S:
                buckets.setdefault(at // bucket_s * bucket_s, []).append(lat)
        out = []
        for at in sorted(buckets):
            xs = sorted(buckets[at])
            out.append({"at": at, "count": len(xs), "p50_s": round(xs[len(xs) // 2], 4), "max_s": round(xs[-1], 4)})
        return out


class LiveFeed:
    """The :class:`Board` of one API process, fed by a group-less consumer of the broker (see the module docstring).

    ``subscribe(advisor)`` gives a queue that receives the advisor's work list after each change.
    """

    TOPICS = (t.ASSIGNMENTS, t.ROUTING_EVENTS, t.ADVISOR_EVENTS, t.OUTREACH, t.MODEL_EVENTS)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker_url = settings.broker_url
        self.prefix = settings.topic_prefix
        self.board = Board(timeout=offer_timeouts(settings.routing_config_file))
        self.subscribers: dict[str, set[asyncio.Queue[list[dict[str, Any]] | None]]] = {}
        self.caught_up = asyncio.Event()
        self.used_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.error: str | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def ready(self, timeout: float = 15.0) -> bool:
        """Start the feed if it is not running and wait until it has read what the broker held when it started."""
        self.used_at = time.monotonic()
        async with self._lock:
            if not self.running:
                self.caught_up.clear()
                self.board = Board(timeout=self.board.timeout)
                self._task = asyncio.ensure_future(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.caught_up.wait(), timeout)
        return self.caught_up.is_set()

    def subscribe(self, advisor_id: str) -> asyncio.Queue[list[dict[str, Any]] | None]:
        q: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=64)
        self.subscribers.setdefault(advisor_id, set()).add(q)
        return q

    def unsubscribe(self, advisor_id: str, q: asyncio.Queue[list[dict[str, Any]] | None]) -> None:
        subs = self.subscribers.get(advisor_id)
        if subs is not None:
            subs.discard(q)
            if not subs:
                del self.subscribers[advisor_id]

    def end_streams(self) -> None:
        """Tell every subscriber to stop (a ``None`` in its queue)."""
        for subs in self.subscribers.values():
            for q in subs:
                with contextlib.suppress(asyncio.QueueEmpty):
                    while q.full():
                        q.get_nowait()
                q.put_nowait(None)

    def _notify(self, advisor_id: str | None) -> None:
        if advisor_id is None or advisor_id not in self.subscribers:
            return
        work = self.board.work(advisor_id)
        for q in self.subscribers[advisor_id]:
            if q.full():  # a stalled reader gets the newest list, not a backlog
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(work)

    def published(self, ev: AdvisorEvent) -> None:
        """Apply an advisor event this API process has just published (the broker acknowledged it), not waiting to
        read it back: a second click on an offer just accepted is answered 409 at once.  Applying it again when it
        comes back in the feed changes nothing."""
        self._notify(self.board.advisor_event(ev))

    def apply(self, topic: str, value: bytes, timestamp_ms: int) -> None:
        """Apply one record of *topic* (its name without the prefix); undecodable records are skipped."""
        at = timestamp_ms / 1000 if timestamp_ms > 0 else time.time()
        try:
            if topic == t.ASSIGNMENTS.name:
                self._notify(self.board.assignment(_decode_assignment(value), at))
            elif topic == t.ROUTING_EVENTS.name:
                self._notify(self.board.routing_event(_decode_routing(value), at))
            elif topic == t.ADVISOR_EVENTS.name:
                self._notify(self.board.advisor_event(_decode_advisor(value)))
            elif topic == t.OUTREACH.name:
                self.board.outreach(_decode_outreach(value))
            elif topic == t.MODEL_EVENTS.name:
                self.board.model(_decode_model(value))
        except msgspec.DecodeError:  # ingest dead-letters bad desktop input; the feed just skips it
            pass

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.broker_url, enable_auto_commit=False, group_id=None, **kafka_client_kwargs(self.settings)
        )
        try:
            await consumer.start()
            parts: list[TopicPartition] = []
            for spec in self.TOPICS:
                parts += await partitions_of(consumer, self.prefix + spec.name)
            consumer.assign(parts)
            since = int((time.time() - LOOKBACK_S) * 1000)
            # the end offsets first: a record appended between the two requests is then either found
            # by time or below the end the feed seeks to.  The other order lost it (an offer made as the
            # feed started never reached the desk: tests/integration/test_nba.py failed in 3 of 5 CI runs)
            ends = await consumer.end_offsets(parts)
            starts = await consumer.offsets_for_times({p: since for p in parts})
            for p in parts:
                found = starts.get(p)
                consumer.seek(p, found.offset if found is not None else ends[p])
            names = {self.prefix + s.name: s.name for s in self.TOPICS}
            self.error = None
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                for tp, records in batches.items():
                    for r in records:
                        if r.value is not None:
                            self.apply(names[tp.topic], r.value, r.timestamp)
                if not self.caught_up.is_set() and all(await asyncio.gather(*(self._at(consumer, p, ends[p]) for p in parts))):
                    self.caught_up.set()
                if time.monotonic() - self.used_at > IDLE_STOP_S and not self.subscribers:
                    log.info("live feed idle for %.0f s: stopping", IDLE_STOP_S)
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the broker went away: say so; the next request starts the feed again
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("live feed stopped: %s", self.error)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    @staticmethod
    async def _at(consumer: AIOKafkaConsumer, p: TopicPartition, end: int) -> bool:
        return await consumer.position(p) >= end

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
