"""The batch runtime's own logic, without a broker: tables, buffered outputs, dead letters, ack ordering."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from aiokafka import TopicPartition

from cxstream.schemas import DeadLetter
from cxstream.streams.batch import BatchRuntime, Output, Record, Table
from cxstream.streams.codecs import InvalidInput
from cxstream.streams.settings import Settings
from cxstream.streams.topics import CUSTOMER_EVENTS, ROUTING


def message(offset: int, key: bytes, value: bytes) -> Any:
    return SimpleNamespace(offset=offset, key=key, value=value, timestamp=None)


def test_a_table_keeps_one_dict_per_partition_and_hands_over_the_latest_value_per_key() -> None:
    t = Table("ctx", "app-ctx-changelog", 4)
    t.partition = 1
    t[b"a"] = b"1"
    t[b"a"] = b"2"
    t[b"b"] = b"x"
    del t[b"b"]
    t.partition = 3
    t[b"a"] = b"other partition"
    assert t.get(b"a") == b"other partition" and b"b" not in t
    t.partition = 1
    assert t.get(b"a") == b"2" and t.get(b"b") is None and len(t) == 1
    assert sorted(t.take_changes()) == [(1, b"a", b"2"), (1, b"b", None), (3, b"a", b"other partition")]
    assert t.take_changes() == [], "changes are handed over once"
    t.drop(1)
    assert t.get(b"a") is None and t.total() == 1
    t.restore(1, b"a", b"restored")
    t.restore(1, b"gone", b"v")
    t.restore(1, b"gone", None)  # a tombstone in the changelog
    assert dict(t.items()) == {b"a": b"restored"} and t.take_changes() == [], "restoring is not a change"


def test_stage_buffers_outputs_in_order_and_dead_letters_what_fails() -> None:
    rt = BatchRuntime("127.0.0.1:9", Settings(topic_prefix="p."))
    table = rt.table("ctx", 4)
    st = rt.stage("context", [CUSTOMER_EVENTS], tables=[table])
    out = st.output(rt.topic(ROUTING))
    seen: list[tuple[int, int]] = []
    batches_done: list[int] = []

    async def handle(rec: Record) -> None:
        seen.append((rec.partition, table.partition))
        if rec.value == b"bad":
            raise InvalidInput("not_json", "no JSON here")
        if rec.value == b"bug":
            raise KeyError("boom")
        table[rec.key or b""] = rec.value or b""
        await out.send(key=rec.key, value=rec.value)

    async def on_batch() -> None:
        batches_done.append(len(rt.buffer))

    st.handler, st.on_batch = handle, on_batch
    tp0, tp2 = TopicPartition("p.cx.customer-events.v1", 0), TopicPartition("p.cx.customer-events.v1", 2)
    n = asyncio.run(st.process([
        (tp0, [message(5, b"c1", b"one"), message(6, b"c1", b"bad")]),
        (tp2, [message(9, b"c2", b"bug"), message(10, b"c2", b"two")]),
    ]))
    assert n == 4 and seen == [(0, 0), (0, 0), (2, 2), (2, 2)], "the table follows the record's partition"
    assert [(t, k, v) for t, k, v in rt.buffer if t == "p.cx.routing.v1"] == [
        ("p.cx.routing.v1", b"c1", b"one"), ("p.cx.routing.v1", b"c2", b"two")
    ]
    letters = [msgspec.json.decode(v, type=DeadLetter) for t, _, v in rt.buffer if t == "p.cx.dead-letter.v1"]
    assert [(d.offset, d.partition, d.error_type, d.agent) for d in letters] == [
        (6, 0, "not_json", "context"), (9, 2, "processing_error", "context")
    ]
    assert "KeyError" in letters[1].reason
    assert batches_done == [4], "on_batch runs once, after every record"
    assert sorted(table.take_changes()) == [(0, b"c1", b"one"), (2, b"c2", b"two")]


def test_one_topic_feeds_one_stage() -> None:
    rt = BatchRuntime("127.0.0.1:9", Settings())
    rt.stage("a", [ROUTING])
    with pytest.raises(ValueError, match="already the input of stage a"):
        rt.stage("b", [ROUTING])


def test_offsets_become_committable_only_once_their_batch_and_every_older_one_is_acknowledged() -> None:
    async def scenario() -> list[dict[TopicPartition, int]]:
        rt = BatchRuntime("127.0.0.1:9", Settings())
        tp = TopicPartition("t", 0)
        rt.owned.add(tp)
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        rt._in_flight.append(([first], {tp: 10}))
        rt._in_flight.append(([second], {tp: 20}))
        states = []
        second.set_result(None)  # the newer batch is acknowledged first
        await rt.settle()
        states.append(dict(rt._processed))
        first.set_result(None)
        await rt.settle()
        states.append(dict(rt._processed))
        failed = loop.create_future()
        failed.set_exception(RuntimeError("broker said no"))
        rt._in_flight.append(([failed], {tp: 30}))
        with pytest.raises(RuntimeError, match="broker said no"):
            await rt.settle()
        states.append(dict(rt._processed))
        return states

    assert asyncio.run(scenario()) == [{}, {TopicPartition("t", 0): 20}, {TopicPartition("t", 0): 20}]


def test_output_send_only_buffers() -> None:
    sink: list[tuple[str, bytes | None, bytes | None]] = []
    o = Output("t", sink)
    asyncio.run(o.send(key=b"k", value=b"v"))
    assert sink == [("t", b"k", b"v")] and o.get_topic_name() == "t"


class _SlowCommits:
    """A consumer stand-in whose fetches return nothing and whose commits take until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.commits: list[dict[TopicPartition, int]] = []
        self.fetches = 0

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        self.fetches += 1
        await asyncio.sleep(0.001)
        return {}

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        await self.release.wait()
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})


def test_the_loop_keeps_fetching_while_a_commit_is_in_flight_and_revoke_waits_for_it() -> None:
    async def scenario() -> tuple[int, list[dict[TopicPartition, int]]]:
        rt = BatchRuntime("127.0.0.1:9", Settings(), commit_interval_s=0.0)
        consumer = _SlowCommits()
        rt.consumer = consumer  # type: ignore[assignment]
        rt.stage("s", [ROUTING])
        tp = TopicPartition(rt.topic(ROUTING), 0)
        rt.owned.add(tp)
        rt._processed[tp] = 10
        loop_task = asyncio.create_task(rt._run())
        await asyncio.sleep(0.05)
        fetched_during_commit = consumer.fetches
        assert rt._committing is not None and not rt._committing.done()  # one commit, still in flight
        rt._processed[tp] = 20
        revoking = asyncio.create_task(rt._revoked([tp]))
        await asyncio.sleep(0.01)
        assert not revoking.done()  # it waits for the commit in flight before its own
        consumer.release.set()
        await revoking
        rt._stopping = True
        await loop_task
        return fetched_during_commit, consumer.commits

    fetched, commits = asyncio.run(scenario())
    assert fetched > 5
    tp = TopicPartition(Settings().topic_prefix + ROUTING.name, 0)
    assert commits == [{tp: 10}, {tp: 20}]


class _RecordingProducer:
    """A producer stand-in that records what was sent, in order, and acknowledges at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, int | None, bool]] = []

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int | None = None,
                   headers: Any = None) -> asyncio.Future[Any]:
        self.sent.append((topic, key, partition, bool(headers)))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(SimpleNamespace(offset=len(self.sent)))
        return fut


def test_locally_delivered_records_are_held_then_produced_in_order_before_anything_through_the_broker() -> None:
    async def scenario() -> None:
        rt = BatchRuntime("127.0.0.1:9", Settings(), echo_linger_ms=50)
        producer = _RecordingProducer()
        rt._producer = producer  # type: ignore[assignment]
        tp = TopicPartition("t", 0)
        rt.owned.add(tp)
        # batch 1: two records delivered locally (held), one to another topic (sent now)
        rt.buffer += [("ctx", b"a", b"1"), ("out", b"o", b"x"), ("ctx", b"b", b"2")]
        rt._route = {0: (0, True), 2: (1, True)}
        first = await rt.send_all()
        rt._in_flight.append((first, {tp: 10}))
        assert producer.sent == [("out", b"o", None, False)], "held: not produced with their batch"
        await rt.settle()
        assert rt._processed == {}, "a batch with held records is not committable"
        # batch 2: one more held, then one through the broker to the same topic: the held go first
        rt.buffer += [("ctx", b"c", b"3"), ("ctx", b"d", b"4")]
        rt._route = {0: (0, True), 1: (0, False)}
        second = await rt.send_all()
        rt._in_flight.append((second, {tp: 20}))
        assert producer.sent[1:] == [("ctx", b"a", 0, True), ("ctx", b"b", 1, True), ("ctx", b"c", 0, True),
                                     ("ctx", b"d", 0, False)]
        assert rt._held == [] and rt._held_for == {} and rt._held_parts == set()
        await rt.settle()
        assert rt._processed == {tp: 20}
        # a record through the broker to another partition does not need the held ones first
        rt.buffer += [("ctx", b"f", b"6"), ("ctx", b"g", b"7")]
        rt._route = {0: (1, True), 1: (3, False)}
        fourth = await rt.send_all()
        assert producer.sent[-1] == ("ctx", b"g", 3, False) and [r[1] for r in rt._held] == [b"f"]
        await rt.push_held()
        assert producer.sent[-1] == ("ctx", b"f", 1, True)
        rt._in_flight.append((fourth, {tp: 20}))
        await rt.settle()
        # batch 3: held, then settled with wait (too many batches in flight): produced first
        rt.buffer += [("ctx", b"e", b"5")]
        rt._route = {0: (2, True)}
        third = await rt.send_all()
        rt._in_flight.append((third, {tp: 30}))
        await rt.settle()
        assert rt._processed == {tp: 20} and len(producer.sent) == 7
        await rt.settle(wait=True)
        assert producer.sent[-1] == ("ctx", b"e", 2, True) and rt._processed == {tp: 30}

    asyncio.run(scenario())


def test_without_an_echo_linger_local_records_go_with_their_batch() -> None:
    async def scenario() -> list[tuple[str, bytes | None, int | None, bool]]:
        rt = BatchRuntime("127.0.0.1:9", Settings(), echo_linger_ms=0)
        producer = _RecordingProducer()
        rt._producer = producer  # type: ignore[assignment]
        rt.buffer += [("ctx", b"a", b"1")]
        rt._route = {0: (3, True)}
        await rt.send_all()
        return producer.sent

    assert asyncio.run(scenario()) == [("ctx", b"a", 3, True)]


def test_restored_tables_are_copied_to_redis_again() -> None:
    """After a crash the write-behind may not have reached Redis: a restored partition is marked dirty in full."""
    from cxstream.agents import context as context_agent
    from cxstream.agents import identity as identity_agent
    from cxstream.agents.context import RedisContextWriter
    from cxstream.agents.scoring import Scorer
    from cxstream.context.resolver import Resolver
    from cxstream.streams.keys import context_key, index_key

    rt = BatchRuntime("127.0.0.1:9", Settings())
    writer = RedisContextWriter(client=None, ttl_s=60)  # type: ignore[arg-type]  # marks only: nothing is flushed here
    identity = identity_agent.stage(rt, writer).tables[0]
    context = context_agent.stage(rt, Settings(), writer, Scorer()).tables[0]

    store: dict[bytes, bytes] = {}
    resolver = Resolver(store)
    resolver.resolve({"email": "jane@x.org"}, event_id="e1", at=1.0)
    merged = resolver.resolve({"email": "jane@x.org", "phone": "+447700900123"}, event_id="e2", at=2.0).customer_id
    for k, v in store.items():
        identity.restore(0, k, v)
    context.restore(2, b"cust-1", b'{"customer_id":"cust-1"}')
    context.restore(2, b"~m:cust-0", b"cust-1")  # markers are not contexts
    for table, partition in ((identity, 0), (context, 2)):
        assert table.on_restored is not None
        table.on_restored(partition, table._data[partition])
    assert writer._dirty == {
        index_key("email", "jane@x.org"): merged.encode(), index_key("phone", "+447700900123"): merged.encode(),
        context_key("cust-1"): b'{"customer_id":"cust-1"}',
    }


def test_a_restored_routing_group_ticks_and_a_given_up_one_stops() -> None:
    """After a restart no record may come for a group: its restored router must still run its timers and statistics."""
    from cxstream.agents import router as router_agent
    from cxstream.routing import Router
    from tests.unit.routing.routing_fixtures import login

    rt = BatchRuntime("127.0.0.1:9", Settings())
    stage, host = router_agent.stage(rt, Settings())
    table = stage.tables[0]
    r = Router(group="default")
    r.apply(login("ann", 5.0))
    table.restore(1, b"default", router_agent.pack_saved(7, r.to_state()))
    assert table.on_restored is not None
    table.on_restored(1, table._data[1])
    assert set(host.clocks) == {"default"} and host.tick_time("default") >= 5.0
    assert host.routers["default"][1].stats()["advisors"]["logged_in"] == 1
    table.drop(1)  # a rebalance gave partition 1 to another worker
    assert host.clocks == {} and host.routers == {}


def test_a_batch_s_table_changes_are_produced_only_after_its_outputs_are_acknowledged() -> None:
    """A changelog ahead of the outputs would make a redelivered input look like a duplicate after a crash."""

    class _Acks(_RecordingProducer):
        def __init__(self) -> None:
            super().__init__()
            self.pending: list[asyncio.Future[Any]] = []

        async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int | None = None,
                       headers: Any = None) -> asyncio.Future[Any]:
            self.sent.append((topic, key, partition, bool(headers)))
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.pending.append(fut)
            return fut

    async def scenario() -> None:
        rt = BatchRuntime("127.0.0.1:9", Settings(), echo_linger_ms=50)
        producer = _Acks()
        rt._producer = producer  # type: ignore[assignment]
        table = rt.table("ctx_state", 4)
        stage = rt.stage("context", [CUSTOMER_EVENTS], tables=[table])
        tp = TopicPartition(stage.inputs[0], 0)
        rt.owned.add(tp)
        table.partition = 2
        table[b"cust"] = b"applied"
        rt.buffer += [("routing", b"g", b"request"), ("ctx", b"a", b"1")]
        rt._route = {1: (0, True)}  # the second is delivered locally: held
        futures = await rt.send_all()
        rt._in_flight.append((futures, {tp: 10}))
        assert producer.sent == [("routing", b"g", None, False)], "no changelog before the outputs are in"
        await rt.settle()
        assert len(producer.sent) == 1, "the held record is not acknowledged either"
        await rt.push_held()
        for fut in producer.pending:
            fut.set_result(SimpleNamespace(offset=1))
        await rt.settle()
        assert producer.sent[-1] == (table.changelog, b"cust", 2, False) and rt._processed == {}
        producer.pending[-1].set_result(SimpleNamespace(offset=2))
        await rt.settle()
        assert rt._processed == {tp: 10}

    asyncio.run(scenario())


def _defers_writes(stage: Any, table: Table) -> dict[str, bool]:
    """Make *stage* defer its table writes as the router does: it applies each record's value to a state it writes
    to *table* (partition 1, key ``group``) after a batch only when the returned ``{"now": ...}`` says the write is
    due (the router: 200 ms since its last), else it is ``unsaved``; ``on_idle`` writes."""
    state: list[bytes] = []  # what the stage applied
    due = {"now": False}

    async def handle(rec: Record) -> None:
        state.append(rec.value or b"")

    async def write() -> None:
        table.partition = 1
        table[b"group"] = b",".join(state)

    async def after_batch() -> None:
        if due["now"]:
            await write()
            stage.unsaved = False
        else:
            stage.unsaved = True

    stage.handler, stage.on_batch, stage.on_idle = handle, after_batch, write
    return due


def test_a_stage_that_defers_its_table_writes_holds_its_inputs_commits_back_until_it_writes() -> None:
    """The router saves a group at most every CX_ROUTER_SAVE_INTERVAL_MS: its offsets must not be committed past that save."""

    async def scenario() -> list[dict[TopicPartition, int]]:
        rt = BatchRuntime("127.0.0.1:9", Settings(topic_prefix="p."))
        producer = _RecordingProducer()
        rt._producer = producer  # type: ignore[assignment]
        table = rt.table("router_state", 4)
        stage = rt.stage("router", [ROUTING], tables=[table])
        other = rt.stage("context", [CUSTOMER_EVENTS])
        tp, tp_other = TopicPartition(stage.inputs[0], 1), TopicPartition(other.inputs[0], 0)
        rt.owned.update({tp, tp_other})
        due = _defers_writes(stage, table)

        async def nothing(rec: Record) -> None:
            return None

        other.handler = nothing
        seen = []
        for first, save in ((0, False), (3, True), (5, False)):
            due["now"] = save
            await rt.process({tp: [message(first, b"group", b"%d" % first), message(first + 1, b"group", b"x")],
                              tp_other: [message(first, b"c", b"e")]})
            await rt.settle(everything=True)
            seen.append(dict(rt._processed))
        due["now"] = True  # a batch without the stage's inputs: its write comes due all the same
        await rt.process({tp_other: [message(7, b"c", b"e")]})
        await rt.settle(everything=True)
        seen.append(dict(rt._processed))
        due["now"] = False
        await rt.process({tp: [message(7, b"group", b"7")]})
        await rt.settle(everything=True)
        await rt._save_deferred()
        await rt.settle(everything=True)
        seen.append(dict(rt._processed))
        assert producer.sent[-1] == (table.changelog, b"group", 1, False) and table.get(b"group") == b"0,x,3,x,5,x,7"
        await rt._save_deferred()  # nothing deferred: nothing sent
        assert producer.sent[-1] == (table.changelog, b"group", 1, False) and len(producer.sent) == 3
        return seen

    seen = asyncio.run(scenario())
    tp, tp_other = TopicPartition("p.cx.routing.v1", 1), TopicPartition("p.cx.customer-events.v1", 0)
    assert seen == [
        {tp_other: 1},  # not saved yet: nothing of the router's input is committable; the other stage's is
        {tp: 5, tp_other: 4},  # saved after batch 2: everything so far
        {tp: 5, tp_other: 6},  # batch 3 not saved: held where the save left it
        {tp: 7, tp_other: 8},  # written after a batch of the other stage's only
        {tp: 8, tp_other: 8},  # batch 5 not saved, then written when idle: committable up to the end
    ]


class _Commits:
    """A consumer stand-in that records each commit at once."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})


class _ValueProducer(_RecordingProducer):
    """As :class:`_RecordingProducer`, keeping each record's value too."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[bytes | None] = []

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int | None = None,
                   headers: Any = None) -> asyncio.Future[Any]:
        self.values.append(value)
        return await super().send(topic, value, key=key, partition=partition, headers=headers)


def test_a_stage_that_defers_its_table_writes_writes_them_before_its_partitions_are_given_up() -> None:
    """The router applied records it was handed locally and has not written its state: a rebalance must not drop that.

    Their upstream offsets are committed once they are produced, and their copies in the router's
    input carry this worker's token: if the partition comes back here they are skipped as applied.
    A write dropped with the partition lost them for good (seen after kill -9s in make chaos:
    advisors whose ``done`` was lost stayed busy, and the contacts held for them were never assigned).
    """

    async def scenario() -> tuple[_ValueProducer, _Commits, bytes | None, str]:
        rt = BatchRuntime("127.0.0.1:9", Settings(topic_prefix="p."), commit_interval_s=0.0)
        producer, consumer = _ValueProducer(), _Commits()
        rt._producer, rt.consumer = producer, consumer  # type: ignore[assignment]
        table = rt.table("router_state", 4)
        stage = rt.stage("router", [ROUTING], tables=[table])
        tp = TopicPartition(stage.inputs[0], 1)
        rt.owned.add(tp)
        due = _defers_writes(stage, table)

        async def no_changelog_ends(wanted: Any) -> dict[TopicPartition, int]:
            return {}  # (the broker's part: the partition is then not kept aside)

        rt._changelog_ends = no_changelog_ends  # type: ignore[method-assign]
        due["now"] = True
        await rt.process({tp: [message(0, b"group", b"accept")]})  # written at once
        due["now"] = False
        await rt.process({tp: [message(1, b"group", b"done")]})  # its write not due yet (the router: 200 ms)
        await rt.settle(everything=True)
        written_before = table.get(b"group")
        await rt._revoked([tp])
        return producer, consumer, written_before, table.changelog

    producer, consumer, written_before, changelog = asyncio.run(scenario())
    tp = TopicPartition("p.cx.routing.v1", 1)
    assert written_before == b"accept", "the write was deferred"
    assert producer.sent[-1][:3] == (changelog, b"group", 1) and producer.values[-1] == b"accept,done", (
        "written to the changelog before the partition went")
    assert consumer.commits[-1] == {tp: 2}, "and its input committed through what the write covers"


def test_a_partition_given_up_is_kept_aside_and_made_current_again_only_if_it_comes_back() -> None:
    """The group's eager protocol revokes every partition on every rebalance: most come back to the same worker."""
    dropped: list[tuple[int, dict[bytes, bytes]]] = []
    t = Table("ctx", "app-ctx-changelog", 4)
    t.on_dropped = lambda p, data: dropped.append((p, dict(data)))
    for p in (1, 2, 3):
        t.restore(p, b"k", f"v{p}".encode())
    t.drop(1, keep_at=40)
    t.drop(2, keep_at=7)
    t.drop(3)  # the changelog end offsets could not be read: not kept
    assert [p for p, _ in dropped] == [1, 2, 3], "what the owner derived is dropped at once"
    assert t.held() == [] and t.total() == 0, "kept data is not served"
    t.discard_kept({1})  # the new assignment: partition 2 went to another worker
    assert t.take_kept(1) == 40 and dict(t.held()) == {1: {b"k": b"v1"}}, "read the changelog on from offset 40"
    assert t.take_kept(2) == 0 and t.take_kept(3) == 0, "restored from the start"
    t.partition = 1
    t[b"k"] = b"changed"  # not yet taken for the changelog ...
    t.drop(1, keep_at=41)
    assert t.take_kept(1) == 0, "... so the data is ahead of the changelog: not kept"
    assert t.get(b"k") is None
