"""The batch stages' consumer and producer on librdkafka (confluent-kafka): ``CX_STAGE_CLIENT=librdkafka``.

:class:`RdConsumer` and :class:`RdProducer` offer :class:`~cxstream.streams.batch.BatchRuntime`
the part of aiokafka's ``AIOKafkaConsumer`` / ``AIOKafkaProducer`` it uses (``getmany``,
``seek``, ``pause``, ``commit``, ``end_offsets``, ``send``, transactions), with aiokafka's
:class:`~aiokafka.TopicPartition` as keys, so the runtime's logic is the same with either client.

Why: with aiokafka the fetcher, the producer's sender and the protocol's encoding run as Python
coroutines on the engine's event loop, and at the engine's usual rates its CPU went per loop round
rather than per record (~2-3 ms of aiokafka per round, docs/PERFORMANCE.md).  librdkafka does the
network I/O and the protocol in its own C threads, without the GIL: relaying one hop cost
0.15-0.29 ms of CPU per record against 0.56-1.05 ms with aiokafka (``bench/transport/hop.py``).

How it meets asyncio:

* **The consumer's thread.**  Every call into the librdkafka consumer runs on one thread of its
  own, which serves a queue of them in order: ``consume`` (one per ``getmany``, the loop awaiting
  it; librdkafka prefetches meanwhile), commits, pauses, resumes, seeks.  Only what the loop asked
  for is taken from librdkafka, and the positions and high watermarks of the local stages'
  partitions are read right after each ``consume`` (:meth:`RdConsumer.position_state`): local
  delivery relies on them standing still during a batch, as aiokafka's do.
* **Rebalances.**  librdkafka calls the assign/revoke callbacks inside ``consume``, on that
  thread; each assigns (or unassigns) the partitions there and runs the runtime's listener on the
  event loop, the thread serving the calls the listener makes meanwhile: the revoked partitions
  are settled and committed before librdkafka gives them up, as aiokafka's listener does.
* **Deliveries.**  ``Producer.produce`` only queues (no I/O); a thread serves the delivery
  reports (``poll``) and resolves their futures on the event loop, one hand-over per ``poll``.
  Records librdkafka fails because a restarted broker does not know their partition yet are held
  and produced again in order (:meth:`RdProducer._hold_back`).
* **Other requests**: end offsets and the broker check with the consumer's own client (not an
  admin client: :meth:`RdConsumer.end_offsets` says why), the producer's metadata and
  transactions, each client's on a thread of its own.

The broker outage setting becomes librdkafka's ``message.timeout.ms`` (how long a record may wait
for delivery); keys are partitioned with Kafka's murmur2 (``partitioner=murmur2_random``), as the
engine's other (aiokafka) producers and Java's do.

Measured on the engine (docs/PERFORMANCE.md, "Levers measured"; the runs in
bench/results/performance-history.md, "December 4, afternoon"): the idle engine's CPU falls
by more than half, but under load the broker works harder (the producer sends one produce request
per partition, and the consumer costs it more too), and on a 2-core machine that outweighed the
engine's saving: aiokafka stays the default.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import queue
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import confluent_kafka
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from cxstream.streams.partitioner import key_hash
from cxstream.streams.security import librdkafka_config
from cxstream.streams.settings import Settings

log = logging.getLogger(__name__)

#: librdkafka's "no offset" (an invalid position or watermark)
_NO_OFFSET = confluent_kafka.OFFSET_INVALID


class ClientError(RuntimeError):
    """A librdkafka request failed; the message says which and why."""


class Fetched(NamedTuple):
    """One fetched record, with the attributes the batch stages read of aiokafka's ``ConsumerRecord``."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None
    headers: Sequence[tuple[str, bytes]] | None


class Delivered(NamedTuple):
    """A delivery report: where the record was written (aiokafka's ``RecordMetadata``'s fields the runtime reads)."""

    topic: str
    partition: int
    offset: int


class _Requests:
    """A thread of its own for a client's blocking requests (named for profiles)."""

    def __init__(self, name: str) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"cx-rdkafka-{name}-requests")

    async def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    def shutdown(self, wait: bool = False) -> None:
        """Stop taking requests; *wait* for the one running (those queued are dropped)."""
        self.pool.shutdown(wait=wait, cancel_futures=True)


def _raise_for(what: str, result: Iterable[Any]) -> None:
    """Raise :class:`ClientError` if a per-partition result of *what* carries an error."""
    failed = [f"{p.topic}[{p.partition}]: {p.error}" for p in result if getattr(p, "error", None) is not None]
    if failed:
        raise ClientError(f"{what} failed for {', '.join(failed)}")


_OFFSETS_TIMEOUT_S = 5.0  # an offsets or metadata request unanswered (a broker restart) is not waited for past the next measurement


class RdConsumer:
    """A consumer-group member on librdkafka with the part of ``AIOKafkaConsumer``'s interface the runtime uses.

    Every call into the librdkafka consumer but the read-only :meth:`position_state` runs on one
    thread, which serves a queue of them in order: ``consume`` (:meth:`getmany`), commits, pauses,
    resumes and seeks.  librdkafka runs the rebalance callbacks inside ``consume``; the thread then
    serves the queue while the listener runs on the event loop, so the listener's own calls (the
    commit of what was processed, the pause of partitions whose tables it restores) are made
    from inside the callback, where librdkafka expects them (a ``pause`` from the loop's thread
    during an assignment hung the engine).  End offsets and the broker check are requests of the
    consumer's own client on a thread of their own (:meth:`end_offsets`).
    """

    def __init__(self, settings: Settings, config: Mapping[str, Any]) -> None:
        self.settings = settings  # its transport security (librdkafka_config)
        self.config = dict(config)
        self._consumer: confluent_kafka.Consumer | None = None
        # end offsets and the broker check, one request at a time, off the loop and the consumer's thread
        self._offsets = _Requests("offsets")
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._topics: list[str] = []
        self._listener: Any = None
        self._partitions: dict[str, set[int]] = {}
        self._tps: dict[tuple[str, int], TopicPartition] = {}
        self._closed = False
        # the partitions of the watched topics (:meth:`watch`) this member is assigned, and their
        # (position, high watermark) as of the last consume: librdkafka's fetches go on in its own
        # threads and move the high watermark while the loop processes a batch
        self._watched_topics: frozenset[str] = frozenset()
        self._watched: list[confluent_kafka.TopicPartition] = []
        self._states: dict[TopicPartition, tuple[int, int | None]] = {}
        # where each watched partition's consumption starts (its committed offset when assigned): librdkafka
        # has no position for a partition until a record of it was consumed
        self._starts: dict[tuple[str, int], int] = {}
        self._paused: set[TopicPartition] = set()  # not fetched: their cached high watermark stands still

    # -- lifecycle

    def watch(self, topics: Iterable[str]) -> None:
        """Take :meth:`position_state` of *topics*' partitions as of each ``consume`` (the stages that take records locally)."""
        self._watched_topics = frozenset(topics)

    def subscribe(self, topics: Sequence[str], listener: Any) -> None:
        """Subscribe to *topics* when started; *listener*'s ``on_partitions_revoked`` / ``_assigned`` run on the loop."""
        self._topics = list(topics)
        self._listener = listener

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer = confluent_kafka.Consumer({**librdkafka_config(self.settings), **self.config})
        self._thread = threading.Thread(target=self._serve, name="cx-rdkafka-consumer", daemon=True)
        self._thread.start()
        await self._call(self._read_partitions, self._topics)
        await self._call(self.consumer.subscribe, self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                         on_lost=self._on_lost)

    async def stop(self) -> None:
        """Leave the group (the listener's revoke runs first, as on any rebalance) and close."""
        if self._consumer is None or self._closed:
            return
        try:
            # no offsets request may run on the client once it is closed
            await asyncio.get_running_loop().run_in_executor(None, functools.partial(self._offsets.shutdown, wait=True))
            await self._call(self._close)
        finally:
            self._calls.put(_STOP)
            if self._thread is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)

    def _close(self) -> None:
        self._closed = True
        self.consumer.close()

    @property
    def consumer(self) -> confluent_kafka.Consumer:
        if self._consumer is None:
            raise RuntimeError("the consumer is not started")
        return self._consumer

    # -- the consumer's thread

    def _serve(self) -> None:
        while True:
            call = self._calls.get()
            if call is _STOP:
                return
            if call is not None:  # (None: a listener finished)
                self._execute(call)

    def _execute(self, call: tuple[Any, asyncio.Future[Any] | None]) -> None:
        fn, fut = call
        try:
            result = fn()
        except BaseException as exc:  # handed to the caller (or logged: nobody waits for a pause)
            if fut is None:
                log.warning("stages: consumer call %r failed: %r", fn, exc)
            else:
                self._settle(fut, None, exc)
            return
        if fut is not None:
            self._settle(fut, result, None)

    def _settle(self, fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed
            self._loop.call_soon_threadsafe(_set_future, fut, result, exc)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on the consumer's thread; a future of its result."""
        assert self._loop is not None
        fut = self._loop.create_future()
        self._calls.put((functools.partial(fn, *args, **kwargs), fut))
        return fut

    def _post(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the consumer's thread before its next ``consume``, nobody waiting."""
        self._calls.put((functools.partial(fn, *args), None))

    # -- fetching

    def _tp(self, topic: str, partition: int) -> TopicPartition:
        tp = self._tps.get((topic, partition))
        if tp is None:
            tp = self._tps[(topic, partition)] = TopicPartition(topic, partition)
        return tp

    def _consume(self, max_records: int, timeout_s: float) -> dict[TopicPartition, list[Fetched]]:
        if self._closed:
            return {}
        # consume(n, timeout) waits until it has n records or the timeout passed: wait for one, then take what is there
        messages = self.consumer.consume(1, timeout_s)
        if messages and max_records > 1:
            messages += self.consumer.consume(max_records - 1, 0)
        batches: dict[TopicPartition, list[Fetched]] = {}
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() != confluent_kafka.KafkaError._PARTITION_EOF:
                    log.warning("stages: fetch error on %s[%s]: %s", m.topic(), m.partition(), err)
                continue
            tp = self._tp(m.topic(), m.partition())  # type: ignore[arg-type]  # (set on a record without error)
            kind, ts = m.timestamp()
            fetched = Fetched(
                m.offset(), m.key(), m.value(), ts if kind != confluent_kafka.TIMESTAMP_NOT_AVAILABLE else None,  # type: ignore[arg-type]
                m.headers(),  # type: ignore[arg-type]  # (a list of pairs when consumed)
            )
            got = batches.get(tp)
            if got is None:
                batches[tp] = [fetched]
            else:
                got.append(fetched)
        if self._watched:
            self._states = self._read_states(self._watched)
        return batches

    def _read_states(self, parts: list[confluent_kafka.TopicPartition]) -> dict[TopicPartition, tuple[int, int | None]]:
        consumer = self.consumer
        states = {}
        with contextlib.suppress(confluent_kafka.KafkaException, ValueError):  # (unassigned meanwhile: none known)
            for pos in consumer.position(parts):
                _, high = consumer.get_watermark_offsets(pos, cached=True)
                offset = pos.offset
                if offset < 0:  # nothing consumed of it yet: it starts from its committed offset, or an empty log's 0
                    offset = self._starts.get((pos.topic, pos.partition), 0 if high == 0 else -1)
                if offset >= 0:
                    states[self._tp(pos.topic, pos.partition)] = (offset, high if high >= 0 else None)
        return states

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Fetched]]:
        """What librdkafka has fetched (at most *max_records*), waiting up to *timeout_ms* for the first record."""
        result: dict[TopicPartition, list[Fetched]] = await self._call(self._consume, max_records, timeout_ms / 1000.0)
        return result

    # -- rebalances: called by librdkafka inside consume(), on the consumer's thread

    def _run_listener(self, coro: Any) -> None:
        """Run the listener's *coro* on the loop, serving the calls it makes (and any other) meanwhile."""
        assert self._loop is not None
        done = asyncio.run_coroutine_threadsafe(coro, self._loop)
        done.add_done_callback(lambda _: self._calls.put(None))
        while not done.done():
            call = self._calls.get()
            if call is _STOP:  # (not before the close this runs in: stop() puts it after)
                self._calls.put(_STOP)
                break
            if call is not None:
                self._execute(call)
        with contextlib.suppress(concurrent.futures.CancelledError):
            if (exc := done.exception()) is not None:
                log.error("stages: the rebalance listener failed: %r", exc, exc_info=exc)

    def _on_assign(self, consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]) -> None:
        consumer.assign(partitions)  # before the listener: it pauses the partitions whose tables it restores
        self._watched = [confluent_kafka.TopicPartition(p.topic, p.partition) for p in partitions if p.topic in self._watched_topics]
        self._starts = {}
        if self._watched:
            try:
                for c in consumer.committed(self._watched, timeout=10):
                    if c.offset >= 0:
                        self._starts[(c.topic, c.partition)] = c.offset
            except confluent_kafka.KafkaException as exc:  # not known: those partitions go through the broker until one is consumed
                log.info("stages: committed offsets not read (%r)", exc)
        if self._listener is not None:
            self._run_listener(self._listener.on_partitions_assigned([self._tp(p.topic, p.partition) for p in partitions]))

    def _on_revoke(self, consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]) -> None:
        if self._listener is not None:  # before the unassign: it commits what was processed of them
            self._run_listener(self._listener.on_partitions_revoked([self._tp(p.topic, p.partition) for p in partitions]))
        consumer.unassign()
        self._watched, self._states, self._paused = [], {}, set()

    def _on_lost(self, consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]) -> None:
        log.warning("stages: %d partitions lost (the group went on without this worker)", len(partitions))
        self._on_revoke(consumer, partitions)

    # -- positions and offsets

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._post(self.consumer.seek, confluent_kafka.TopicPartition(tp.topic, tp.partition, offset))

    def pause(self, *tps: TopicPartition) -> None:
        self._paused.update(tps)
        self._post(self.consumer.pause, [confluent_kafka.TopicPartition(tp.topic, tp.partition) for tp in tps])

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)
        self._post(self.consumer.resume, [confluent_kafka.TopicPartition(tp.topic, tp.partition) for tp in tps])

    def position_state(self, tp: TopicPartition) -> tuple[int, int | None] | None:
        """(the offset the next record handed out will have, the partition's high watermark), or None if unknown.

        librdkafka's in-memory values (no request).  For a watched topic, as of the last
        ``consume`` (as aiokafka's, which its fetches, on the loop, do not move during a batch);
        for another, now."""
        if tp.topic in self._watched_topics:
            return self._states.get(tp)
        return self._read_states([confluent_kafka.TopicPartition(tp.topic, tp.partition)]).get(tp)

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        parts = [confluent_kafka.TopicPartition(tp.topic, tp.partition, om.offset) for tp, om in offsets.items()]
        result = await self._call(self.consumer.commit, offsets=parts, asynchronous=False)
        _raise_for("commit", result or [])

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The end offsets of *tps*: a metadata request first (it fails fast if the broker does not answer), then
        for each partition the high watermark of librdkafka's latest fetch of it, or else one ListOffsets to its leader.

        librdkafka fetches in its own threads, loop or no loop, and each fetch response carries the
        partition's high watermark, so a cached one is at most a fetch wait old.  A partition is
        asked of its leader (``get_watermark_offsets``, on the offsets thread) when it has no
        cached value yet, when it is paused (not fetched), and for every partition under exactly
        once: the cached value is the high watermark, not the last stable offset.  Asking all 21
        partitions every 5 s, one ListOffsets after another on the connections the fetches use, is
        the likely cause (inferred from the period) of one contact's ingest hop taking 75-118 ms
        every 5.1 s at 128/s (docs/PERFORMANCE.md, December 5).
        Not librdkafka's admin client: after a broker restart its ListOffsets failed with "No
        leaders found" for 90 s and more (it kept the leaders it had cached; the CI machine's
        ``cx_broker_up`` stayed 0 after the outage test; ``test_librdkafka_outage.py``)."""
        if not tps:
            return {}
        ends: dict[TopicPartition, int] = await self._offsets(self._query_ends, list(tps))
        return ends

    def _query_ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        consumer = self.consumer
        consumer.list_topics(timeout=_OFFSETS_TIMEOUT_S)
        cached_ok = self.config.get("isolation.level") != "read_committed"
        ends = {}
        for tp in tps:
            part = confluent_kafka.TopicPartition(tp.topic, tp.partition)
            high = -1
            if cached_ok and tp not in self._paused:
                with contextlib.suppress(confluent_kafka.KafkaException):
                    _, high = consumer.get_watermark_offsets(part, cached=True)
            if high < 0:
                _, high = consumer.get_watermark_offsets(part, timeout=_OFFSETS_TIMEOUT_S, cached=False)
            ends[tp] = high
        return ends

    async def fetch_all_metadata(self, timeout_s: float = _OFFSETS_TIMEOUT_S) -> None:
        """Ask the broker for the cluster's metadata (raises if it does not answer)."""
        await self._offsets(self.consumer.list_topics, timeout=timeout_s)

    def _read_partitions(self, topics: Sequence[str]) -> None:
        self._partitions.update({topic: set(parts) for topic, parts in _topic_partitions(self.consumer, topics).items()})

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """The partitions of *topic* as of the start (the engine's topics are made before it starts)."""
        return self._partitions.get(topic)

    def consumer_group_metadata(self) -> Any:
        return self.consumer.consumer_group_metadata()


def _topic_partitions(client: Any, topics: Sequence[str]) -> dict[str, list[int]]:
    """The partitions (sorted) of each of *topics* in the cluster's metadata, read by *client* (a topic it lacks is left out)."""
    if not topics:
        return {}
    metadata = client.list_topics(timeout=30)
    found = {topic: metadata.topics.get(topic) for topic in topics}
    return {topic: sorted(t.partitions) for topic, t in found.items() if t is not None and t.error is None}


_STOP = object()  # the consumer thread's last call


def _set_future(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class RdProducer:
    """An idempotent (or transactional) producer on librdkafka with the part of ``AIOKafkaProducer``'s interface the runtime uses."""

    def __init__(self, settings: Settings, config: Mapping[str, Any], *, group: RdConsumer | None = None, outage_s: float = 300.0) -> None:
        self.settings = settings  # its transport security (librdkafka_config)
        self.config = dict(config)
        self.group = group  # the consumer whose offsets go into transactions
        self.transactional = bool(self.config.get("transactional.id"))
        self.outage_s = outage_s
        self._sent = 0  # records sent: each one's place in the order they were sent
        # records librdkafka refused or failed because the broker did not know their partition (a
        # restarted broker's first metadata), with every record sent since: produced again in order
        self._held: list[_Outgoing] = []
        self._recovering: asyncio.Task[None] | None = None
        self._producer: confluent_kafka.Producer | None = None
        self._requests = _Requests("producer")
        self._loop: asyncio.AbstractEventLoop | None = None
        # delivery reports not yet handed to the loop: librdkafka serves them in poll() on the reports
        # thread, and in flush() and commit_transaction() on the requests thread
        self._reports: list[tuple[_Outgoing, Any, Any]] = []
        self._reports_lock = threading.Lock()
        self._polling: threading.Thread | None = None
        self._running = False
        self._partitions: dict[str, list[int]] = {}

    async def start(self, topics: Sequence[str] = ()) -> None:
        """Connect; *topics*: the topics it writes, whose partition counts :meth:`partitions_for` answers from."""
        self._loop = asyncio.get_running_loop()
        self._producer = confluent_kafka.Producer({**librdkafka_config(self.settings), **self.config})
        self._running = True
        self._polling = threading.Thread(target=self._poll, name="cx-rdkafka-producer-reports", daemon=True)
        self._polling.start()
        await self._requests(self._read_partitions, list(topics))
        if self.config.get("transactional.id"):
            await self._requests(self._producer.init_transactions, 60.0)

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Deliver what is queued (up to *timeout_s*), then stop serving reports."""
        if self._producer is None:
            return
        try:
            left = await self._requests(self._producer.flush, timeout_s)
            if left:
                log.warning("stages: %d records not delivered at stop", left)
        finally:
            self._running = False
            if self._recovering is not None:
                self._recovering.cancel()
            if self._polling is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._polling.join, 5.0)
            self._requests.shutdown()

    @property
    def producer(self) -> confluent_kafka.Producer:
        if self._producer is None:
            raise RuntimeError("the producer is not started")
        return self._producer

    # -- delivery reports: served on the reports thread, handed to the loop in one call per poll

    def _report(self, out: _Outgoing, err: Any, msg: Any) -> None:
        with self._reports_lock:
            self._reports.append((out, err, msg))

    def _hand_over(self) -> None:
        with self._reports_lock:
            reports, self._reports = self._reports, []
        if reports:
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # the loop closed (interpreter exit)
                self._loop.call_soon_threadsafe(self._resolve, reports)

    def _poll(self) -> None:
        producer = self.producer
        while self._running:
            producer.poll(0.1)
            self._hand_over()
        self._hand_over()  # those a last flush served

    # -- sending

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Delivered]:
        """Queue one record; returns the future of its delivery (as ``AIOKafkaProducer.send`` does)."""
        assert self._loop is not None
        self._sent += 1
        out = _Outgoing(self._sent, topic, value, key, -1 if partition is None else partition, headers, self._loop.create_future())
        if self._held:  # after the records held back: produced with them, in order
            self._held.append(out)
            return out.fut
        while True:
            try:
                self._produce(out)
                return out.fut
            except BufferError:  # librdkafka's queue is full: wait for deliveries to make room
                await asyncio.sleep(0.005)
            except confluent_kafka.KafkaException as exc:
                if not self._hold_back(out, exc.args[0]):
                    raise

    def _produce(self, out: _Outgoing) -> None:
        self.producer.produce(
            out.topic, out.value, out.key, out.partition, on_delivery=functools.partial(self._report, out),
            headers=out.headers,  # type: ignore[arg-type]
        )

    def _resolve(self, reports: list[tuple[_Outgoing, Any, Any]]) -> None:
        for out, err, msg in reports:
            fut = out.fut
            if fut.done():
                continue
            if err is None:
                fut.set_result(Delivered(msg.topic(), msg.partition(), msg.offset()))
            elif not self._hold_back(out, err):
                fut.set_exception(ClientError(f"delivery to {msg.topic()}[{msg.partition()}] failed: {err}"))

    # -- a broker that forgot its partitions for a while (restarted): hold the records, in order, until it knows them

    def _hold_back(self, out: _Outgoing, err: confluent_kafka.KafkaError) -> bool:
        """Keep *out* to produce again if *err* says only that the broker does not know its partition yet; True if kept.

        A restarted broker answers its first metadata requests without the topics it has
        (Kafka loads them from ZooKeeper meanwhile), and librdkafka then fails every record
        queued for them, and refuses new ones, at once (``_UNKNOWN_PARTITION``).  Those records,
        and every record sent after them, are held and produced again in the order they were
        sent once the broker knows their partitions, for up to the outage bound
        (``CX_BROKER_OUTAGE_MAX_S``, as aiokafka's records wait: ``transport.outlast_outages``).
        Not in a transaction: there the batch fails and the engine is restarted."""
        if self.transactional or err.code() not in _UNKNOWN or out.fut.done():
            return False
        self._held.append(out)
        if self._recovering is None or self._recovering.done():
            log.warning("stages: the broker does not know %s[%d] (%s); holding the records until it does",
                        out.topic, out.partition, err.str())
            self._recovering = asyncio.get_running_loop().create_task(self._recover(), name="cxstream.stages.rdkafka.recover")
        return True

    async def _recover(self) -> None:
        while self._held:
            await asyncio.sleep(0.5)
            expired = [o for o in self._held if time.monotonic() - o.since > self.outage_s]
            if expired:  # past the bound: failed like any record, and the engine exits for its supervisor to restart it
                for o in self._held:
                    if not o.fut.done():
                        o.fut.set_exception(ClientError(f"{o.topic}[{o.partition}] unknown to the broker for {self.outage_s:.0f} s"))
                self._held.clear()
                return
            if len(self.producer):  # reports still to come of records sent before: they may join the held ones
                continue
            try:
                if not await self._requests(self._knows, {o.topic for o in self._held}):
                    continue
            except Exception as exc:  # the broker away again
                log.debug("stages: metadata not read (%r); trying again", exc)
                continue
            held, self._held = sorted(self._held, key=lambda o: o.seq), []
            for i, o in enumerate(held):
                try:
                    self._produce(o)
                except (BufferError, confluent_kafka.KafkaException):  # not yet after all: the rest waits
                    self._held = held[i:] + self._held
                    break
            else:
                log.warning("stages: the broker knows the partitions again; %d held records produced", len(held))

    def _knows(self, topics: set[str]) -> bool:
        """True if the broker's metadata has every partition of *topics* this producer knew (refreshes librdkafka's)."""
        metadata = self.producer.list_topics(timeout=5)
        for topic in topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or len(found.partitions) < len(self._partitions.get(topic, ())):
                return False
        return True

    def _read_partitions(self, topics: Sequence[str]) -> None:
        self._partitions.update(_topic_partitions(self.producer, topics))

    def partition_for(self, topic: str, key: bytes) -> int | None:
        """The partition librdkafka's murmur2 partitioner gives *key* (Kafka's default), None if *topic* is unknown."""
        parts = self._partitions.get(topic)
        if not parts:
            return None
        return parts[key_hash(key) % len(parts)]

    # -- transactions (exactly once)

    async def begin_transaction(self) -> None:
        self.producer.begin_transaction()  # local: no request

    async def send_offsets_to_transaction(self, offsets: Mapping[TopicPartition, OffsetAndMetadata], group_id: str) -> None:
        if self.group is None:
            raise RuntimeError("a transactional producer needs the consumer whose offsets it commits")
        parts = [confluent_kafka.TopicPartition(tp.topic, tp.partition, om.offset) for tp, om in offsets.items()]
        await self._requests(
            self.producer.send_offsets_to_transaction, parts, self.group.consumer_group_metadata(), 60.0
        )

    async def commit_transaction(self) -> None:
        await self._requests(self.producer.commit_transaction, 60.0)


@dataclass(slots=True)
class _Outgoing:
    """A record sent: kept by its delivery report's callback, to be produced again if the broker forgot its partition."""

    seq: int
    topic: str
    value: bytes | None
    key: bytes | None
    partition: int  # -1: the partitioner's choice
    headers: Sequence[tuple[str, bytes]] | None
    fut: asyncio.Future[Delivered]
    since: float = field(default_factory=time.monotonic)




class _Repeats(logging.Filter):
    """Lets a librdkafka log line through at most once per *every_s* (digits aside), then says how many were left out.

    While the broker is away, each of librdkafka's connections logs every failed reconnect (dozens
    a second over the clients' connections): the engine's own lines say the broker is away."""

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = _DIGITS.sub("#", record.getMessage())
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.every_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.msg = f"{record.msg} (and {last[1]} like it in the last {now - last[0]:.0f} s)"
        return True


_DIGITS = re.compile(r"\d+")
_librdkafka_log = logging.getLogger("cxstream.streams.librdkafka")
_librdkafka_log.addFilter(_Repeats())
#: librdkafka's log lines go to Python's logging (served by consume() and poll()), not straight to stderr
_LOGGING: Mapping[str, Any] = {"logger": _librdkafka_log, "log.connection.close": False}
#: TCP_NODELAY, as asyncio's (aiokafka's) and Kafka's Java client's sockets: librdkafka leaves Nagle's algorithm on
_SOCKET: Mapping[str, Any] = {"socket.nagle.disable": True}

#: delivery errors that only say the broker does not know the partition (yet)
_UNKNOWN = frozenset({
    confluent_kafka.KafkaError._UNKNOWN_PARTITION, confluent_kafka.KafkaError._UNKNOWN_TOPIC,
    confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART,
})


def consumer_config(
    *, bootstrap: str, group_id: str, fetch_wait_ms: int, session_ms: int, isolation_level: str,
    fetch_min_bytes: int = 1,
) -> dict[str, Any]:
    """The stages' consumer settings (as the aiokafka consumer's), for librdkafka."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": fetch_wait_ms,
        "fetch.min.bytes": fetch_min_bytes,
        "max.partition.fetch.bytes": 4 * 1024 * 1024,
        "session.timeout.ms": session_ms,
        # aiokafka's default; librdkafka also makes it the group's rebalance timeout (a member that is
        # alive rejoins at its next consume, at most one fetch wait away)
        "max.poll.interval.ms": max(session_ms, 300_000),
        "heartbeat.interval.ms": max(500, min(3000, session_ms // 4)),
        "partition.assignment.strategy": "range",
        "topic.metadata.refresh.interval.ms": 30_000,
        "isolation.level": isolation_level,
        "queued.max.messages.kbytes": 16_384,  # prefetched, per partition
        **_LOGGING,
        **_SOCKET,
    }


def producer_config(
    *, bootstrap: str, linger_ms: int, max_request_bytes: int, delivery_timeout_s: float,
    transactional_id: str | None,
) -> dict[str, Any]:
    """The stages' producer settings (as the aiokafka producer's), for librdkafka."""
    config = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,
        "batch.size": 262_144,
        "message.max.bytes": max_request_bytes,
        "partitioner": "murmur2_random",
        "message.timeout.ms": int(delivery_timeout_s * 1000),
        "queue.buffering.max.messages": 500_000,
        **_LOGGING,
        **_SOCKET,
    }
    if transactional_id:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = max(60_000, int(delivery_timeout_s * 1000) + 10_000)
    return config
