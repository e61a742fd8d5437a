"""The stages' producer on the lean wire client (``CX_STAGE_PRODUCER=lean``): one request per broker per round.

aiokafka's producer puts each record through its accumulator in Python, wakes its sender task,
makes a task per produce request and encodes it from generic structs; at 300 inputs a second that
was ~8 % of the worker's samples, and its connection's writes a few more (docs/PERFORMANCE.md).
This producer keeps aiokafka's guarantees with less work per record and per round:

* **Idempotent.**  One producer id for the process (``InitProducerId``); every record batch
  carries its partition's next sequence number, so a batch sent again after a lost answer is
  stored once.  Acks from all in-sync replicas (``acks=-1``), as the stages' aiokafka producer.
* **One request per broker per loop round.**  :meth:`send` appends to the partition's open
  record batch (aiokafka's C builder) and returns the record's future; the sends of one turn of
  the event loop leave together, in one Produce request per leader broker holding one batch per
  partition (Produce v3 and later take one batch per partition per request: a partition's next
  batch, past :attr:`batch_bytes`, goes in the next request).  Up to :attr:`max_in_flight`
  requests per broker are in flight; the next waits for an answer.
* **Answers where they arrive.**  A request's answer resolves its records' futures (offsets
  from the batch's base offset) in the connection's ``data_received``: no task per request.
* **Outages.**  A request whose connection is lost or that takes longer than
  :attr:`request_timeout_s`, or a partition answered with a retriable error (no leader, not the
  leader, a timeout, not enough replicas, a sequence out of order behind a failed batch), stops
  new requests: once every request in flight is answered, the metadata is read again, the
  failed batches are sent again in their partitions' sequence order (each the same bytes, so the
  broker keeps each once), and then the rest.  A batch that is still not stored after
  ``outage_s`` (``CX_BROKER_OUTAGE_MAX_S``) fails, with every batch behind it: the loop then dies
  and the engine stops, as with aiokafka.  Any other error fails its records at once.

Not here: transactions (``CX_PROCESSING_GUARANTEE=exactly_once`` keeps aiokafka's producer), TLS
and SASL (the settings refuse ``lean`` with them), compression (the stages send none).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from cxstream.streams import wire
from cxstream.streams.partitioner import key_hash
from cxstream.streams.rdkafka import ClientError, Delivered

log = logging.getLogger(__name__)

#: Produce answers' error codes after which the same batch is sent again (metadata read first).
RETRIABLE = frozenset({
    3,   # UNKNOWN_TOPIC_OR_PARTITION: a restarted broker before it has loaded its topics
    5,   # LEADER_NOT_AVAILABLE
    6,   # NOT_LEADER_FOR_PARTITION
    7,   # REQUEST_TIMED_OUT
    13,  # NETWORK_EXCEPTION
    19,  # NOT_ENOUGH_REPLICAS
    20,  # NOT_ENOUGH_REPLICAS_AFTER_APPEND
    45,  # OUT_OF_ORDER_SEQUENCE_NUMBER: a batch before it in the partition failed and is sent again
    56,  # KAFKA_STORAGE_ERROR
})
DUPLICATE_SEQUENCE = 46  # stored before (an older duplicate): delivered, offset unknown


class _Batch:
    """One partition's record batch: open until it is sent, then kept until it is stored."""

    __slots__ = ("builder", "futures", "partition", "raw", "seq", "since", "topic")

    def __init__(self, topic: str, partition: int, batch_bytes: int) -> None:
        self.topic, self.partition = topic, partition
        self.builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, batch_bytes)
        self.futures: list[asyncio.Future[Delivered]] = []
        self.since = time.monotonic()
        self.seq = -1  # its first record's sequence number, set when it is first sent
        self.raw: bytes | bytearray = b""

    def fail(self, exc: BaseException) -> None:
        for fut in self.futures:
            if not fut.done():
                fut.set_exception(exc)

    def stored(self, base_offset: int) -> None:
        topic, partition = self.topic, self.partition
        for i, fut in enumerate(self.futures):
            if not fut.done():
                fut.set_result(Delivered(topic, partition, base_offset + i if base_offset >= 0 else -1))


class LeanProducer:
    """An idempotent producer with the part of ``AIOKafkaProducer``'s interface the batch runtime uses."""

    def __init__(self, bootstrap: str, *, outage_s: float = 300.0, batch_bytes: int = 262_144, max_in_flight: int = 5,
                 request_timeout_s: float = 30.0, client_id: str = "cxstream-stages") -> None:
        self.bootstrap = [tuple(b.rsplit(":", 1)) for b in bootstrap.split(",") if b]
        self.outage_s, self.batch_bytes, self.max_in_flight = outage_s, batch_bytes, max_in_flight
        self.request_timeout_s, self.client_id = request_timeout_s, client_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: dict[int, wire.Connection] = {}
        self._brokers: dict[int, tuple[str, int]] = {}
        self._leaders: dict[tuple[str, int], int] = {}
        self._partitions: dict[str, int] = {}
        self._open: dict[tuple[str, int], deque[_Batch]] = {}
        self._seq: dict[tuple[str, int], int] = {}
        self._in_flight: dict[int, dict[int, tuple[list[_Batch], asyncio.Future[bytes]]]] = {}
        self._request_ids = itertools.count()
        self._retry: list[_Batch] = []
        self._recovery: asyncio.Task[None] | None = None
        self._flush_due = False
        self._round_robin = itertools.count()
        self.producer_id, self.epoch = -1, -1
        self.requests = 0
        self.resent = 0  # batches sent again after an outage or a retriable error

    # -- lifecycle

    async def start(self, topics: Sequence[str] = ()) -> None:
        """Connect, check the broker's versions, read *topics*' partitions and leaders, and get a producer id."""
        self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 60.0
        while True:
            try:
                await self._refresh(topics)
                conn = next(iter(self._conns.values())) if self._conns else await self._any_connection()
                await wire.check_versions(conn)
                self.producer_id, self.epoch = wire.parse_init_producer_id(
                    await conn.request(wire.API_INIT_PRODUCER_ID, wire.init_producer_id_request()))
                return
            except (OSError, wire.KafkaWireError) as exc:
                if time.monotonic() > deadline:
                    raise ClientError(f"the lean producer could not start: {exc}") from exc
                log.debug("stages: lean producer not started yet (%r); trying again", exc)
                await asyncio.sleep(0.5)

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Deliver what is sent (up to *timeout_s*), then close the connections."""
        try:
            await asyncio.wait_for(self.flush(), timeout_s)
        except TimeoutError:
            log.warning("stages: records not delivered at stop")
        finally:
            if self._recovery is not None:
                self._recovery.cancel()
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()

    async def flush(self) -> None:
        """Wait until every record sent so far is stored (or failed)."""
        pending = [f for q in self._open.values() for b in q for f in b.futures]
        pending += [f for reqs in self._in_flight.values() for batches, _ in reqs.values() for b in batches for f in b.futures]
        pending += [f for b in self._retry for f in b.futures]
        self._flush()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- sending

    def partition_for(self, topic: str, key: bytes) -> int | None:
        """Kafka's default partition for *key* (murmur2), None if *topic* is unknown."""
        n = self._partitions.get(topic)
        return key_hash(key) % n if n else None

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Delivered]:
        """Add one record to its partition's open batch; returns the future of its delivery (as ``AIOKafkaProducer.send``)."""
        if partition is None:
            n = self._partitions.get(topic)
            if not n:
                await self._refresh([topic])
                n = self._partitions.get(topic)
                if not n:
                    raise ClientError(f"topic {topic!r} is not known to the broker")
            partition = key_hash(key) % n if key is not None else next(self._round_robin) % n
        tp = (topic, partition)
        queue = self._open.get(tp)
        if queue is None:
            queue = self._open[tp] = deque()
        hs = list(headers) if headers else []
        if not queue or queue[-1].builder.append(len(queue[-1].futures), None, key, value, hs) is None:
            batch = _Batch(topic, partition, self.batch_bytes)
            if batch.builder.append(0, None, key, value, hs) is None:  # (the first record always fits)
                raise ClientError(f"a record of {len(value or b'')} bytes does not fit a batch")
            queue.append(batch)
        fut: asyncio.Future[Delivered] = self._loop.create_future()  # type: ignore[union-attr]
        queue[-1].futures.append(fut)
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]
        return fut

    def _flush(self) -> None:
        """Send the open batches: per leader broker, requests of one batch per partition, up to max_in_flight."""
        self._flush_due = False
        if self._recovery is not None and not self._recovery.done():
            return  # it sends them when the failed batches are stored
        by_node: dict[int, list[deque[_Batch]]] = {}
        for tp, queue in self._open.items():
            if not queue:
                continue
            node = self._leaders.get(tp, -1)
            conn = self._conns.get(node)
            if conn is None or not conn.open:
                self._recover(f"no connection to the leader of {tp[0]}[{tp[1]}]")
                return
            by_node.setdefault(node, []).append(queue)
        for node, queues in by_node.items():
            in_flight = self._in_flight.setdefault(node, {})
            while queues and len(in_flight) < self.max_in_flight:
                self._send([q.popleft() for q in queues], node)
                queues = [q for q in queues if q]

    def _send(self, batches: list[_Batch], node: int) -> None:
        by_topic: dict[str, list[tuple[int, bytes | bytearray]]] = {}
        for b in batches:
            if b.seq < 0:  # first sent: its sequence numbers (a batch sent again keeps its bytes)
                tp = (b.topic, b.partition)
                b.seq = self._seq.get(tp, 0)
                self._seq[tp] = (b.seq + len(b.futures)) & 0x7FFFFFFF
                b.builder.set_producer_state(self.producer_id, self.epoch, b.seq)
                b.raw = b.builder.build()
            by_topic.setdefault(b.topic, []).append((b.partition, b.raw))
        conn = self._conns[node]
        fut = conn.request(wire.API_PRODUCE, wire.produce_request(by_topic, timeout_ms=int(self.request_timeout_s * 1000)))
        self.requests += 1
        rid = next(self._request_ids)
        self._in_flight.setdefault(node, {})[rid] = (batches, fut)
        timer = self._loop.call_later(self.request_timeout_s, conn.close)  # type: ignore[union-attr]  # its requests fail: sent again
        fut.add_done_callback(lambda f: self._answered(node, rid, f, timer))

    def _answered(self, node: int, rid: int, fut: asyncio.Future[bytes], timer: asyncio.TimerHandle) -> None:
        timer.cancel()
        batches, _ = self._in_flight[node].pop(rid)
        if fut.cancelled() or fut.exception() is not None:
            reason = "cancelled" if fut.cancelled() else repr(fut.exception())
            self._retry.extend(batches)
            self._recover(f"a produce request failed: {reason}")
            return
        try:
            answer = wire.parse_produce(fut.result())
        except Exception as exc:
            for b in batches:
                b.fail(ClientError(f"unreadable produce answer: {exc!r}"))
            return
        failed = []
        for b in batches:
            code, base = answer.get((b.topic, b.partition), (-1, -1))
            if code == 0:
                b.stored(base)
            elif code == DUPLICATE_SEQUENCE:
                b.stored(-1)
            elif code in RETRIABLE:
                failed.append((b, code))
            else:
                b.fail(ClientError(f"delivery to {b.topic}[{b.partition}] failed: error {code}"))
        if failed:
            self._retry.extend(b for b, _ in failed)
            b, code = failed[0]
            self._recover(f"{b.topic}[{b.partition}] answered error {code}")
        elif any(self._open.values()) and not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]

    # -- transactions: none (the settings refuse CX_STAGE_PRODUCER=lean under exactly once)

    async def begin_transaction(self) -> None:
        raise ClientError("the lean producer has no transactions: exactly once runs on aiokafka's producer")

    async def send_offsets_to_transaction(self, offsets: object, group_id: str) -> None:
        raise ClientError("the lean producer has no transactions: exactly once runs on aiokafka's producer")

    async def commit_transaction(self) -> None:
        raise ClientError("the lean producer has no transactions: exactly once runs on aiokafka's producer")

    # -- outages

    def _recover(self, why: str) -> None:
        if self._recovery is None or self._recovery.done():
            log.warning("stages: lean producer: %s; sending again once the broker answers", why)
            self._recovery = self._loop.create_task(self._recovering(), name="cxstream.stages.lean-producer.recover")  # type: ignore[union-attr]
            self._recovery.add_done_callback(self._recovered)

    def _recovered(self, task: asyncio.Task[None]) -> None:
        """A recovery that failed (a defect, not an outage) fails every record waiting: the loop dies rather than hangs."""
        if task.cancelled() or task.exception() is None:
            return
        exc = ClientError(f"the lean producer's recovery failed: {task.exception()!r}")
        log.error("stages: %s", exc)
        self._fail_waiting(exc)

    def _fail_waiting(self, exc: ClientError) -> None:
        """Fail every record not stored yet: the failed batches and the open ones (none is in flight then)."""
        for b in itertools.chain(self._retry, *self._open.values()):
            b.fail(exc)
        self._retry.clear()
        for queue in self._open.values():
            queue.clear()

    async def _recovering(self) -> None:
        delay = 0.1
        while True:
            while any(self._in_flight.values()):  # their answers may add to the failed batches
                waiting = [f for reqs in self._in_flight.values() for _, f in reqs.values()]
                await asyncio.gather(*waiting, return_exceptions=True)
                await asyncio.sleep(0)  # their callbacks
            now = time.monotonic()
            if any(now - b.since > self.outage_s for b in itertools.chain(self._retry, *self._open.values())):
                self._fail_waiting(ClientError(f"records not stored after {self.outage_s:.0f} s of a broker outage"))
                return
            try:
                await self._refresh({*(t for t, _ in self._open), *(b.topic for b in self._retry)})  # (and the known ones)
                missing = [tp for tp in itertools.chain(((b.topic, b.partition) for b in self._retry), self._open)
                           if self._conns.get(self._leaders.get(tp, -1)) is None]
                if missing:
                    raise wire.KafkaWireError(f"no leader for {missing[0]}")
            except (TimeoutError, OSError, wire.KafkaWireError) as exc:
                log.debug("stages: lean producer: the broker is not back (%r)", exc)
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
                continue
            retry, self._retry = sorted(self._retry, key=lambda b: (b.topic, b.partition, b.seq)), []
            self.resent += len(retry)
            rounds: list[list[_Batch]] = []  # the k-th failed batch of each partition in round k
            depth: dict[tuple[str, int], int] = {}
            for b in retry:
                k = depth[(b.topic, b.partition)] = depth.get((b.topic, b.partition), -1) + 1
                if k == len(rounds):
                    rounds.append([])
                rounds[k].append(b)
            for batches in rounds:
                by_node: dict[int, list[_Batch]] = {}
                for b in batches:
                    by_node.setdefault(self._leaders[(b.topic, b.partition)], []).append(b)
                for node, bs in by_node.items():
                    self._send(bs, node)
                answers = [f for reqs in self._in_flight.values() for _, f in reqs.values()]
                await asyncio.gather(*answers, return_exceptions=True)
                await asyncio.sleep(0)
            if not self._retry:
                if retry:
                    log.warning("stages: lean producer: %d batches sent again and stored", len(retry))
                break
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
        self._recovery = None
        self._flush()

    # -- metadata and connections

    async def _any_connection(self) -> wire.Connection:
        for conn in self._conns.values():
            if conn.open:
                return conn
        last: Exception | None = None
        for host, port in [*self._brokers.values(), *self.bootstrap]:
            try:
                return await asyncio.wait_for(wire.Connection.connect(str(host), int(port), self.client_id), 10)
            except (TimeoutError, OSError) as exc:
                last = exc
        raise wire.KafkaWireError(f"no broker reachable: {last!r}")

    async def _refresh(self, topics: Iterable[str]) -> None:
        """Read *topics*' (and the known topics') partitions and leaders, and connect to every leader."""
        names = sorted(set(topics) | set(self._partitions))
        conn = await self._any_connection()
        try:
            meta = wire.parse_metadata(await asyncio.wait_for(
                conn.request(wire.API_METADATA, wire.metadata_request(names)), self.request_timeout_s))
        finally:
            if conn not in self._conns.values():
                conn.close()
        if meta.errors:
            raise wire.KafkaWireError(f"metadata: {meta.errors}")
        self._brokers = dict(meta.brokers)
        self._leaders.update(meta.leaders)
        self._partitions.update({t: n for t, n in meta.partitions.items() if n})
        for node in {n for n in meta.leaders.values() if n >= 0}:
            known = self._conns.get(node)
            if known is None or not known.open:
                host, port = self._brokers[node]
                self._conns[node] = await asyncio.wait_for(wire.Connection.connect(host, port, self.client_id), 10)
        for node in [n for n, c in self._conns.items() if not c.open]:
            with contextlib.suppress(Exception):
                self._conns.pop(node).close()
