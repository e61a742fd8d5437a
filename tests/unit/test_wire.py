"""The lean Kafka wire client (cxstream/streams/wire.py) against aiokafka's protocol classes.

Every request it encodes must be byte for byte what aiokafka's ``Struct`` of the same API and
version encodes, and every answer those classes encode must parse to the same fields; the fetch
session and the producer's sequences follow KIP-227 and the idempotent producer's rules.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from aiokafka.protocol.admin import ApiVersionResponse_v0
from aiokafka.protocol.commit import OffsetCommitRequest_v2, OffsetCommitResponse_v2
from aiokafka.protocol.coordination import FindCoordinatorRequest_v0, FindCoordinatorResponse_v0
from aiokafka.protocol.fetch import FetchRequest_v11, FetchResponse_v11
from aiokafka.protocol.metadata import MetadataRequest_v1, MetadataResponse_v1
from aiokafka.protocol.produce import ProduceRequest_v7, ProduceResponse_v7
from aiokafka.protocol.transaction import InitProducerIdRequest_v0, InitProducerIdResponse_v0
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from cxstream.streams import wire


def _batch(base_offset: int, values: list[bytes], *, producer_id: int = -1, sequence: int = -1) -> bytes:
    b = DefaultRecordBatchBuilder(2, 0, 0, producer_id, 0 if producer_id >= 0 else -1, sequence, 1 << 20)
    for i, v in enumerate(values):
        b.append(i, 1_700_000_000_000 + i, b"k%d" % i, v, [("h", b"1")])
    raw = bytearray(b.build())
    raw[0:8] = struct.pack(">q", base_offset)  # what the broker writes: the batch's first offset
    return bytes(raw)


def test_every_request_is_what_aiokafka_encodes_for_the_same_api_and_version() -> None:
    topics = {"a": [(0, 5, 1024), (3, 9, 2048)], "b": [(1, 0, 4096)]}
    ours = wire.fetch_request(topics, max_wait_ms=10, min_bytes=1, max_bytes=1000, isolation_level=1,
                              session_id=42, epoch=7, forgotten={"c": [2]})
    theirs = FetchRequest_v11(-1, 10, 1, 1000, 1, 42, 7,
                              [(t, [(p, -1, o, -1, m) for p, o, m in parts]) for t, parts in topics.items()],
                              [("c", [2])], "").encode()
    assert ours == theirs
    batch = _batch(0, [b"v"])
    assert wire.produce_request({"a": [(1, batch)], "b": [(0, batch), (2, batch)]}, acks=-1, timeout_ms=500) == \
        ProduceRequest_v7(None, -1, 500, [("a", [(1, batch)]), ("b", [(0, batch), (2, batch)])]).encode()
    assert wire.metadata_request(["a", "b"]) == MetadataRequest_v1(["a", "b"]).encode()
    assert wire.metadata_request(None) == MetadataRequest_v1(None).encode()
    assert wire.find_coordinator_request("g") == FindCoordinatorRequest_v0("g").encode()
    assert wire.init_producer_id_request(1000) == InitProducerIdRequest_v0(None, 1000).encode()
    assert wire.offset_commit_request("g", {("b", 1): 7, ("a", 0): 3}) == \
        OffsetCommitRequest_v2("g", -1, "", -1, [("a", [(0, 3, "")]), ("b", [(1, 7, "")])]).encode()


def test_every_answer_aiokafka_encodes_parses_to_its_fields() -> None:
    assert wire.parse_api_versions(ApiVersionResponse_v0(0, [(0, 0, 8), (1, 0, 11)]).encode()) == {0: (0, 8), 1: (0, 11)}
    with pytest.raises(wire.KafkaWireError):
        wire.parse_api_versions(ApiVersionResponse_v0(35, []).encode())

    meta = wire.parse_metadata(MetadataResponse_v1(
        [(0, "h0", 9092, None), (1, "h1", 9093, "rack")], 1,
        [(0, "a", False, [(0, 0, 1, [1, 0], [1]), (0, 1, 0, [0, 1], [0, 1])]),
         (3, "gone", False, [])]).encode())
    assert meta.brokers == {0: ("h0", 9092), 1: ("h1", 9093)}
    assert meta.leaders == {("a", 0): 1, ("a", 1): 0}
    assert meta.partitions == {"a": 2, "gone": 0} and meta.errors == {"gone": 3}

    assert wire.parse_find_coordinator(FindCoordinatorResponse_v0(0, 3, "h", 1).encode()) == (3, "h", 1)
    with pytest.raises(wire.KafkaWireError) as raised:
        wire.parse_find_coordinator(FindCoordinatorResponse_v0(15, -1, "", -1).encode())
    assert raised.value.code == 15
    assert wire.parse_init_producer_id(InitProducerIdResponse_v0(0, 0, 77, 2).encode()) == (77, 2)
    assert wire.parse_offset_commit(OffsetCommitResponse_v2([("a", [(0, 0), (1, 27)])]).encode()) == {("a", 1): 27}
    assert wire.parse_produce(ProduceResponse_v7([("a", [(0, 0, 100, -1, 0), (1, 6, -1, -1, 0)])], 0).encode()) == \
        {("a", 0): (0, 100), ("a", 1): (6, -1)}

    records = _batch(40, [b"x", b"y"])
    answer = wire.parse_fetch(FetchResponse_v11(0, 0, 99, [
        ("a", [(0, 0, 42, 42, 0, [(5, 30)], -1, records), (1, 0, 7, 7, 0, None, -1, b"")]),
        ("b", [(2, 1, -1, -1, -1, [], -1, b"")])]).encode())
    assert (answer.error, answer.session_id) == (0, 99)
    assert [(p.topic, p.partition, p.error, p.high_watermark) for p in answer.partitions] == \
        [("a", 0, 0, 42), ("a", 1, 0, 7), ("b", 2, 1, -1)]
    got = [(nxt, r.offset, r.key, r.value, r.headers) for nxt, r in wire.records_of(answer.partitions[0].records)]
    assert got == [(42, 40, b"k0", b"x", [("h", b"1")]), (42, 41, b"k1", b"y", [("h", b"1")])]
    assert list(wire.records_of(answer.partitions[1].records)) == []


def test_a_partial_batch_at_the_end_of_a_fetch_is_left_for_the_next_one() -> None:
    whole, cut = _batch(0, [b"a", b"b"]), _batch(2, [b"c"])
    got = [r.value for _, r in wire.records_of(whole + cut[:-5])]
    assert got == [b"a", b"b"]


def test_a_session_sends_everything_once_then_only_what_moved_and_starts_again_after_an_error() -> None:
    s = wire.Session({("a", 0): 0, ("a", 1): 5}, max_wait_ms=10, partition_max_bytes=100)

    def fields(body: bytes) -> tuple[int, int, list[tuple[int, int]]]:
        r = wire.Reader(body)
        r.i32(), r.i32(), r.i32(), r.i32(), r.i8()
        sid, epoch = r.i32(), r.i32()
        parts = []
        for _ in range(r.i32()):
            r.string()
            for _ in range(r.i32()):
                p, _, off, _, _ = r.unpack(struct.Struct(">iiqqi"))
                parts.append((p, off))
        return sid, epoch, parts

    assert fields(s.request()) == (0, 0, [(0, 0), (1, 5)])  # full: opens a session
    s.answered(wire.FetchAnswer(0, 31, []))
    assert (s.session_id, s.epoch) == (31, 1)
    assert fields(s.request()) == (31, 1, [])  # nothing moved: names nothing
    s.answered(wire.FetchAnswer(0, 31, []))
    s.offsets[("a", 1)] = 9
    assert fields(s.request()) == (31, 2, [(1, 9)])
    with pytest.raises(wire.KafkaWireError):
        s.answered(wire.FetchAnswer(71, 0, []))  # INVALID_FETCH_SESSION_EPOCH
    assert fields(s.request()) == (0, 0, [(0, 0), (1, 9)])  # a full request again, from where it was
    assert (s.full_requests, s.incremental_requests) == (2, 2)


def test_a_broker_without_room_for_a_session_gets_full_requests() -> None:
    s = wire.Session({("a", 0): 0})
    s.request()
    s.answered(wire.FetchAnswer(0, 0, []))
    assert s.epoch == 0 and s.request()[17:25] == struct.pack(">ii", 0, 0)


def test_the_producer_numbers_each_partitions_batches_in_sequence_and_sends_them_in_one_request() -> None:
    p = wire.Producer(producer_id=9, epoch=1)
    assert not p
    for i in range(3):
        p.add("a", 0, b"k", b"v%d" % i, 1000 + i)
    p.add("b", 2, None, b"w", None, [("x", b"y")])
    body, n = p.request()
    assert n == 4 and not p
    p.add("a", 0, b"k", b"v3", 2000)
    body2, _ = p.request()

    def batches(body: bytes) -> dict[tuple[str, int], DefaultRecordBatch]:
        r = wire.Reader(body)
        r.string(), r.i16(), r.i32()
        out = {}
        for _ in range(r.i32()):
            t = r.string() or ""
            for _ in range(r.i32()):
                part = r.i32()
                out[(t, part)] = DefaultRecordBatch(r.bytes_() or b"")
        return out

    first, second = batches(body), batches(body2)
    assert set(first) == {("a", 0), ("b", 2)}
    a0 = first[("a", 0)]
    assert (a0.producer_id, a0.producer_epoch, a0.base_sequence) == (9, 1, 0)
    assert [r.value for r in a0] == [b"v0", b"v1", b"v2"]
    assert first[("b", 2)].base_sequence == 0
    assert second[("a", 0)].base_sequence == 3  # after the three before it


async def test_the_connection_matches_answers_to_requests_however_the_bytes_arrive() -> None:
    conn = wire.Connection("t")
    written: list[bytes] = []

    class _Transport:
        def write(self, data: bytes) -> None:
            written.append(data)

        def close(self) -> None:
            pass

    conn.connection_made(_Transport())  # type: ignore[arg-type]
    first, second = conn.request(wire.API_METADATA, b"x"), conn.request(wire.API_FETCH, b"y")
    size, key, version, corr = struct.unpack_from(">ihhi", written[1])
    assert (key, version, corr, size) == (wire.API_FETCH, 11, 1, len(written[1]) - 4)
    frames = struct.pack(">ii", 4 + 3, 1) + b"two" + struct.pack(">ii", 4 + 3, 0) + b"one"
    for i in range(len(frames)):  # a byte at a time, answers out of order
        conn.data_received(frames[i:i + 1])
    assert (await second, await first) == (b"two", b"one")
    third = conn.request(wire.API_FETCH, b"z")
    conn.connection_lost(None)
    with pytest.raises(wire.KafkaWireError):
        await third
    with pytest.raises(wire.KafkaWireError):
        await conn.request(wire.API_FETCH, b"z")
    assert conn.in_flight == 0
    await asyncio.sleep(0)
