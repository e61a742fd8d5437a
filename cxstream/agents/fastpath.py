"""The identity fast path: settled customer events past the identity stage's one partition.

With the fast path ingest decides, for each customer event it validated, which road it takes
(docs/IDENTITY.md, "Past one core: the settled fast path"):

* **fast**, straight to the owner's partition of ``cx.customer-events.v1``, when every
  identifier of the event already belongs to one customer in this worker's :class:`Replica` of
  the identity table (:func:`settled_owner`), none was refused, none was erased at or after the
  event's time, the event is not an erasure request, and no earlier event of the same input
  partition that shares an identifier or an owner with it is still *pending* on the slow road;
* **slow**, through ``cx.resolve.v1`` and the identity stage as without the fast path, otherwise.

A fast event is handed to the context stage in the worker, as identity's outputs are, while the
worker is the group's only one (:attr:`cxstream.streams.batch.Tracked.local_when_alone`): no
other worker writes to that topic then, and a local hand-over waits until the stage has consumed
what the topic held and what this worker sent there by the broker.

``CX_IDENTITY_FAST_PATH`` says when a worker takes the fast road:

* ``auto`` (the default; :class:`Road` *alone_only*): only while it is its group's only one, the
  one case where the road is also shorter (one broker hop fewer).  With several workers no worker
  sends fast events, so each context stage hands identity's outputs over locally as without the
  fast path.  A worker stops being alone at a rebalance, which settles every send first and
  closes every input partition until the identity stage has committed past what was sent before;
  it becomes alone once that rebalance's tables are restored, and the slow events it sent
  meanwhile stay pending as ever.  Workers with ``auto`` and ``0`` can share
  a group (a rolling upgrade).
* ``1``: on every worker, the road past the identity stage's one partition.  The context stage
  then reads its records from the log while there are several workers (handed over locally, one
  could pass a slow event another worker's identity stage appended).  Each worker tells the group
  its mode (:mod:`cxstream.streams.assignor`), so a worker of another mode beside one with ``1``
  reads its context stage's input from the log too: any mix of modes in one group is safe.  A
  worker with ``1`` whose group did not tell it every member's mode (a member of an engine from
  before the assignor) sends nothing fast while it is not alone (``modes_unknown``).
* ``0``: every event by the identity stage.

A slow event is pending until the identity stage's committed offset on ``cx.resolve.v1`` passes
the offset it was given: the identity stage commits only after its outputs are acknowledged, so
by then its record is in the customer's partition, and a fast event produced after it comes after
it there.  The other way round, a slow event is produced only once the fast events of the same
customers that the same input partition sent before it are acknowledged (:class:`Tracked`
``after``): the identity stage's output then lands behind them.  An input partition newly taken
(a rebalance, a start) sends everything by the slow road until the identity stage's committed
offset reaches the end of ``cx.resolve.v1`` as it was then: the pending events of the worker that
had it are then in the contexts.  Reading any of this late only sends more events by the slow
road.

The replica follows the identity table's changelog (compacted, one partition), whose records the
identity stage produces only once its outputs are acknowledged, so it is never ahead of the
contexts.  It may be behind: a settled event can then reach a customer merged away meanwhile (the
context stage forwards it to the survivor, as any late record) or erased meanwhile (the context
stage sends it back to the identity stage, which decides as for any event after an erasure).
A wrong merge cannot come from the fast path: it never links, merges or creates anything.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

from cxstream.context.resolver import SHARED, Resolver, settled_owner
from cxstream.schemas import InteractionEvent, OutcomeEvent
from cxstream.streams import metrics
from cxstream.streams.batch import Tracked
from cxstream.streams.security import kafka_client_kwargs

if TYPE_CHECKING:
    from cxstream.streams.batch import BatchRuntime
    from cxstream.streams.settings import Settings

log = logging.getLogger(__name__)

ROAD_HEADER = "cx-road"
FAST_HEADER = (ROAD_HEADER, b"fast")  # on every event sent by the fast road
FAST_HEADERS = [FAST_HEADER]
PRUNE_AT = 4096  # an input partition's acknowledged fast sends are forgotten past this many owners (at least)
REPLICA_FETCH_MS = 200  # how long the replica's fetch waits for changes to pile up
POLL_S = 0.2  # how often the identity stage's committed offset is read while an event is pending
_road = {(road, reason): metrics.IDENTITY_ROAD.labels(road, reason) for road, reason in [
    ("fast", "settled"), ("slow", "unsettled"), ("slow", "refused"), ("slow", "erased"), ("slow", "pending"),
    ("slow", "moved"), ("slow", "not_ready"), ("slow", "erasure"), ("slow", "not_alone"), ("slow", "modes_unknown"),
]}


_EXISTS = b"{}"  # what the replica keeps of a customer's entry


class Replica:
    """What the identity table says of identifiers, as far as its changelog has been read.

    *store* holds the table's records that the reads need, as the identity stage's
    :class:`Resolver` writes them: identifiers (``v:``), aliases (``a:``) and erasure markers
    (``e:``); of a customer (``c:``) only that it exists (its entry, with every identifier it
    holds, is most of the table's bytes).  It is read with the resolver's own read methods.

    >>> from cxstream.context.resolver import Resolver
    >>> table: dict[bytes, bytes] = {}
    >>> _ = Resolver(table).resolve({"email": "jane@x.org"}, event_id="e1", at=1.0)
    >>> r = Replica()
    >>> for k, v in table.items(): r.apply(k, v)
    >>> r.owner("email", "jane@x.org"), r.owner("phone", "+447700900123")
    ('cust-97b1cb025d5c7bdd', None)
    """

    def __init__(self) -> None:
        self.store: dict[bytes, bytes] = {}
        self._read = Resolver(self.store)  # only its read methods are called: it never writes
        self.ready = False  # read up to the changelog's end as it was when following began

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record (None: a tombstone)."""
        if value is None:
            self.store.pop(key, None)
        elif key.startswith((b"v:", b"a:", b"e:")):
            self.store[key] = value
        elif key.startswith(b"c:"):
            self.store[key] = _EXISTS

    def owner(self, kind: str, value: str) -> str | None:
        """The identifier's current owner, ``SHARED`` if quarantined, None if unknown."""
        return self._read.index_value(kind, value)

    def erased_at(self, kind: str, value: str) -> float | None:
        return self._read.erased_at(kind, value)


@dataclass(slots=True, eq=False)
class _Slow:
    """An event sent by the slow road, pending until the identity stage has committed past it."""

    sent: Tracked
    ids: list[tuple[str, str]]
    owners: list[str]


@dataclass(slots=True, eq=False)
class _Input:
    """What the road knows of one input partition."""

    assignment: int  # the runtime's assignment count when this worker took the partition
    barrier: int | None = None  # cx.resolve.v1's end offset when it was taken (None: not read yet)
    open: bool = False  # the identity stage has committed past the barrier
    slow: collections.deque[_Slow] = field(default_factory=collections.deque)
    ids: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    owners: collections.Counter[str] = field(default_factory=collections.Counter)
    fast: dict[str, Tracked] = field(default_factory=dict)  # owner -> its latest fast event's send
    prune_at: int = PRUNE_AT  # when to forget the acknowledged ones (or at twice what was left the last time)


@dataclass(slots=True)
class Way:
    """Where one event goes: ``fast`` to *owner*'s context, else by the identity stage (*reason*)."""

    fast: bool
    reason: str
    owner: str | None
    tracked: Tracked


class Road:
    """The choice of road for each event, per input partition (pure: fed the offsets it needs).

    *committed* is the identity stage's committed offset on ``cx.resolve.v1`` (None: not known);
    :meth:`barrier` gives a newly taken partition the end offset of that topic.
    """

    def __init__(self, replica: Replica, alone_only: bool = False) -> None:
        self.replica = replica
        self.alone_only = alone_only  # CX_IDENTITY_FAST_PATH=auto: fast only while the worker is its group's only one
        self.committed: int | None = None
        self.inputs: dict[tuple[str, int], _Input] = {}

    def _input(self, topic: str, partition: int, assignment: int) -> _Input:
        key = (topic, partition)
        state = self.inputs.get(key)
        if state is None:
            state = self.inputs[key] = _Input(assignment)
        elif state.assignment != assignment:  # taken anew: closed until the barrier passes (its own pending events still count)
            state.assignment, state.barrier, state.open = assignment, None, False
        return state

    def waiting(self) -> list[tuple[str, int]]:
        """Input partitions whose barrier is still to be read."""
        return [key for key, state in self.inputs.items() if state.barrier is None]

    def barrier(self, topic: str, partition: int, end: int) -> None:
        state = self.inputs.get((topic, partition))
        if state is not None and state.barrier is None:
            state.barrier = end
            self._open(state)

    def pending(self) -> bool:
        """True while something waits for the identity stage's committed offset."""
        return any(state.slow or not state.open for state in self.inputs.values())

    def advance(self, committed: int | None) -> None:
        """The identity stage's committed offset moved: forget the slow events it passed."""
        if committed is None or (self.committed is not None and committed <= self.committed):
            return
        self.committed = committed
        for state in self.inputs.values():
            self._open(state)
            slow = state.slow
            # (a send that failed, acked without an offset, left nothing for the identity stage: done too)
            while slow and slow[0].sent.acked and (slow[0].sent.offset is None or slow[0].sent.offset < committed):
                done = slow.popleft()
                state.ids.subtract(done.ids)
                state.owners.subtract(done.owners)
                for k in done.ids:
                    if state.ids[k] <= 0:
                        del state.ids[k]
                for o in done.owners:
                    if state.owners[o] <= 0:
                        del state.owners[o]

    def _open(self, state: _Input) -> None:
        if not state.open and state.barrier is not None:
            state.open = state.barrier == 0 or (self.committed is not None and self.committed >= state.barrier)

    def choose(
        self, topic: str, partition: int, assignment: int, ev: InteractionEvent | OutcomeEvent, refused: bool,
        alone: bool = True, told: bool = True,
    ) -> Way:
        """The road of *ev*, read from *topic* [*partition*]; remembers what the choice implies for later events.

        *alone*: the worker is its group's only one (:attr:`BatchRuntime.alone`); a road made with
        *alone_only* sends nothing fast otherwise (``not_alone``), but keeps its slow events pending as
        ever, so that a fast event after the worker became alone cannot pass one of them.  *told*:
        every member of the group said its mode (:attr:`BatchRuntime.group_told`); otherwise a road
        made without *alone_only* (``1``) sends nothing fast either while the worker is not alone
        (``modes_unknown``): a member that did not say may hand records to its context stage locally.
        """
        state = self._input(topic, partition, assignment)
        ids = ev.customer.present()
        replica = self.replica
        found = {(kind, value): replica.owner(kind, value) for kind, value in ids.items()}  # each looked up once
        owners = list(dict.fromkeys(o for o in found.values() if o is not None and o != SHARED))
        reason = ""
        owner: str | None = None
        if not alone and (self.alone_only or not told):
            reason = "not_alone" if self.alone_only else "modes_unknown"
        elif not replica.ready:
            reason = "not_ready"
        elif isinstance(ev, OutcomeEvent) and ev.kind == "erasure_requested":
            reason = "erasure"
        elif refused:
            reason = "refused"
        else:
            owner = settled_owner(ids, lambda kind, value: found[kind, value])
            if owner is None:
                reason = "unsettled"
            elif any((at := replica.erased_at(k, v)) is not None and ev.occurred_at <= at for k, v in ids.items()):
                reason = "erased"
            elif not state.open:
                reason = "moved"
            elif owner in state.owners or any(k in state.ids for k in ids.items()):
                reason = "pending"
        if not reason:
            assert owner is not None
            tracked = Tracked(headers=FAST_HEADERS, via_broker=True, local_when_alone=True)
            fast = state.fast
            fast[owner] = tracked
            if len(fast) > state.prune_at:  # amortised: the next pass waits until the dict has doubled
                for o in [o for o, t in fast.items() if t.acked]:
                    del fast[o]
                state.prune_at = max(PRUNE_AT, 2 * len(fast))
            _road["fast", "settled"].inc()
            return Way(True, "settled", owner, tracked)
        after: list[Tracked] = []
        for o in owners:  # produced behind the fast events of the same customers not yet acknowledged
            last = state.fast.get(o)
            if last is not None:
                if last.acked:
                    del state.fast[o]
                else:
                    after.append(last)
        tracked = Tracked(after=tuple(after))
        keys = list(ids.items())
        state.slow.append(_Slow(tracked, keys, owners))
        state.ids.update(keys)
        state.owners.update(owners)
        _road["slow", reason].inc()
        return Way(False, reason, None, tracked)


class FastPath:
    """A worker's road: the replica it follows and the offsets it reads, beside the stages' loop."""

    def __init__(self, runtime: BatchRuntime, settings: Settings, changelog: str, resolve_topic: str) -> None:
        self.runtime = runtime
        self.settings = settings
        self.changelog = TopicPartition(changelog, 0)
        self.resolve = TopicPartition(resolve_topic, 0)
        self.replica = Replica()
        self.road = Road(self.replica, alone_only=settings.identity_fast_path_mode == "alone")
        self._reader: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # a fetch every REPLICA_FETCH_MS at most (unless 64 KB of changes are waiting): a replica that
        # far behind only sends more events by the slow road, and each fetch costs the loop ~1 ms
        reader = self._reader = AIOKafkaConsumer(
            bootstrap_servers=self.runtime.bootstrap, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=REPLICA_FETCH_MS, fetch_min_bytes=64 * 1024, **kafka_client_kwargs(self.settings),
        )
        await reader.start()
        reader.assign([self.changelog])
        await reader.seek_to_beginning(self.changelog)
        self._tasks = [
            asyncio.create_task(self._follow(reader), name="cxstream.fastpath.replica"),
            asyncio.create_task(self._watch(), name="cxstream.fastpath.offsets"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader.stop()

    async def _follow(self, reader: AIOKafkaConsumer) -> None:
        """Apply the identity table's changelog to the replica, from its start, for as long as the worker runs."""
        replica = self.replica
        end: int | None = None
        while True:
            try:
                if end is None:
                    end = (await reader.end_offsets([self.changelog]))[self.changelog]
                batches = await reader.getmany(timeout_ms=500, max_records=10_000)
                for messages in batches.values():
                    for m in messages:
                        replica.apply(m.key, m.value)
                if batches:
                    metrics.IDENTITY_REPLICA.set(len(replica.store))
                if not replica.ready and await reader.position(self.changelog) >= end:
                    replica.ready = True
                    log.info("identity fast path: replica ready (%d table records)", len(replica.store))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker away: the replica stays as it is (stale is safe)
                log.warning("identity fast path: changelog read failed (%r); retrying", exc)
                await asyncio.sleep(1.0)

    async def _watch(self) -> None:
        """Read the identity stage's committed offset (and new input partitions' barriers) while anything waits for them."""
        road, runtime = self.road, self.runtime
        while True:
            await asyncio.sleep(POLL_S)
            if not road.pending():
                continue
            try:
                waiting = road.waiting()
                if waiting and self._reader is not None:
                    end = (await self._reader.end_offsets([self.resolve]))[self.resolve]
                    for topic, partition in waiting:
                        road.barrier(topic, partition, end)
                road.advance(await self._committed(runtime))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("identity fast path: offsets not read (%r); events keep the slow road meanwhile", exc)

    async def _committed(self, runtime: BatchRuntime) -> int | None:
        local = runtime.committed_offset(self.resolve)
        if local is not None:  # this worker runs the identity stage: what it committed last
            return local
        consumer = runtime.consumer
        if not isinstance(consumer, AIOKafkaConsumer):  # (the fast path runs on aiokafka only: settings)
            return None
        committed: int | None = await consumer.committed(self.resolve)  # an OffsetFetch to the group's coordinator
        return committed

