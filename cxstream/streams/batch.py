"""Batch stages: the engine's hot path, one fetched batch at a time instead of one Faust event at a time.

A worker's :class:`BatchRuntime` is one consumer-group member (plain aiokafka, or librdkafka
with ``CX_STAGE_CLIENT=librdkafka``: :mod:`cxstream.streams.rdkafka`; on aiokafka its producer
may be the lean one, ``CX_STAGE_PRODUCER=lean``: :mod:`cxstream.streams.leanproducer`) on the
inputs of all its :class:`BatchStage` s.  For each batch it gets (``getmany``) it

1. hands each stage the records of its inputs, stages in pipeline order (ingest,
   identity, context, router); a stage runs its handler on every record, in offset
   order per partition; the handler reads and writes the stage's :class:`Table` s
   (plain dicts, one per input partition) and *buffers* its outputs with
   :meth:`Output.send` -- nothing is awaited per record;
2. turns whatever a handler raises into a :class:`~cxstream.schemas.DeadLetter` on the
   dead-letter topic (with topic, partition, offset, stage and reason), and goes on;
3. calls each stage's ``on_batch`` hook (the router saves each group's state there, at most
   every ``CX_ROUTER_SAVE_INTERVAL_MS``; a stage that leaves changes out of its tables says so
   with ``unsaved``, and its inputs' offsets are then committed only as far as its last write
   covers: :meth:`BatchRuntime._hold_unsaved`; ``on_idle`` writes them when the loop finds
   nothing to fetch, before partitions are given up in a rebalance, and before the worker stops);
4. sends the outputs in order; once they are all acknowledged, the tables' changes -- the
   *latest* value of each key written in the batch, ``None`` (a tombstone) for a deleted one --
   to each table's compacted changelog, partition for partition with the input.  A changelog is
   thus never ahead of the outputs: a table restored after a crash has not seen an input whose
   outputs may be missing, so the redelivered input is processed again (not dropped as a
   duplicate) and its outputs produced again.  It does not wait for the acks before taking the
   next batch (at most ``max_in_flight`` batches unacknowledged: the broker's produce latency
   was 60 % of the loop's time when it waited);
5. commits the input offsets of acknowledged batches, oldest first (at most every
   ``commit_interval_s``, and always after waiting for every ack before a partition is given
   up or the worker stops).

Beside the loop, a task asks the broker every ``lag_interval_s`` for the end offsets of the
partitions this worker owns and sets ``cx_consumer_lag_records`` (end offset minus the offset it
commits next: what it has not finished).  From the broker, not from the fetches, so a loop that is
stuck shows a growing lag instead of the last value it saw.

**Local delivery.**  A record a stage sends to the input of a stage marked ``local``
(context; the router only while this worker is the only one) whose partition this
worker owns is also handed to that stage in the same batch (a later stage in this pass, an
earlier one in the next pass over the stages), instead of waiting for the broker to hand it back (a fetch round trip per hop,
25 ms and more on the embedded broker).  It is still produced to its topic (the topics stay
the contract and each one can be replayed), with a header naming this runtime, and skipped
when it comes back in a fetch.  It is only handed over while this worker has consumed the
partition up to the high watermark it last saw and has none of its own records to it still
unconsumed, so a stage never sees this worker's records out of order; a record another
worker produced meanwhile can come after a local one it preceded in the log (the order of
two producers' records is an accident of timing either way).  After a crash the records come
back from the topic and are processed again, like any redelivery; after a rebalance too, by
another worker, while this one skips its own if the partition comes back to it: so a stage that
defers its table writes writes them before a partition is given up (:meth:`BatchRuntime._revoked`).

A locally delivered record is produced up to ``CX_LOCAL_ECHO_LINGER_MS`` (50 ms) after it was
handed over, together with the others handed over meanwhile: nothing waits for it, and one
produce request per 50 ms instead of one per batch saves CPU (measured on the embedded Kafka:
engine 32 % of a core at 100 records/s with the linger, 44 % without, same drain and p99;
docs/PERFORMANCE.md).  Its batch's offsets are not committed
before it is produced and acknowledged; held records are produced before any record of this
worker that goes through the broker to a stage's partition they share (so each partition's log
keeps this worker's order), before a partition is given up, and before the worker stops.

**Early sending** (``CX_EARLY_SEND_MS``, off by default).  A record for a stage that is not
handed it locally (ingest's to identity, through ``cx.resolve.v1``) is fetched back by this
worker.  Produced with the rest of the batch, it reaches the broker after the batch's last stage
has run, and usually misses the next batch's fetch: the hop costs two loop rounds.  When a stage
has buffered such a record and the stages after it have at least ``CX_EARLY_SEND_MS`` of work
left in the batch (each stage's recent cost per record times the records it has), the outputs
buffered so far are sent at once (a prefix of the batch's outputs: every partition keeps their
order) and put on the wire, and before the next batch is taken the loop lets the fetcher read
them back (:mod:`cxstream.streams.earlysend`).  A short batch's are not: its other outputs would
then wait for the early request's acknowledgement (aiokafka keeps one produce request in flight
per broker).  Their futures join the batch's, so nothing of it is committed before they are
acknowledged.  Measured, it shortens the hop for a worker past its limit and lengthens it below,
so it is off (docs/PERFORMANCE.md).

A stage handed a record before it is in the log may act on it and have its outputs produced
(an output to another partition, or to a topic no stage reads, goes at once, while the record
it came from is still held) while the record itself is lost with a ``kill -9``.  That is
harmless only where the record comes back the same: a stage may be local only if its upstream
stage's outputs are a function of records already in the log.  Identity is not local for that
reason: it reads ``cx.resolve.v1`` (events from all the ingest partitions) in log order, so
after a crash it takes the same decisions again; handed ingest's records before they were produced, it could merge two customers on an
order of events that the crash erased while the merge reached the contexts (found by
``tests/e2e/test_restart.py``: lookups by email answered 404).  The context stage's input comes
from identity (records of one ordered log, re-derived the same).  The router's comes from the
context stage and ingest (advisor events) and its decisions depend on their order, but what it
may leave behind from a lost order is an assignment its restored state does not hold: the
contact is offered again, as after any redelivery.

So delivery is at least once, as it was with Faust: a crash between (4) and (5) replays
the batch (found by ``tests/e2e/test_restart.py``: with the changes sent beside the outputs, a
``kill -9`` could keep a context's record of a contact whose routing request was still held,
and the contact never reached the router), and every consumer is idempotent (deterministic ids, per-customer dedupe, the
router's offset guard).  With ``CX_PROCESSING_GUARANTEE=exactly_once`` (4) and (5) are one
Kafka transaction per batch (the producer is transactional, the offsets go into the
transaction, the consumers read committed records only); measured in docs/PERFORMANCE.md.  A table's partition is restored from its changelog (compacted:
about one record per key) before the partition's first record is
processed (then the table's ``on_restored`` hook rebuilds what its owner derives from it).  The
restore runs beside the loop, not in the rebalance callback: the partition is paused until it is
done, so the worker keeps processing its other partitions and heartbeating, and rejoins a
rebalance that starts meanwhile in time (a restore of 100k customers took 24-40 s, past the
group's rebalance timeout: the member was expelled, and each rejoin restored everything again).
When a partition is revoked its owner's derived state is dropped at once (``on_dropped``), but the
table's data is kept aside with the changelog offset it reflects; if the partition comes back
(the group's eager protocol revokes everything on every rebalance, and most partitions return
to the same worker) only the changelog written since is read.  Stages still talk to each other
through their topics (every output is produced; one not delivered locally is fetched back
like any input), so the topics stay the contract and each one can be replayed.

Why: Faust's per-event machinery (stream iteration, an await and a ``send`` per record, a
changelog ``send`` per table write) was three quarters of the engine's CPU
(docs/PERFORMANCE.md); Faust tables cannot be written from ``stream.take`` batches.  The
low-volume agents (the learner, the demo desktops) and the timers stay on Faust.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.structs import OffsetAndMetadata

from cxstream.streams import metrics
from cxstream.streams.admin import ensure_named_topics
from cxstream.streams.assignor import GroupAssignor, fast_elsewhere, group_told
from cxstream.streams.codecs import InvalidInput, encode
from cxstream.streams.deadletter import MAX_RAW_BYTES, count_dead_letter, dead_letter_for
from cxstream.streams.earlysend import read_back, ship
from cxstream.streams.fetchpace import FetchPacer, aiokafka_fetch
from cxstream.streams.fetchsession import close_fetch_sessions, use_fetch_sessions
from cxstream.streams.groupjoin import install as one_protocol_list
from cxstream.streams.leanproducer import LeanProducer
from cxstream.streams.partitioner import CachedPartitioner
from cxstream.streams.rdkafka import RdConsumer, RdProducer, consumer_config, producer_config
from cxstream.streams.security import kafka_client_kwargs
from cxstream.streams.settings import Settings
from cxstream.streams.topics import DEAD_LETTER, MAX_STATE_RECORD_BYTES, TopicSpec, state_configs
from cxstream.streams.transport import IDEMPOTENT, outlast_outages

_local_records = functools.cache(metrics.LOCAL_RECORDS.labels)  # children looked up once: labels() costs ~1.5 µs a call
_early_sends = functools.cache(metrics.EARLY_SENDS.labels)
_read_back = functools.cache(metrics.EARLY_READ_BACK.labels)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """One input record as a handler sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class _Local:
    """A record handed to a later stage of this worker without the broker (its offset is not known yet)."""

    key: bytes | None
    value: bytes | None
    offset: int = -1
    timestamp: None = None


LOCAL_HEADER = "cx-local"
YIELD_EVERY_S = 0.05  # a stage lets the event loop run (heartbeats, timers) at least this often within a batch
BROKER_DOWN_AFTER = 2  # lag requests in a row unanswered before cx_broker_up reads 0 (one may fail in a rebalance)
MAX_LOCAL_PASSES = 4  # a batch goes through the stages at most this often for records sent back upstream


def _sent_by(headers: Any, token: bytes) -> bool:
    """True if a fetched record carries *token* in its local-delivery header."""
    if not headers:
        return False
    return any(k == LOCAL_HEADER and v == token for k, v in headers)


@dataclass(slots=True, eq=False)
class Tracked:
    """How one output record is sent, for a stage that must know more than "after the batch".

    *headers* go with the record.  *via_broker*: never handed to a local stage (it is read from
    its topic, in log order); with *local_when_alone*, only while this worker is the group's
    only one (alone, no other worker writes to the stage's partitions, and a local hand-over waits
    until the stage consumed what they held, as for any record; the record is then held and
    produced as any record delivered locally, :meth:`BatchRuntime._hold`).  *after*: produced only once those
    records are acknowledged (the batch waits for them).  The runtime fills *offset* when the
    broker acknowledges the record, and sets *acked* (also when the send failed: *offset* then
    stays None).
    """

    headers: list[tuple[str, bytes]] | None = None
    via_broker: bool = False
    local_when_alone: bool = False
    after: tuple[Tracked, ...] = ()
    offset: int | None = None
    acked: bool = False
    future: asyncio.Future[Any] | None = None

    def sent(self, fut: asyncio.Future[Any]) -> None:
        """The record was handed to the producer: *fut* is its delivery."""
        self.future = fut
        fut.add_done_callback(self.done)

    def done(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.offset = fut.result().offset
        self.acked = True


class Output:
    """A topic a stage writes to.  :meth:`send` only buffers: the stage produces after the batch."""

    __slots__ = ("_sink", "_tracked", "name")

    def __init__(
        self, name: str, sink: list[tuple[str, bytes | None, bytes | None]], tracked: dict[int, Tracked] | None = None,
    ) -> None:
        self.name = name
        self._sink = sink
        self._tracked = tracked

    async def send(self, key: bytes | None = None, value: bytes | None = None, tracked: Tracked | None = None) -> None:
        if tracked is not None:
            assert self._tracked is not None, "this output's runtime does not track records"
            self._tracked[len(self._sink)] = tracked
        self._sink.append((self.name, key, value))

    def get_topic_name(self) -> str:
        return self.name


class Table(MutableMapping[bytes, bytes]):
    """Keyed state of one stage, co-partitioned with its input: a dict per input partition.

    Reads and writes go to the partition of the record being processed (set by the
    stage), as with a Faust table; each write is remembered until the end of the batch,
    when only the latest value of each key goes to the changelog.
    """

    def __init__(self, name: str, changelog: str, partitions: int) -> None:
        self.name = name
        self.changelog = changelog
        self.partitions = partitions
        self.partition = 0
        self._data: dict[int, dict[bytes, bytes]] = {}
        self._dirty: dict[int, dict[bytes, bytes | None]] = {}
        # partitions given up, kept aside as of a changelog offset in case they come back (drop(keep_at=...))
        self._kept: dict[int, tuple[dict[bytes, bytes], int]] = {}
        #: Called with (partition, its key -> value) after the partition was restored from the changelog,
        #: before any record of it is processed: the owner rebuilds what it derives from the table
        #: (the Redis copies, which may have missed the last writes before a crash).
        self.on_restored: Callable[[int, Mapping[bytes, bytes]], None] | None = None
        #: Called with (partition, its key -> value) when the partition is given up (a rebalance), before
        #: it is dropped: the owner forgets what it derived from it.
        self.on_dropped: Callable[[int, Mapping[bytes, bytes]], None] | None = None

    def _part(self) -> dict[bytes, bytes]:
        d = self._data.get(self.partition)
        if d is None:
            d = self._data[self.partition] = {}
        return d

    def get(self, key: bytes, default: Any = None) -> Any:  # type: ignore[override]
        d = self._data.get(self.partition)
        return default if d is None else d.get(key, default)

    def __getitem__(self, key: bytes) -> bytes:
        return self._part()[key]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._part()[key] = value
        self._changed(key, value)

    def __delitem__(self, key: bytes) -> None:
        del self._part()[key]
        self._changed(key, None)

    def _changed(self, key: bytes, value: bytes | None) -> None:
        """Remember the key's latest value (None: deleted) for the changelog at the end of the batch."""
        dirty = self._dirty.get(self.partition)
        if dirty is None:
            dirty = self._dirty[self.partition] = {}
        dirty[key] = value

    def __contains__(self, key: object) -> bool:
        d = self._data.get(self.partition)
        return d is not None and key in d

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._part())

    def __len__(self) -> int:
        return len(self._part())

    def held(self) -> list[tuple[int, Mapping[bytes, bytes]]]:
        """(partition, its key -> value) of every partition this worker holds."""
        return list(self._data.items())

    def total(self) -> int:
        """Keys held over every partition this worker owns."""
        return sum(len(d) for d in self._data.values())

    def take_changes(self) -> list[tuple[int, bytes, bytes | None]]:
        """The (partition, key, value or None) written since the last call, latest value per key."""
        out = [(p, k, v) for p, d in self._dirty.items() for k, v in d.items()]
        self._dirty.clear()
        return out

    def restore(self, partition: int, key: bytes, value: bytes | None) -> None:
        d = self._data.setdefault(partition, {})
        if value is None:
            d.pop(key, None)
        else:
            d[key] = value

    def drop(self, partition: int, *, keep_at: int | None = None) -> None:
        """Give the partition up: its owner forgets what it derived from it (``on_dropped``).

        *keep_at*: the data is kept aside (not served, not in :meth:`held`) as of that changelog
        offset (the next one to read), in case the partition comes back (:meth:`take_kept`); not
        if it holds changes not yet taken for the changelog."""
        data = self._data.pop(partition, None)
        unsent = self._dirty.pop(partition, None)
        if self.on_dropped is not None:
            self.on_dropped(partition, data or {})
        if keep_at is not None and not unsent:  # (no dict: nothing in the changelog below keep_at but tombstones)
            self._kept[partition] = (data if data is not None else {}, keep_at)
        else:
            self._kept.pop(partition, None)

    def take_kept(self, partition: int) -> int:
        """Make the data kept aside for *partition* current again; returns the changelog offset to read on from (0: none kept)."""
        kept = self._kept.pop(partition, None)
        if kept is None:
            self._data.pop(partition, None)
            return 0
        self._data[partition] = kept[0]
        return kept[1]

    def discard_kept(self, keep: set[int] | frozenset[int] = frozenset()) -> None:
        """Free the data kept aside of partitions other than *keep* (they went to another worker)."""
        for partition in [p for p in self._kept if p not in keep]:
            del self._kept[partition]


Handler = Callable[[Record], Awaitable[None]]
Outputs = list[tuple[str, bytes | None, bytes | None]]


class BatchStage:
    """One stage of the hot path: its input topics, tables, handler and per-batch hook.

    A stage has no consumer of its own: the worker's :class:`BatchRuntime` fetches for
    every stage at once and hands each stage the records of its inputs.
    """

    def __init__(
        self, name: str, inputs: Sequence[str], buffer: Outputs, dead_letters: str, tables: Sequence[Table],
        *, local: bool = False, local_when_alone: bool = False, fast_path_input: bool = False, max_raw: int = MAX_RAW_BYTES,
        tracked: dict[int, Tracked] | None = None,
    ) -> None:
        self.name = name
        self.tracked = tracked  # the runtime's buffer index -> Tracked of records sent with one
        self.max_raw = max_raw  # bytes of a refused payload its dead letter keeps
        # takes records this worker sends it without the broker (its handler sees them with offset -1) ...
        self.local = local or local_when_alone
        # ... but only while this worker is the group's only member (it owns every partition of every stage input)
        self.local_when_alone = local_when_alone
        # ... or, for a stage other workers' identity fast paths send to, only while alone when one of them may
        # (BatchRuntime.fast_elsewhere)
        self.fast_path_input = fast_path_input
        self.inputs = list(inputs)
        self.tables = list(tables)
        self.handler: Handler | None = None
        self.on_batch: Callable[[], Awaitable[None]] | None = None
        # A stage that may keep changes out of its tables for a while (the router saves a group's
        # whole state at most every CX_ROUTER_SAVE_INTERVAL_MS) sets on_idle (write them to the
        # tables now) and, after each batch, unsaved: while it is True the offsets of its inputs are
        # committed only up to where its last write to its tables reached (BatchRuntime._hold_unsaved).
        # Its on_batch is called again after every batch while it is unsaved, so a write comes due
        # under load even when no input of the stage arrives.
        self.on_idle: Callable[[], Awaitable[None]] | None = None
        self.unsaved = False
        self.buffer = buffer
        self.dead_letters = dead_letters
        self.outputs: set[str] = {dead_letters}

    def output(self, name: str) -> Output:
        """A topic this stage sends to (its records are produced after each batch)."""
        self.outputs.add(name)
        return Output(name, self.buffer, self.tracked)

    async def process(self, batches: list[tuple[TopicPartition, list[Any]]]) -> int:
        """Run the handler on every record of *batches* (already in offset order per partition)."""
        handler = self.handler
        assert handler is not None, f"stage {self.name} has no handler"
        clock = time.perf_counter
        observe = metrics.STAGE_SECONDS.labels(self.name).observe
        n = 0
        waited = metrics.STAGE_WAIT.labels(self.name).observe
        now_ms = time.time() * 1000.0
        yielded = clock()
        for tp, messages in batches:
            if not messages:
                continue
            first = messages[0].timestamp
            if first is not None and first > 0:  # the oldest record of the partition's batch waited longest
                waited(max(0.0, now_ms - first) / 1000.0)
            for table in self.tables:
                table.partition = tp.partition
            topic = tp.topic
            for m in messages:
                rec = Record(topic, tp.partition, m.offset, m.key, m.value)
                started = clock()
                if started - yielded > YIELD_EVERY_S:
                    # handlers do not suspend: without this a long batch (a flood of bad input on a busy
                    # machine) starved the consumer's heartbeats, and the group rebalanced again and again
                    await asyncio.sleep(0)
                    yielded = started = clock()
                try:
                    await handler(rec)
                except InvalidInput as exc:
                    self._dead_letter(rec, exc)
                except Exception as exc:
                    log.exception("%s failed on a record; sending it to the dead-letter topic", self.name)
                    self._dead_letter(rec, InvalidInput("processing_error", f"{type(exc).__name__}: {exc}"))
                else:
                    observe(clock() - started)
            n += len(messages)
        if self.on_batch is not None:
            await self.on_batch()
        if n:
            metrics.BATCH_RECORDS.labels(self.name).observe(n)
        return n

    def _dead_letter(self, rec: Record, exc: InvalidInput) -> None:
        letter = dead_letter_for(
            exc, topic=rec.topic, partition=rec.partition, offset=rec.offset, agent=self.name, raw=rec.value, key=rec.key,
            max_raw=self.max_raw,
        )
        count_dead_letter(letter)
        self.buffer.append((self.dead_letters, letter.source_topic.encode(), encode(letter)))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runtime: BatchRuntime) -> None:
        self.runtime = runtime

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self.runtime._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self.runtime._assigned(list(assigned))


class BatchRuntime:
    """A worker's batch stages and the one consumer, one producer and one loop they share.

    One consumer-group member (group ``{app_id}.stages``) fetches every stage's inputs in
    one request: one poller instead of one per stage is a quarter of the idle round trips.
    Each fetched batch is handed to the
    stages in pipeline order, then all outputs and table changes are produced together and
    acknowledged before the offsets are committed.
    """

    def __init__(
        self, bootstrap: str, settings: Settings, *, linger_ms: int = 1, max_records: int = 4000,
        commit_interval_s: float = 0.5, max_in_flight: int = 4, local_delivery: bool = True, echo_linger_ms: int = 0,
        lag_interval_s: float = 5.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.settings = settings
        self.group_id = f"{settings.app_id}.stages"
        self.fetch_wait_ms = settings.fetch_wait_ms
        self.session_timeout_s = settings.rebalance_timeout_s
        self.linger_ms = linger_ms
        self.max_records = max_records
        self.commit_interval_s = commit_interval_s
        self.stages: list[BatchStage] = []
        self.buffer: Outputs = []
        self.tracked: dict[int, Tracked] = {}  # buffer index -> how that record is sent (Output.send(tracked=...))
        self.ready = asyncio.Event()
        self.assignments = 0  # partition assignments received so far (a stage tells a partition taken anew by it)
        # started once the stages' topics exist and the producer runs, stopped after the loop (a stage's helpers)
        self.on_start: list[Callable[[], Awaitable[None]]] = []
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        self.owned: set[TopicPartition] = set()
        self._restoring: set[TopicPartition] = set()  # assigned, paused until their tables are restored (_restore)
        self._restore_tasks: dict[asyncio.Task[None], list[TopicPartition]] = {}  # restores in progress, of which partitions
        # the stages' Kafka client (CX_STAGE_CLIENT): aiokafka's, or librdkafka's with the same interface (streams/rdkafka.py)
        self._producer: AIOKafkaProducer | RdProducer | LeanProducer | None = None
        self.consumer: AIOKafkaConsumer | RdConsumer | None = None
        self._stage_of: dict[str, BatchStage] = {}
        self._order: dict[str, int] = {}
        self._processed: dict[TopicPartition, int] = {}  # next offset to commit (its batch is acknowledged)
        self._in_flight: collections.deque[tuple[list[asyncio.Future[Any]], dict[TopicPartition, int]]] = collections.deque()
        # a batch's table changes (changelog, partition, key, value), by id of its futures list, until its outputs are acknowledged
        self._changes_for: dict[int, list[tuple[str, int, bytes, bytes | None]]] = {}
        self.max_in_flight = max_in_flight
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._committing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.lag_interval_s = lag_interval_s
        self._lag_task: asyncio.Task[None] | None = None
        self.pacer: FetchPacer | None = None  # the fetch's wait while the worker is busy (CX_FETCH_WAIT_BUSY_MS, CX_FETCH_PACE_MAX_MS; aiokafka)
        self._lag_labels: dict[TopicPartition, tuple[str, str, str]] = {}  # the cx_consumer_lag_records children set
        # where this worker began each partition it owns (its first fetched offset), until a batch of it is acknowledged
        self._begun: dict[TopicPartition, int] = {}
        # the inputs of stages that may defer writing their tables (on_idle): the position after
        # the last batch of each partition, and the position the stage's last table write covers
        self._seen: dict[TopicPartition, int] = {}
        self._saved_at: dict[TopicPartition, int] = {}
        self.local_delivery = local_delivery
        self._token = os.urandom(8)  # names this runtime's locally delivered records in their header
        self._local_headers = [(LOCAL_HEADER, self._token)]
        self._route: dict[int, tuple[int, bool]] = {}  # buffer index -> (partition, delivered locally)
        # early sending (CX_EARLY_SEND_MS): the work the stages after one must have left in the batch, s
        # (0: off); each stage's recent seconds per record; the buffer's records before _sent are
        # sent, with their delivery futures in the batch's list (None until its first early send)
        self.early_send_s = settings.early_send_ms / 1000.0
        self._cost: dict[str, float] = {}
        self._sent = 0
        self._sent_early: set[TopicPartition] = set()  # the partitions read back of the records sent early, until fetched
        self._batch_futures: list[asyncio.Future[Any]] | None = None
        # records delivered locally wait up to echo_linger_s before they are produced, with the
        # delivery-future list of their batch (which cannot settle until they are produced)
        self.echo_linger_s = max(0, echo_linger_ms) / 1000.0
        self._held: list[tuple[str, bytes | None, bytes | None, int, list[asyncio.Future[Any]], Tracked | None]] = []
        self._held_since = 0.0
        self._held_for: dict[int, int] = {}  # id(a batch's future list) -> its records still held
        self._held_parts: set[tuple[str, int]] = set()  # the (topic, partition)s they go to
        # this worker's records sent to local stages' partitions without local delivery: how many are
        # unacknowledged, and the highest acknowledged offset (local delivery waits until it is consumed)
        self._unacked: collections.Counter[TopicPartition] = collections.Counter()
        self._acked_to: dict[TopicPartition, int] = {}
        self.alone = False  # this worker owns every partition of every stage input
        # a member of the group may send identity fast events that must be read from the log (streams/assignor.py):
        # as of the last assignment; aiokafka only (librdkafka runs no fast path)
        self.fast_elsewhere = False
        self.group_told = False  # every member of the group said its mode at the last assignment (streams/assignor.py)
        self._assignor = GroupAssignor(settings.identity_fast_path_mode)
        self.broker_down_since: float | None = None  # wall-clock time since which the broker has not answered (cx_broker_up 0)
        # exactly once: each batch's outputs, table changes and input offsets in one Kafka transaction
        self.transactional = settings.processing_guarantee == "exactly_once"
        if self.transactional:
            self.echo_linger_s = 0.0  # a locally delivered record is produced in its batch's transaction
            self.early_send_s = 0.0  # read committed: nothing is fetched back before the transaction commits

    # -- declaring stages -----------------------------------------------------------------------

    def topic(self, spec: TopicSpec) -> str:
        """The full name of a catalogue topic (with the configured prefix)."""
        return self.settings.topic_prefix + spec.name

    def table(self, name: str, partitions: int) -> Table:
        """A table whose changelog is ``{app_id}-{name}-changelog`` (the name Faust gave it)."""
        return Table(name, self.table_changelog(name), partitions)

    def table_changelog(self, name: str) -> str:
        return f"{self.settings.app_id}-{name}-changelog"

    def stage(
        self, name: str, inputs: Sequence[TopicSpec], *, tables: Sequence[Table] = (), local: bool = False,
        local_when_alone: bool = False, fast_path_input: bool = False,
    ) -> BatchStage:
        """A stage consuming the catalogue topics *inputs*, dead-lettering to ``cx.dead-letter.v1``.

        Stages run in the order they are declared (declare them in pipeline order).  *local*:
        records this worker sends to *inputs* may be handed to the stage directly (module
        docstring); its handler then sees them with offset -1.  *local_when_alone*: the same,
        only while this worker owns every partition of every stage input, i.e. is the only
        worker: then it is the only producer of the stage's inputs (records from outside the
        engine aside), so the stage sees them in log order and a replay of its topic
        reproduces what it did.  *fast_path_input*: the stage's inputs get the identity fast path's
        events; with *local*, records are handed to it only while this worker is alone whenever a
        member of the group may send such events (:attr:`fast_elsewhere`), which are read from the log.
        """
        st = BatchStage(
            name, [self.topic(s) for s in inputs], self.buffer, self.topic(DEAD_LETTER), tables, local=local,
            local_when_alone=local_when_alone, fast_path_input=fast_path_input,
            max_raw=self.settings.dead_letter_max_raw_bytes, tracked=self.tracked,
        )
        for topic in st.inputs:
            if topic in self._stage_of:
                raise ValueError(f"{topic} is already the input of stage {self._stage_of[topic].name}")
            self._stage_of[topic] = st
        self._order[name] = len(self.stages)
        self.stages.append(st)
        return st

    @property
    def producer(self) -> AIOKafkaProducer | RdProducer | LeanProducer:
        if self._producer is None:
            raise RuntimeError("the batch runtime is not started")
        return self._producer

    @property
    def transactional_id(self) -> str:
        """The producer's transactional id in exactly-once mode: stable across restarts, so a restarted
        worker fences its previous incarnation and aborts what it left open (one worker per app id)."""
        return f"{self.group_id}.tx"

    @property
    def isolation_level(self) -> str:
        return "read_committed" if self.transactional else "read_uncommitted"

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    @property
    def tables(self) -> list[Table]:
        return [t for st in self.stages for t in st.tables]

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the changelogs, start the producer and the consumer, and run the loop."""
        tables = self.tables
        if tables:
            await ensure_named_topics(
                self.bootstrap, [(t.changelog, t.partitions, state_configs()) for t in tables], self.settings
            )
        for hook in self.on_start:
            await hook()
        written = {o for st in self.stages for o in st.outputs} | {t.changelog for t in tables}
        session_ms = int(self.session_timeout_s * 1000)
        lean_producer = self.settings.stage_producer == "lean" and self.settings.stage_client == "aiokafka"
        log.info("stages: Kafka client %s%s", self.settings.stage_client, " (the lean producer)" if lean_producer else "")
        if self.settings.stage_client == "librdkafka":
            await self._start_librdkafka(sorted(written), session_ms)
            return
        if lean_producer:  # (the settings allow it at least once on PLAINTEXT only)
            lean = self._producer = LeanProducer(self.bootstrap, outage_s=self.settings.broker_outage_max_s)
            await lean.start(sorted(written))
        else:
            producer = self._producer = AIOKafkaProducer(  # created here: aiokafka binds to the running loop
                bootstrap_servers=self.bootstrap, linger_ms=self.linger_ms, max_batch_size=262144, **IDEMPOTENT,
                transactional_id=self.transactional_id if self.transactional else None,
                max_request_size=MAX_STATE_RECORD_BYTES, partitioner=CachedPartitioner(), **kafka_client_kwargs(self.settings),
            )
            outlast_outages(producer, self.settings.broker_outage_max_s)
            await producer.start()
            # aiokafka's client refreshes metadata for the topics it tracks only; a topic it knew
            # from its first (all-topics) request is not tracked, so the first send to a topic
            # created later narrows every following refresh to that topic and the others' leaders
            # become unknown: their records then wait in the accumulator forever.  Track them all.
            await producer.client.set_topics(sorted(written))
        one_protocol_list()  # aiokafka joins once per assignor offered, each join a new rebalance (cxstream/streams/groupjoin.py)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_wait_ms,
            fetch_min_bytes=self.settings.fetch_min_bytes,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=session_ms,
            rebalance_timeout_ms=session_ms,
            heartbeat_interval_ms=max(500, min(3000, session_ms // 4)),
            metadata_max_age_ms=30000,
            isolation_level=self.isolation_level,
            # each member's identity fast path passed round the group; plain round robin with workers from before it
            partition_assignment_strategy=(self._assignor, RoundRobinPartitionAssignor),
            **kafka_client_kwargs(self.settings),
        )
        self.consumer.subscribe(sorted(self._stage_of), listener=_Rebalance(self))
        await self.consumer.start()
        if self.settings.fetch_sessions:
            use_fetch_sessions(self.consumer)
        self.pacer = FetchPacer(
            aiokafka_fetch(self.consumer), max_wait_ms=self.settings.fetch_pace_max_ms,
            idle=(self.settings.fetch_min_bytes, self.fetch_wait_ms), from_share=self.settings.fetch_pace_from,
            full_share=self.settings.fetch_pace_full, busy_wait_ms=self.settings.fetch_wait_busy_ms,
        )
        self.pacer.start()
        self._start_loop()

    async def _start_librdkafka(self, written: list[str], session_ms: int) -> None:
        """The same consumer and producer on librdkafka (``CX_STAGE_CLIENT=librdkafka``; streams/rdkafka.py)."""
        if self.settings.fetch_pace_max_ms:
            log.warning("stages: CX_FETCH_PACE_MAX_MS applies to aiokafka only (librdkafka fixes its fetch at start); ignored")
        consumer = self.consumer = RdConsumer(self.settings, consumer_config(
            bootstrap=self.bootstrap, group_id=self.group_id, fetch_wait_ms=self.fetch_wait_ms, session_ms=session_ms,
            isolation_level=self.isolation_level, fetch_min_bytes=self.settings.fetch_min_bytes,
        ))
        self._producer = RdProducer(self.settings, producer_config(
            bootstrap=self.bootstrap, linger_ms=self.linger_ms, max_request_bytes=MAX_STATE_RECORD_BYTES,
            delivery_timeout_s=self.settings.broker_outage_max_s,
            transactional_id=self.transactional_id if self.transactional else None,
        ), group=consumer, outage_s=self.settings.broker_outage_max_s)
        await self._producer.start(written)
        consumer.subscribe(sorted(self._stage_of), listener=_Rebalance(self))
        consumer.watch(topic for topic, st in self._stage_of.items() if st.local)
        await consumer.start()
        self._start_loop()

    def _start_loop(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cxstream.stages")
        if self.lag_interval_s > 0:
            self._lag_task = asyncio.create_task(self._measure_lag(), name="cxstream.stages.lag")

    async def stop(self) -> None:
        """Let the loop finish the batch in hand (up to 5 s), wait for every ack, commit, and close."""
        self._stopping = True
        if self.pacer is not None:
            await self.pacer.stop()
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(BaseException):
                await self._lag_task
        self._forget_lag(list(self._lag_labels))
        for restore in list(self._restore_tasks):
            restore.cancel()
            with contextlib.suppress(BaseException):
                await restore
        if self._task is not None:
            _, pending = await asyncio.wait({self._task}, timeout=5.0)
            if pending:
                self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                async with self._lock:
                    await self._save_deferred()
                    await self.settle(everything=True)
                    await self._commit_finished()
                    await self._commit(force=True)
            if isinstance(self.consumer, AIOKafkaConsumer):
                with contextlib.suppress(Exception):
                    await close_fetch_sessions(self.consumer)
            with contextlib.suppress(Exception):
                await self.consumer.stop()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await producer.stop()
        for hook in self.on_stop:
            with contextlib.suppress(Exception):
                await hook()

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self.consumer is not None
        clock = time.perf_counter
        fetch, commit = metrics.LOOP_SECONDS.labels("fetch").observe, metrics.LOOP_SECONDS.labels("commit").observe
        while not self._stopping:
            started = clock()
            wait_ms = 200
            if self._held:  # wake up in time to produce them
                due = self._held_since + self.echo_linger_s - time.monotonic()
                wait_ms = max(1, min(wait_ms, int(due * 1000) + 1))
            if self._sent_early:  # so that this batch holds them (earlysend.read_back)
                back = await read_back(self.consumer, self._sent_early)
                if back is not None:
                    _read_back("next_batch" if back else "later").inc()
                self._sent_early.clear()
            batches = await self.consumer.getmany(timeout_ms=wait_ms, max_records=self.max_records)
            if batches:
                fetch(clock() - started)
                async with self._lock:
                    await self.process(batches)
            if self._held and time.monotonic() - self._held_since >= self.echo_linger_s:
                async with self._lock:
                    await self.push_held()
            if not batches:
                async with self._lock:  # it may produce a batch's table changes: not beside a rebalance's settle
                    await self._save_deferred()
                    await self.settle()
                if self.transactional:
                    self._past_markers()
            if time.monotonic() - self._last_commit >= self.commit_interval_s and (self._committing is None or self._committing.done()):
                # In the background: a commit is a broker round trip (p50 25 ms, p99 100 ms under
                # load) that would otherwise hold up the next fetch.  One at a time.
                self._committing = asyncio.create_task(self._timed_commit(commit))

    async def _measure_lag(self) -> None:
        """Every ``lag_interval_s``: ``cx_consumer_lag_records`` of each partition this worker owns (one request per broker).

        The same request says whether the broker answers: ``cx_broker_up`` is 0 after
        :data:`BROKER_DOWN_AFTER` requests in a row went unanswered (or, owning nothing, the
        cluster's metadata could not be read), 1 after one is answered."""
        misses = 0
        metrics.BROKER_UP.set(1)
        while not self._stopping:
            await asyncio.sleep(self.lag_interval_s)
            if self.consumer is None:
                continue
            owned = sorted(self.owned)
            timeout = max(1.0, self.lag_interval_s)
            try:  # read_committed (exactly once): the last stable offsets
                if owned:
                    ends = await asyncio.wait_for(self.consumer.end_offsets(owned), timeout=timeout)
                else:
                    ends = {}
                    consumer = self.consumer
                    ping = consumer.fetch_all_metadata() if isinstance(consumer, RdConsumer) else consumer._client.fetch_all_metadata()
                    await asyncio.wait_for(ping, timeout=timeout)
            except Exception as exc:  # a rebalance, a leader moving, the broker away: measured again next time
                misses += 1
                log.debug("stages: end offsets not read (%r); lag measured next time", exc)
                if misses == BROKER_DOWN_AFTER:
                    metrics.BROKER_UP.set(0)
                    self.broker_down_since = time.time() - misses * self.lag_interval_s
                    log.warning("stages: the broker has not answered for %.0f s (%r); waiting for it", misses * self.lag_interval_s, exc)
                continue
            if misses >= BROKER_DOWN_AFTER:
                log.warning("stages: the broker answers again")
            misses = 0
            self.broker_down_since = None
            metrics.BROKER_UP.set(1)
            self.set_lag(ends)

    def set_lag(self, ends: Mapping[TopicPartition, int]) -> None:
        """Set the lag of each partition in *ends* (its end offset) that this worker still owns.

        What it has not finished: the end minus the offset it commits next (batches processed and
        acknowledged); until its first batch of the partition is acknowledged, the first offset it
        fetched, and before any fetch the consumer's position (the group's committed offset it
        resumed from, or where the reset policy put it)."""
        for tp, end in ends.items():
            if tp not in self.owned or end is None:
                continue
            done = self._processed.get(tp)
            if done is None:
                done = self._begun.get(tp)
            if done is None and (state := self._position_state(tp)) is not None:
                done = state[0]
            if done is None:
                continue
            labels = self._lag_labels.get(tp)
            if labels is None:
                labels = self._lag_labels[tp] = (self._stage_of[tp.topic].name, tp.topic, str(tp.partition))
            metrics.CONSUMER_LAG.labels(*labels).set(max(0, end - done))

    def _forget_lag(self, tps: Sequence[TopicPartition]) -> None:
        """Remove the lag series of partitions given up: another worker reports them now."""
        for tp in tps:
            labels = self._lag_labels.pop(tp, None)
            if labels is not None:
                with contextlib.suppress(KeyError):
                    metrics.CONSUMER_LAG.remove(*labels)

    def _past_markers(self) -> None:
        """Exactly once, idle: make the consumer's positions committable where they passed transaction markers.

        A transaction commits the offset after its batch's last record; its marker (a control
        record) takes the next offset, which the consumer steps over without handing it out.  Only
        a commit of the position moves the group past it (else its lag would never read 0)."""
        for tp in self.owned:
            state = self._position_state(tp)
            if state is not None and state[0] > self._processed.get(tp, 0):
                self._processed[tp] = state[0]

    def _position_state(self, tp: TopicPartition) -> tuple[int, int | None] | None:
        """The consumer's position in *tp* (the offset of the next record it hands out) and the last high
        watermark it saw (None: not seen yet); None if it has no valid position (not assigned, a rebalance)."""
        consumer = self.consumer
        if consumer is None:
            return None
        if isinstance(consumer, RdConsumer):
            return consumer.position_state(tp)
        try:
            state = consumer._subscription.subscription.assignment.state_value(tp)
        except AttributeError:  # no assignment (a rebalance in progress)
            return None
        if state is None or not state.has_valid_position:
            return None
        return state.position, state.highwater

    async def _timed_commit(self, observe: Callable[[float], None]) -> None:
        started = time.perf_counter()
        if await self._commit(force=True):
            observe(time.perf_counter() - started)

    async def _commit_finished(self) -> None:
        """Wait for the background commit in flight, if any (before a commit that must come after it)."""
        if self._committing is not None and not self._committing.done():
            with contextlib.suppress(Exception):
                await self._committing

    async def process(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Hand a fetched batch to the stages (in pipeline order) and send everything it produced.

        The sends are not waited for here: the loop goes on with the next batch while the
        broker acknowledges this one (at most ``max_in_flight`` batches unacknowledged), and a
        batch's positions become committable once all its records are acknowledged, in order.
        """
        per_stage: dict[str, list[tuple[TopicPartition, list[Any]]]] = {}
        token = self._token
        for tp, messages in batches.items():
            if tp not in self.owned or not messages:
                if messages and tp in self._restoring and self.consumer is not None:
                    self.consumer.seek(tp, messages[0].offset)  # fetched before it was paused: fetched again once restored
                continue  # revoked while this batch was in flight: the next owner reprocesses it
            if tp not in self._processed and tp not in self._begun:
                self._begun[tp] = messages[0].offset  # the lag counts from here until a batch is acknowledged
            st = self._stage_of[tp.topic]
            if st.local:  # this worker's own records, already processed when they were sent
                kept = [m for m in messages if not _sent_by(m.headers, token)]
                if len(kept) < len(messages):
                    metrics.LOCAL_RECORDS.labels(st.name, "skipped").inc(len(messages) - len(kept))
                    if not kept:
                        continue
                messages = kept
            per_stage.setdefault(st.name, []).append((tp, messages))
        started = time.perf_counter()
        if self.transactional:
            await self.producer.begin_transaction()
        await self._run_stages(per_stage)
        for st in self.stages:  # a deferred table write comes due in batches without the stage's inputs too
            if st.unsaved and st.on_batch is not None:
                await st.on_batch()
        sending = time.perf_counter()
        metrics.LOOP_SECONDS.labels("process").observe(sending - started)
        futures = await self.send_all()
        positions = self._hold_unsaved(
            {tp: messages[-1].offset + 1 for tp, messages in batches.items() if tp in self.owned and messages}
        )
        if self.transactional:  # outputs, changelogs and input offsets become visible together, or not at all
            await self.producer.send_offsets_to_transaction(
                {tp: OffsetAndMetadata(off, "") for tp, off in positions.items()}, self.group_id
            )
            await self.producer.commit_transaction()
            self._committed.update(positions)
            self._processed.update(positions)
        else:
            self._in_flight.append((futures, positions))
            await self.settle(wait=len(self._in_flight) > self.max_in_flight)
        metrics.LOOP_SECONDS.labels("flush").observe(time.perf_counter() - sending)

    def _hold_unsaved(self, positions: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """A batch's committable positions, held back where a stage's tables do not cover them yet.

        For a stage that may defer writing its tables (``on_idle``): if it wrote them after this
        batch (``unsaved`` False), the positions it has seen of all its partitions become what its
        tables cover and committable with this batch; if not, its partitions commit only up to
        what its last write covered (none before its first).  A crash then redelivers every input whose effect its changelog lacks, as if
        it had written after every batch."""
        deferring = [st for st in self.stages if st.on_idle is not None]
        if not deferring:
            return positions
        for tp, off in positions.items():
            if self._stage_of[tp.topic].on_idle is not None:
                self._seen[tp] = off
        held = dict(positions)
        for st in deferring:
            mine = [tp for tp in self._seen if tp.topic in st.inputs]
            if not st.unsaved:  # written after this batch: all it has seen becomes committable with it
                for tp in mine:
                    held[tp] = self._saved_at[tp] = self._seen[tp]
                continue
            for tp in mine:
                if tp in held:
                    saved = self._saved_at.get(tp)
                    if saved is None:
                        del held[tp]
                    else:
                        held[tp] = saved
        return held

    async def _save_deferred(self) -> None:
        """Have every stage that deferred writing its tables write them now, and produce the changes like a batch's.

        Between batches (the loop found nothing to fetch) and before the worker stops; their
        partitions' positions become committable once the changes are acknowledged."""
        if self.transactional or self._producer is None:  # (a stage does not defer under exactly once: each batch is one transaction)
            return
        for st in self.stages:
            if not st.unsaved or st.on_idle is None:
                continue
            await st.on_idle()
            st.unsaved = False
            covered = {tp: off for tp, off in self._seen.items() if tp.topic in st.inputs and tp in self.owned}
            self._saved_at.update(covered)
            futures = await self.send_all()
            self._in_flight.append((futures, covered))

    async def _run_stages(self, work: dict[str, list[tuple[TopicPartition, list[Any]]]]) -> None:
        """Run the stages in order on *work*, with what they deliver locally to each other.

        Records for a later stage join its work in the same pass; records sent back to an
        earlier stage (or the same one: a merge moves a context to another key) wait for the
        next pass, at most ``MAX_LOCAL_PASSES`` passes (after that they go through the broker).
        """
        via_broker: set[TopicPartition] = set()
        clock, early = time.perf_counter, bool(self.early_send_s) and self._producer is not None
        for n in range(MAX_LOCAL_PASSES):
            now: dict[str, dict[TopicPartition, list[Any]]] = {}
            later: dict[str, dict[TopicPartition, list[Any]]] = {}
            for i, st in enumerate(self.stages):
                mine = work.get(st.name, [])
                handed = now.pop(st.name, None)
                if handed:
                    mine = mine + list(handed.items())
                if not mine:
                    continue
                mark = len(self.buffer)
                if not early:
                    await st.process(mine)
                else:
                    started = clock()
                    records = await st.process(mine)
                    if records:  # the stage's recent cost per record, for _work_left
                        per = (clock() - started) / records
                        cost = self._cost.get(st.name)
                        self._cost[st.name] = per if cost is None else cost + 0.1 * (per - cost)
                if self.local_delivery and self._producer is not None:
                    self._deliver_locally(mark, i, now, later, via_broker, last_pass=n == MAX_LOCAL_PASSES - 1)
                if early and len(self.buffer) > mark and self._work_left(i, work, now) >= self.early_send_s:
                    await self._send_early(mark)
            if not later:
                return
            work = {name: list(parts.items()) for name, parts in later.items()}

    def _deliver_locally(
        self, mark: int, i: int, now: dict[str, dict[TopicPartition, list[Any]]],
        later: dict[str, dict[TopicPartition, list[Any]]], via_broker: set[TopicPartition], *, last_pass: bool,
    ) -> None:
        """Decide, for each record stage *i* buffered from *mark* on, whether a local stage takes it now."""
        buf, tracked = self.buffer, self.tracked
        caught_up: dict[TopicPartition, bool] = {}  # nothing it depends on changes during this call
        for idx in range(mark, len(buf)):
            topic, key, value = buf[idx]
            target = self._stage_of.get(topic)
            if target is None or not target.local or key is None:
                continue
            partition = self._partition_for(topic, key)
            if partition is None:
                continue  # no metadata yet: the producer partitions it
            tp = TopicPartition(topic, partition)
            j = self._order[target.name]
            local = not (last_pass and j <= i) and tp not in via_broker and (
                self.alone or not (target.local_when_alone or (target.fast_path_input and self.fast_elsewhere))
            )
            if local and idx in tracked:
                how = tracked[idx]
                local = not how.via_broker or (self.alone and how.local_when_alone)
            if local:
                ok = caught_up.get(tp)
                if ok is None:
                    ok = caught_up[tp] = self._caught_up(tp)
                local = ok
            self._route[idx] = (partition, local)
            if not local:
                via_broker.add(tp)  # and every later record to it in this batch: they stay in order
                _local_records(target.name, "via_broker").inc()
                continue
            _local_records(target.name, "delivered").inc()
            (now if j > i else later).setdefault(target.name, {}).setdefault(tp, []).append(_Local(key, value))

    def _work_left(
        self, i: int, work: dict[str, list[tuple[TopicPartition, list[Any]]]], now: dict[str, dict[TopicPartition, list[Any]]],
    ) -> float:
        """The seconds the stages after stage *i* are expected to take on what they have in this pass (their recent cost per record)."""
        left = 0.0
        for st in self.stages[i + 1 :]:
            records = sum(len(messages) for _, messages in work.get(st.name, ()))
            records += sum(len(messages) for messages in now.get(st.name, {}).values())
            left += records * self._cost.get(st.name, 0.0)
        return left

    async def _send_early(self, mark: int) -> None:
        """If the records a stage buffered from *mark* on include one that a stage of this worker reads back
        through the broker, send the batch's outputs buffered so far and have them put on the wire now.

        Sent in buffer order, so every partition keeps the batch's order; the rest of the batch
        follows in :meth:`send_all`.  The next batch then holds the records read back
        (:mod:`cxstream.streams.earlysend`)."""
        buf, route, stage_of = self.buffer, self._route, self._stage_of
        back: set[TopicPartition] = set()  # the partitions of those records, where the producer has them
        for idx in range(mark, len(buf)):
            topic, key, _ = buf[idx]
            if topic not in stage_of:
                continue
            where = route.get(idx)
            if where is None:  # not a local stage: the producer partitions it
                partition = self._partition_for(topic, key) if key is not None else None
                if partition is not None:
                    back.add(TopicPartition(topic, partition))
            elif not where[1]:
                back.add(TopicPartition(topic, where[0]))
        if not back:
            return
        if self._batch_futures is None:
            self._batch_futures = []
        await self._send_buffered(self._batch_futures)
        _early_sends(await ship(self.producer, back)).inc()
        self._sent_early |= back

    def _partition_for(self, topic: str, key: bytes) -> int | None:
        """The partition the producer's default partitioner gives *key* (murmur2, as Kafka's clients do)."""
        producer = self.producer
        if isinstance(producer, (RdProducer, LeanProducer)):
            return producer.partition_for(topic, key)
        parts = producer.client.cluster.partitions_for_topic(topic)
        if not parts:
            return None
        ordered = sorted(parts)
        return int(producer._partitioner(key, ordered, ordered))

    def committed_offset(self, tp: TopicPartition) -> int | None:
        """The offset this worker last committed for *tp*, if it owns *tp* (else None: ask the group)."""
        return self._committed.get(tp) if tp in self.owned else None

    def _caught_up(self, tp: TopicPartition) -> bool:
        """True if this worker owns *tp*, consumed it to the last high watermark seen and has no own record to it pending."""
        if tp not in self.owned or self._unacked[tp]:
            return False
        state = self._position_state(tp)
        if state is None:
            return False
        position, highwater = state
        return highwater is not None and position >= highwater and position > self._acked_to.get(tp, -1)

    def _broker_acked(self, tp: TopicPartition, fut: asyncio.Future[Any]) -> None:
        self._unacked[tp] -= 1
        if not fut.cancelled() and fut.exception() is None:
            offset = fut.result().offset
            if offset > self._acked_to.get(tp, -1):
                self._acked_to[tp] = offset

    async def send_now(self, topic: str, value: bytes, key: bytes) -> None:
        """Produce one record outside the batches (a timer's) and wait for its acknowledgement.

        Between two batches, and counted like a batch's record that is not delivered locally: a
        local stage's partition is not handed records locally again until this one is consumed,
        so the stage sees it in log order.
        """
        async with self._lock:
            target = self._stage_of.get(topic)
            partition = self._partition_for(topic, key) if target is not None and target.local else None
            if self.transactional:
                await self.producer.begin_transaction()
            if partition is None:
                fut = await self.producer.send(topic, value, key=key)
            else:
                fut = await self._send_via_broker(topic, key, value, partition)
            if self.transactional:
                await self.producer.commit_transaction()
        await fut

    async def _send_via_broker(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int, headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        """Send a record to a local stage's partition that is not delivered locally, counted until acknowledged.

        Records still held for its partition (delivered locally, not yet produced) go first, so
        every partition's log keeps this worker's order."""
        if (topic, partition) in self._held_parts:
            await self.push_held()
        tp = TopicPartition(topic, partition)
        self._unacked[tp] += 1
        fut = await self.producer.send(topic, value, key=key, partition=partition, headers=headers)
        fut.add_done_callback(functools.partial(self._broker_acked, tp))
        return fut

    async def send_all(self) -> list[asyncio.Future[Any]]:
        """Send the buffered outputs; returns the delivery futures.

        The tables' changes (latest value per key) are taken too: in a transaction they are sent
        now, otherwise once the outputs are acknowledged (:meth:`settle`), into the same list."""
        producer = self.producer
        futures, self._batch_futures = (self._batch_futures if self._batch_futures is not None else []), None
        while len(self.buffer) > self._sent:  # (again if records came while it sent: all go with this batch)
            await self._send_buffered(futures)
        self.buffer[:], self._route, self._sent = [], {}, 0
        self.tracked.clear()  # (cleared, not replaced: the stages' outputs hold this dict)
        if self._held and not self.echo_linger_s:
            await self.push_held()
        changes = [(table.changelog, *change) for table in self.tables for change in table.take_changes()]
        if self.transactional:  # one transaction: the changes cannot be seen without the outputs
            for changelog, partition, key, value in changes:
                futures.append(await producer.send(changelog, value, key=key, partition=partition))
        elif changes:
            # produced by settle() once every output of the batch is acknowledged: a table restored
            # after a crash is never ahead of the outputs, or a redelivered input would be taken for
            # a duplicate and what it should have produced would be lost
            self._changes_for[id(futures)] = changes
        return futures

    async def _send_buffered(self, futures: list[asyncio.Future[Any]]) -> None:
        """Send the buffer's records not sent yet (from ``_sent`` on), their delivery futures into *futures*."""
        producer, buf, route, tracked = self.producer, self.buffer, self._route, self.tracked
        start, end = self._sent, len(buf)
        self._sent = end  # (first: a record added while these are sent is left to the next call, see send_all)
        for idx in range(start, end):
            topic, key, value = buf[idx]
            where = route.get(idx)
            how = tracked.get(idx)
            if how is not None and not (where is not None and where[1]):
                futures.append(await self._send_tracked(topic, key, value, how, where))
                continue
            if where is None:
                if self._held and topic in self._stage_of:  # partitioned by the producer: may share one
                    await self.push_held()
                futures.append(await producer.send(topic, value, key=key))
                continue
            partition, local = where
            if local:  # already processed here: the header says to skip it when it is fetched back
                self._hold(topic, key, value, partition, futures, how)
                continue
            futures.append(await self._send_via_broker(topic, key, value, partition))

    async def _send_tracked(
        self, topic: str, key: bytes | None, value: bytes | None, how: Tracked, where: tuple[int, bool] | None,
    ) -> asyncio.Future[Any]:
        """Send a record that a stage sent with a :class:`Tracked` and that was not delivered locally.

        One delivered locally (:attr:`Tracked.local_when_alone`) is held as any such record
        (:meth:`_hold`); a record to be produced after it pushes the held records first."""
        if self._held and any(after.future is None and not after.acked for after in how.after):
            await self.push_held()
        for after in how.after:
            if not after.acked and after.future is not None:
                metrics.TRACKED_WAITS.inc()
                with contextlib.suppress(Exception):  # a failed send fails its own batch; this one goes on
                    await asyncio.shield(after.future)
        partition = where[0] if where is not None else None
        if partition is None and topic in self._stage_of and self._stage_of[topic].local:
            partition = self._partition_for(topic, key) if key is not None else None
        if partition is not None:  # a local stage's partition: counted, so that no local record overtakes it
            fut = await self._send_via_broker(topic, key, value, partition, how.headers)
        else:
            if self._held and topic in self._stage_of:
                await self.push_held()
            fut = await self.producer.send(topic, value, key=key, headers=how.headers)
        how.sent(fut)
        return fut

    def _hold(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int, futures: list[asyncio.Future[Any]],
        how: Tracked | None = None,
    ) -> None:
        """Keep a locally delivered record for up to ``echo_linger_s`` before producing it (0: until the end of the batch).

        It was processed when it was handed over, so nothing waits for it; produced later, the
        records of several batches go to the broker as one produce request, one record batch per
        partition (fewer requests: less CPU in the engine and the broker).  A :class:`Tracked`
        record (*how*) gets its future when it is produced; one to be sent after it pushes the
        held records first (:meth:`_send_tracked`)."""
        if not self._held:
            self._held_since = time.monotonic()
        self._held.append((topic, key, value, partition, futures, how))
        self._held_parts.add((topic, partition))
        self._held_for[id(futures)] = self._held_for.get(id(futures), 0) + 1

    async def push_held(self) -> None:
        """Produce the held records, in the order they were handed over."""
        held, self._held = self._held, []
        self._held_parts.clear()
        if held:
            metrics.LOCAL_ECHO_PUSHED.observe(len(held))
        for topic, key, value, partition, futures, how in held:
            headers = self._local_headers if how is None else [*(how.headers or ()), *self._local_headers]
            fut = await self.producer.send(topic, value, key=key, partition=partition, headers=headers)
            if how is not None:
                how.sent(fut)
            futures.append(fut)
            left = self._held_for[id(futures)] - 1
            if left:
                self._held_for[id(futures)] = left
            else:
                del self._held_for[id(futures)]

    async def settle(self, *, wait: bool = False, everything: bool = False) -> None:
        """Make the positions of acknowledged batches committable, oldest first.

        *wait*: wait for the oldest batch in flight; *everything*: for all of them.  A failed
        delivery raises (the loop then dies and the engine stops: no offset past it is committed).
        """
        while self._in_flight:
            futures, positions = self._in_flight[0]
            if id(futures) in self._held_for:  # some of its records are still held: not yet produced
                if not (wait or everything):
                    return
                await self.push_held()
            if not all(f.done() for f in futures):
                if not (wait or everything):
                    return
                await asyncio.gather(*futures)
            for f in futures:
                f.result()
            changes = self._changes_for.pop(id(futures), None)
            if changes:  # its outputs are in the log: now its tables' changes, then it is done
                for changelog, partition, key, value in changes:
                    futures.append(await self.producer.send(changelog, value, key=key, partition=partition))
                continue
            wait = False
            self._in_flight.popleft()
            for tp, off in positions.items():
                if tp in self.owned:
                    self._processed[tp] = off

    async def _commit(self, force: bool = False) -> bool:
        """Commit the positions processed since the last commit (at most every ``commit_interval_s``); True if it did."""
        if self.consumer is None:
            return False
        now = time.monotonic()
        if not force and now - self._last_commit < self.commit_interval_s:
            return False
        self._last_commit = now
        due = {tp: off for tp, off in self._processed.items() if self._committed.get(tp) != off and tp in self.owned}
        if not due:
            return False
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in due.items()})
        except Exception as exc:  # a rebalance in progress, the coordinator moved: the next commit retries
            log.warning("stages: commit failed (%r); will retry", exc)
            return False
        self._committed.update(due)
        return True

    # -- rebalancing ----------------------------------------------------------------------------

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        """Give partitions up: finish and commit what is in flight, then drop (or keep aside) their tables.

        A table partition is kept aside as of its changelog's end offset when every change of
        this worker reached the changelog (the settle succeeded and the end offsets were read):
        if it comes back, only what was written since is read.  Otherwise it is dropped.

        A stage that defers its table writes (the router) writes them first, as when the worker
        stops: what it applied of records handed to it locally is in no log but its changelog.
        Their upstream offsets are committed once they are produced, and their copies in its
        input carry this worker's token, so if the partition comes back here they are skipped
        as already applied: a write dropped with the partition would lose them (an advisor's
        ``done`` never applied leaves the advisor busy for good)."""
        async with self._lock:  # a batch in progress finishes (and flushes) first
            settled = False
            with contextlib.suppress(Exception):
                await self._save_deferred()
                await self.settle(everything=True)
                settled = not self._in_flight
                await self._commit_finished()
                await self._commit(force=True)
            self.alone = False
            self._forget_lag(revoked)
            gone = set(revoked)
            for task, tps in list(self._restore_tasks.items()):
                if gone.intersection(tps):  # a restore in progress of partitions given up: stopped (no more writes to them)
                    task.cancel()
                    del self._restore_tasks[task]
                    if rest := [tp for tp in tps if tp not in gone]:  # (the eager protocol revokes everything)
                        self._start_restore(rest)
            self._restoring.difference_update(gone)
            metrics.PARTITIONS_RESTORING.set(len(self._restoring))
            owned = self._table_partitions(tp for tp in revoked if tp in self.owned)
            ends = await self._changelog_ends(owned) if settled and owned else {}
            for tp in revoked:
                self.owned.discard(tp)
                self._begun.pop(tp, None)
                self._processed.pop(tp, None)
                self._committed.pop(tp, None)
                self._seen.pop(tp, None)
                self._saved_at.pop(tp, None)
            for table, partition in self._table_partitions(revoked):
                table.drop(partition, keep_at=ends.get(TopicPartition(table.changelog, partition)))
            metrics.PARTITIONS_OWNED.set(len(self.owned))
            metrics.ALONE.set(0)

    def _table_partitions(self, tps: Iterable[TopicPartition]) -> list[tuple[Table, int]]:
        """The (table, partition)s of the stage inputs *tps*, each once."""
        found = {(id(table), tp.partition): (table, tp.partition) for tp in tps for table in self._stage_of[tp.topic].tables}
        return list(found.values())

    async def _changelog_ends(self, wanted: list[tuple[Table, int]]) -> dict[TopicPartition, int]:
        """The end offsets of the changelog partitions of *wanted* ({} if the broker does not answer in time)."""
        tps = [TopicPartition(t.changelog, p) for t, p in wanted if p < t.partitions]
        reader = self._reader()
        try:
            await asyncio.wait_for(reader.start(), timeout=self.session_timeout_s)
            return dict(await asyncio.wait_for(reader.end_offsets(tps), timeout=self.session_timeout_s))
        except Exception as exc:  # the tables are restored from the start if they come back
            log.info("stages: changelog end offsets not read (%r); partitions given up are not kept aside", exc)
            return {}
        finally:
            with contextlib.suppress(Exception):
                await reader.stop()

    async def _assigned(self, assigned: list[TopicPartition]) -> None:
        """Take partitions: those without tables at once; the others once their tables are restored, beside the loop.

        The callback returns at once (the restore must not hold up the group: a member still in
        its callback when the next rebalance starts is expelled); the partitions wait paused."""
        async with self._lock:
            self.assignments += 1
            metrics.REBALANCES.inc()
            if self.settings.stage_client == "aiokafka":
                modes = self._assignor.take()
                self.fast_elsewhere, self.group_told = fast_elsewhere(modes), group_told(modes)
                metrics.FAST_ELSEWHERE.set(int(self.fast_elsewhere))
            new = [tp for tp in assigned if tp not in self.owned and tp not in self._restoring]
            now = set(self.owned) | set(self._restoring) | set(new)
            for table in self.tables:  # data kept aside of partitions that went elsewhere: freed
                table.discard_kept({p for t, p in self._table_partitions(now) if t is table})
            stateful = [tp for tp in new if self._stage_of[tp.topic].tables]
            self.owned.update(tp for tp in new if tp not in stateful)
            if stateful:
                assert self.consumer is not None
                self.consumer.pause(*stateful)
                self._restoring.update(stateful)
                metrics.PARTITIONS_RESTORING.set(len(self._restoring))
                self._start_restore(stateful)
            self.alone = self._owns_everything()
            metrics.PARTITIONS_OWNED.set(len(self.owned))
            metrics.ALONE.set(int(self.alone))
        if not self._restoring:
            self.ready.set()

    def _start_restore(self, tps: list[TopicPartition]) -> None:
        task = asyncio.create_task(self._restore(tps), name="cxstream.stages.restore")
        self._restore_tasks[task] = tps
        task.add_done_callback(lambda done: self._restore_tasks.pop(done, None))

    async def _restore(self, tps: list[TopicPartition]) -> None:
        """Restore the tables of *tps* (assigned, paused), then own and resume those still assigned.

        A failure (the broker away) is retried: the partitions stay paused meanwhile."""
        started = time.perf_counter()
        delay = 0.5
        while True:
            tps = [tp for tp in tps if tp in self._restoring]  # a rebalance may have taken some away
            if not tps:
                return
            wanted = self._table_partitions(tps)
            caught_up: list[str] = []
            try:
                restored = await self.recover(wanted, caught_up)
                break
            except Exception as exc:
                log.warning("stages: restore of %d partitions failed (%r); retrying in %.1f s", len(tps), exc, delay)
                for table, partition in wanted:
                    table.drop(partition)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
        async with self._lock:
            done = [tp for tp in tps if tp in self._restoring]
            if not done:
                return
            for table, partition in self._table_partitions(done):
                if table.on_restored is not None:
                    table.on_restored(partition, table._data.get(partition, {}))
            self._restoring.difference_update(done)
            self.owned.update(done)
            assert self.consumer is not None
            with contextlib.suppress(Exception):  # taken away meanwhile: the next assignment says what to resume
                self.consumer.resume(*done)
            self.alone = self._owns_everything()
            metrics.PARTITIONS_OWNED.set(len(self.owned))
            metrics.PARTITIONS_RESTORING.set(len(self._restoring))
            metrics.ALONE.set(int(self.alone))
            took = time.perf_counter() - started
            metrics.RESTORE_SECONDS.observe(took)
            anew = sorted({f"{t.name}[{p}]" for t, p in wanted} - set(caught_up))
            log.info(
                "stages: restored %d table records in %.2f s; from the start: %s; caught up from where they were kept: %s",
                restored, took, ", ".join(anew) or "none", ", ".join(sorted(caught_up)) or "none",
            )
        if not self._restoring:
            self.ready.set()

    def _owns_everything(self) -> bool:
        """True if this worker owns every partition of every stage input (so it is the group's only member)."""
        if self.consumer is None:
            return False
        for topic in self._stage_of:
            parts = self.consumer.partitions_for_topic(topic)
            if not parts or any(TopicPartition(topic, p) not in self.owned for p in parts):
                return False
        return True

    async def recover(self, wanted: list[tuple[Table, int]], caught_up: list[str] | None = None) -> int:
        """Rebuild tables' partitions from their changelogs (read up to the end offset found at start); returns the records read.

        A partition whose data was kept aside (:meth:`Table.drop`) is read on from where it was
        kept; its name (``table[partition]``) is added to *caught_up*."""
        by_tp = {TopicPartition(t.changelog, p): t for t, p in wanted if p < t.partitions}
        if not by_tp:
            return 0
        # from the offset its data kept aside reflects (what was written since), else from the start
        start = {tp: t.take_kept(tp.partition) for tp, t in by_tp.items()}
        reader = self._reader()
        await reader.start()
        n = 0
        try:
            tps = list(by_tp)
            reader.assign(tps)
            ends = await reader.end_offsets(tps)
            for tp in tps:
                if start[tp] > ends[tp]:  # the changelog was deleted and made again: nothing kept holds
                    by_tp[tp].take_kept(tp.partition)
                    start[tp] = 0
                if start[tp] and caught_up is not None:
                    caught_up.append(f"{by_tp[tp].name}[{tp.partition}]")
            todo = {tp for tp in tps if ends[tp] > start[tp]}
            for tp in todo:
                reader.seek(tp, start[tp])
            while todo:
                got = await reader.getmany(*todo, timeout_ms=1000, max_records=50000)
                for tp, messages in got.items():
                    table = by_tp[tp]
                    for m in messages:
                        if m.offset >= ends[tp]:
                            break
                        if m.key is not None:
                            table.restore(tp.partition, m.key, m.value)
                            n += 1
                for tp in list(todo):
                    if await reader.position(tp) >= ends[tp]:
                        todo.discard(tp)
        finally:
            await reader.stop()
        return n

    def _reader(self) -> AIOKafkaConsumer:
        """A group-less consumer of changelogs (restores, end offsets)."""
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
            fetch_max_wait_ms=500, max_partition_fetch_bytes=8 * 1024 * 1024, isolation_level=self.isolation_level,
            **kafka_client_kwargs(self.settings),
        )
