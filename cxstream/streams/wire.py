"""A lean Kafka wire client: one connection per broker, requests encoded and answers parsed by hand.

Issue 17's max-rate ratio is held by the cost of a loop round (docs/PERFORMANCE.md, "What 50 %
asks of the loop"): ~2 ms of the worker's CPU, a third of it aiokafka.  aiokafka builds every
request from generic ``Struct`` classes in Python, and a round wakes several of its tasks: the
fetcher's routine, ``getmany``'s waiter, the sender's routine, a task per produce request, each
connection's reader.  This module is the other way, measured first as a bare relay
(``bench/transport/hop.py --libs lean``): a request is a few ``struct.pack`` calls, an answer is
parsed where it arrives (an :class:`asyncio.Protocol`, no reader task), and the caller awaits one
future per request or none (a done-callback).

What it speaks, on brokers from Kafka 2.3 (the embedded broker's release): ApiVersions v0,
Metadata v1, FindCoordinator v0, InitProducerId v0, Fetch v11 with incremental fetch sessions
(KIP-227), Produce v7 (idempotent, multi-partition requests: one per broker per round, not one per
partition as librdkafka sends), OffsetCommit v2.  Record batches are built and parsed by aiokafka's
C extension (``DefaultRecordBatchBuilder``, ``MemoryRecords``); murmur2 partitioning is
:mod:`cxstream.streams.partitioner`'s.  Group membership, transactions, SASL and TLS are not here.

Used by the stages' lean producer (:mod:`cxstream.streams.leanproducer`, ``CX_STAGE_PRODUCER=lean``)
and the hop bench's relay.  tests/unit/test_wire.py checks every encoder byte for byte against
aiokafka's protocol classes and every parser on answers those classes encode;
tests/integration/test_wire.py produces (a request sent twice is stored once), fetches in a
session and commits on the real broker.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

API_PRODUCE, API_FETCH, API_METADATA, API_OFFSET_COMMIT = 0, 1, 3, 8
API_FIND_COORDINATOR, API_VERSIONS, API_INIT_PRODUCER_ID = 10, 18, 22
#: (api key, version) this client sends, and what it needs the broker to accept.
VERSIONS = {API_PRODUCE: 7, API_FETCH: 11, API_METADATA: 1, API_OFFSET_COMMIT: 2,
            API_FIND_COORDINATOR: 0, API_VERSIONS: 0, API_INIT_PRODUCER_ID: 0}

#: Fetch answers' top-level errors that say the fetch session is gone or out of step (KIP-227).
SESSION_ERRORS = frozenset({70, 71})
MAX_EPOCH = 2**31 - 1

_I8, _I16, _I32, _I64 = struct.Struct(">b"), struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")
_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id (request header v1, client id after)
_FETCH_HEAD = struct.Struct(">iiiibii")  # replica id, max wait, min bytes, max bytes, isolation, session id, epoch
_FETCH_PART = struct.Struct(">iiqqi")  # partition, current leader epoch, fetch offset, log start offset, max bytes
_PART_HEAD = struct.Struct(">ihqqq")  # fetch answer: partition, error, high watermark, last stable, log start
_PRODUCE_PART = struct.Struct(">ihqqq")  # produce answer: partition, error, base offset, append time, log start


class KafkaWireError(Exception):
    """A broker answered with an error code (``code``), or a connection failed."""

    def __init__(self, message: str, code: int = -1) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- encoding
def string(s: str | None) -> bytes:
    """A Kafka ``STRING`` (``NULLABLE_STRING`` for None).

    >>> string("ab"), string(None)
    (b'\\x00\\x02ab', b'\\xff\\xff')
    """
    if s is None:
        return b"\xff\xff"
    b = s.encode()
    return _I16.pack(len(b)) + b


def _array(items: list[bytes]) -> bytes:
    return _I32.pack(len(items)) + b"".join(items)


class Reader:
    """Reads a Kafka answer's fields in order from ``buf``.

    >>> r = Reader(b"\\x00\\x00\\x00\\x07\\x00\\x02hi")
    >>> r.i32(), r.string()
    (7, 'hi')
    """

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf, self.pos = buf, pos

    def i8(self) -> int:
        v = _I8.unpack_from(self.buf, self.pos)[0]
        self.pos += 1
        return int(v)

    def i16(self) -> int:
        v = _I16.unpack_from(self.buf, self.pos)[0]
        self.pos += 2
        return int(v)

    def i32(self) -> int:
        v = _I32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return int(v)

    def i64(self) -> int:
        v = _I64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return int(v)

    def string(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        s = self.buf[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def bytes_(self) -> bytes | None:
        n = self.i32()
        if n < 0:
            return None
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return bytes(b)

    def unpack(self, s: struct.Struct) -> tuple[Any, ...]:
        v = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return v


def api_versions_request() -> bytes:
    return b""


def parse_api_versions(body: bytes) -> dict[int, tuple[int, int]]:
    """ApiVersions v0's answer: ``{api key: (min version, max version)}``; raises on an error."""
    r = Reader(body)
    code = r.i16()
    if code:
        raise KafkaWireError(f"ApiVersions answered error {code}", code)
    return {k: (lo, hi) for k, lo, hi in (r.unpack(struct.Struct(">hhh")) for _ in range(r.i32()))}


def metadata_request(topics: list[str] | None) -> bytes:
    """Metadata v1 for ``topics`` (None: every topic)."""
    return b"\xff\xff\xff\xff" if topics is None else _array([string(t) for t in topics])


@dataclass
class Metadata:
    brokers: dict[int, tuple[str, int]]  # node id -> (host, port)
    leaders: dict[tuple[str, int], int]  # (topic, partition) -> leader's node id (-1: none)
    partitions: dict[str, int]  # topic -> how many partitions
    errors: dict[str, int]  # topic -> its error code, where not 0


def parse_metadata(body: bytes) -> Metadata:
    """Metadata v1's answer."""
    r = Reader(body)
    brokers = {}
    for _ in range(r.i32()):
        node, host, port = r.i32(), r.string(), r.i32()
        r.string()  # rack
        brokers[node] = (host or "", port)
    r.i32()  # controller id
    leaders, partitions, errors = {}, {}, {}
    for _ in range(r.i32()):
        code, name = r.i16(), r.string() or ""
        r.i8()  # internal
        n = r.i32()
        for _ in range(n):
            r.i16()  # the partition's error (a leader of -1 says it)
            index, leader = r.i32(), r.i32()
            for _ in range(2):  # replicas, in-sync replicas
                n_nodes = r.i32()
                r.pos += 4 * n_nodes
            leaders[(name, index)] = leader
        partitions[name] = n
        if code:
            errors[name] = code
    return Metadata(brokers, leaders, partitions, errors)


def find_coordinator_request(group: str) -> bytes:
    return string(group)


def parse_find_coordinator(body: bytes) -> tuple[int, str, int]:
    """FindCoordinator v0's answer: (node id, host, port); raises on an error."""
    r = Reader(body)
    code = r.i16()
    node, host, port = r.i32(), r.string(), r.i32()
    if code:
        raise KafkaWireError(f"FindCoordinator answered error {code}", code)
    return node, host or "", port


def init_producer_id_request(transaction_timeout_ms: int = 60_000) -> bytes:
    return string(None) + _I32.pack(transaction_timeout_ms)


def parse_init_producer_id(body: bytes) -> tuple[int, int]:
    """InitProducerId v0's answer: (producer id, epoch); raises on an error."""
    r = Reader(body)
    r.i32()  # throttle
    code, pid, epoch = r.i16(), r.i64(), r.i16()
    if code:
        raise KafkaWireError(f"InitProducerId answered error {code}", code)
    return pid, epoch


def offset_commit_request(group: str, offsets: dict[tuple[str, int], int], *, generation: int = -1,
                          member: str = "") -> bytes:
    """OffsetCommit v2 of ``offsets`` (the next offset to read, per partition), retention the broker's own."""
    by_topic: dict[str, list[bytes]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        by_topic.setdefault(topic, []).append(_I32.pack(partition) + _I64.pack(offset) + string(""))
    return (string(group) + _I32.pack(generation) + string(member) + _I64.pack(-1)
            + _array([string(t) + _array(parts) for t, parts in by_topic.items()]))


def parse_offset_commit(body: bytes) -> dict[tuple[str, int], int]:
    """OffsetCommit v2's answer: the partitions whose commit failed, with their error codes."""
    r = Reader(body)
    failed = {}
    for _ in range(r.i32()):
        topic = r.string() or ""
        for _ in range(r.i32()):
            partition, code = r.i32(), r.i16()
            if code:
                failed[(topic, partition)] = code
    return failed


def fetch_request(topics: dict[str, list[tuple[int, int, int]]], *, max_wait_ms: int, min_bytes: int = 1,
                  max_bytes: int = 52_428_800, isolation_level: int = 0, session_id: int = 0, epoch: int = -1,
                  forgotten: dict[str, list[int]] | None = None) -> bytes:
    """Fetch v11: ``topics`` maps a topic to its ``(partition, offset, max bytes)``s.

    ``session_id``/``epoch``: 0/-1 fetch without a session, 0/0 opens one, id/n continues one.
    """
    head = _FETCH_HEAD.pack(-1, max_wait_ms, min_bytes, max_bytes, isolation_level, session_id, epoch)
    pack = _FETCH_PART.pack
    body = _array([string(t) + _array([pack(p, -1, offset, -1, limit) for p, offset, limit in parts])
                   for t, parts in topics.items()])
    gone = _array([string(t) + _array([_I32.pack(p) for p in parts]) for t, parts in (forgotten or {}).items()])
    return head + body + gone + string("")


@dataclass(slots=True)
class FetchedPartition:
    topic: str
    partition: int
    error: int
    high_watermark: int
    records: bytes | None


@dataclass(slots=True)
class FetchAnswer:
    error: int
    session_id: int
    partitions: list[FetchedPartition]


def parse_fetch(body: bytes) -> FetchAnswer:
    """Fetch v11's answer (aborted transactions are skipped over: the client reads uncommitted)."""
    r = Reader(body)
    r.i32()  # throttle
    error, session_id = r.i16(), r.i32()
    out = []
    for _ in range(r.i32()):
        topic = r.string() or ""
        for _ in range(r.i32()):
            partition, code, high, _last_stable, _log_start = r.unpack(_PART_HEAD)
            aborted = r.i32()
            if aborted > 0:
                r.pos += 16 * aborted
            r.i32()  # preferred read replica
            out.append(FetchedPartition(topic, partition, code, high, r.bytes_()))
    return FetchAnswer(error, session_id, out)


def records_of(data: bytes | None) -> Iterator[tuple[int, Any]]:
    """``(next offset of its batch, record)`` for each record in a fetched partition's bytes.

    Control batches (transaction markers) and a partial batch at the end (the fetch's size limit)
    are skipped.
    """
    if not data:
        return
    batches = MemoryRecords(data)
    while batches.has_next():
        batch = batches.next_batch()
        if batch is None:
            break
        if getattr(batch, "is_control_batch", False):
            continue
        nxt = batch.next_offset
        for rec in batch:
            yield nxt, rec


def produce_request(batches: dict[str, list[tuple[int, bytes | bytearray]]], *, acks: int = -1,
                    timeout_ms: int = 30_000) -> bytes:
    """Produce v7 of ``batches``: a topic's ``(partition, record batch)``s, in one request."""
    return (string(None) + _I16.pack(acks) + _I32.pack(timeout_ms)
            + _array([string(t) + _array([_I32.pack(p) + _I32.pack(len(b)) + bytes(b) for p, b in parts])
                      for t, parts in batches.items()]))


def parse_produce(body: bytes) -> dict[tuple[str, int], tuple[int, int]]:
    """Produce v7's answer: ``{(topic, partition): (error code, base offset)}``."""
    r = Reader(body)
    out = {}
    for _ in range(r.i32()):
        topic = r.string() or ""
        for _ in range(r.i32()):
            partition, code, base, _append_ms, _log_start = r.unpack(_PRODUCE_PART)
            out[(topic, partition)] = (code, base)
    return out


# --------------------------------------------------------------------------- the connection
class Connection(asyncio.Protocol):
    """One broker connection.  :meth:`request` writes a framed request and returns the future of
    its answer's body (after the correlation id), resolved in :meth:`data_received`."""

    def __init__(self, client_id: str = "cxstream-wire") -> None:
        self._client_id = string(client_id)
        self._buf = bytearray()
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._next = 0
        self._transport: asyncio.Transport | None = None
        self._lost: Exception | None = None
        self.requests = 0

    @classmethod
    async def connect(cls, host: str, port: int, client_id: str = "cxstream-wire") -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: cls(client_id), host, port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport

    def request(self, api_key: int, body: bytes, version: int | None = None) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self._transport is None or self._lost is not None:
            fut.set_exception(KafkaWireError(f"connection lost: {self._lost}"))
            return fut
        corr = self._next
        self._next = (corr + 1) & 0x7FFFFFFF
        header = _HEADER.pack(api_key, VERSIONS[api_key] if version is None else version, corr) + self._client_id
        self._transport.write(_I32.pack(len(header) + len(body)) + header + body)
        self._waiting[corr] = fut
        self.requests += 1
        return fut

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, n = 0, len(buf)
        unpack = _I32.unpack_from
        while n - pos >= 8:
            size = unpack(buf, pos)[0]
            if n - pos - 4 < size:
                break
            corr = unpack(buf, pos + 4)[0]
            body = bytes(buf[pos + 8:pos + 4 + size])
            pos += 4 + size
            fut = self._waiting.pop(corr, None)
            if fut is not None and not fut.done():
                fut.set_result(body)
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("closed")
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(KafkaWireError(f"connection lost: {self._lost}"))
        self._waiting.clear()

    @property
    def open(self) -> bool:
        """True until the connection is closed or lost."""
        return self._transport is not None and self._lost is None and not self._transport.is_closing()

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def check_versions(conn: Connection) -> None:
    """Raise unless the broker accepts every (api, version) this client sends."""
    got = parse_api_versions(await conn.request(API_VERSIONS, api_versions_request()))
    missing = [f"api {k} v{v}" for k, v in VERSIONS.items() if not (got.get(k, (0, -1))[0] <= v <= got.get(k, (0, -1))[1])]
    if missing:
        raise KafkaWireError(f"the broker does not accept {', '.join(missing)} (Kafka 2.3 or newer is needed)")


# --------------------------------------------------------------------------- a fetch session and a producer
@dataclass
class Session:
    """One broker's incremental fetch session, from this client's side (KIP-227).

    ``offsets`` are the positions to fetch from; :meth:`request` sends them all in a full request
    (``epoch`` 0), then only those that changed since the broker last heard them.
    """

    offsets: dict[tuple[str, int], int]
    max_wait_ms: int = 10
    partition_max_bytes: int = 1 << 20
    session_id: int = 0
    epoch: int = 0
    known: dict[tuple[str, int], int] = field(default_factory=dict)
    full_requests: int = 0
    incremental_requests: int = 0

    def request(self) -> bytes:
        if self.epoch == 0:
            changed = self.offsets
            self.full_requests += 1
        else:
            known = self.known
            changed = {tp: o for tp, o in self.offsets.items() if known.get(tp) != o}
            self.incremental_requests += 1
        topics: dict[str, list[tuple[int, int, int]]] = {}
        for (t, p), o in changed.items():
            topics.setdefault(t, []).append((p, o, self.partition_max_bytes))
        self.known = dict(self.offsets) if self.epoch == 0 else {**self.known, **changed}
        return fetch_request(topics, max_wait_ms=self.max_wait_ms, session_id=self.session_id, epoch=self.epoch)

    def answered(self, answer: FetchAnswer) -> None:
        """Follow the session on an answer: raises on a session error after resetting to a full request."""
        if answer.error:  # a session error (SESSION_ERRORS) or another: the next request is a full one
            self.failed()
            raise KafkaWireError(f"fetch answered error {answer.error}", answer.error)
        if self.epoch == 0:
            self.session_id = answer.session_id
            self.epoch = 1 if answer.session_id else 0
        else:
            self.epoch = self.epoch + 1 if self.epoch < MAX_EPOCH else 1

    def failed(self) -> None:
        self.session_id, self.epoch, self.known = 0, 0, {}


class Producer:
    """Idempotent record batches for one broker: :meth:`add` records, :meth:`request` drains them
    into one Produce request (a batch per partition) with each partition's next sequence."""

    def __init__(self, producer_id: int, epoch: int) -> None:
        self.producer_id, self.epoch = producer_id, epoch
        self._seq: dict[tuple[str, int], int] = {}
        self._open: dict[tuple[str, int], Any] = {}

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None, timestamp_ms: int | None,
            headers: list[tuple[str, bytes | None]] | None = None) -> None:
        tp = (topic, partition)
        b = self._open.get(tp)
        if b is None:
            b = self._open[tp] = [DefaultRecordBatchBuilder(2, 0, 0, self.producer_id, self.epoch,
                                                            self._seq.get(tp, 0), 1 << 30), 0]
        b[0].append(b[1], timestamp_ms, key, value, headers or [])
        b[1] += 1

    def __bool__(self) -> bool:
        return bool(self._open)

    def request(self) -> tuple[bytes, int]:
        """(the Produce request of every open batch, how many records it holds)."""
        batches: dict[str, list[tuple[int, bytes | bytearray]]] = {}
        n = 0
        for (t, p), (builder, count) in self._open.items():
            batches.setdefault(t, []).append((p, builder.build()))
            self._seq[(t, p)] = (self._seq.get((t, p), 0) + count) & 0x7FFFFFFF
            n += count
        self._open = {}
        return produce_request(batches), n


def failures(answer: dict[tuple[str, int], tuple[int, int]]) -> Iterable[tuple[tuple[str, int], int]]:
    return ((tp, code) for tp, (code, _) in answer.items() if code)
