"""Early sending (CX_EARLY_SEND_MS, cxstream/streams/earlysend.py) on the real broker.

A stage's record for a stage of the same worker that reads it back through the broker (ingest's
to ``cx.resolve.v1``) is in the log while the rest of its batch is still being processed, so the
next batch can hold it, when the stages after it have enough work left in the batch; with the
setting off, or less work left than it asks for, it is produced only when the batch is done.
Either way the reading stage gets every record once.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cxstream.streams import metrics
from cxstream.streams.admin import ensure_topics
from cxstream.streams.batch import BatchRuntime, Record
from cxstream.streams.settings import Settings
from cxstream.streams.topics import CUSTOMER_EVENTS, DEAD_LETTER, INTERACTIONS, RESOLVE

pytestmark = pytest.mark.integration

RECORDS = 4
WARM_UP = b"warm-up"


def _early_sends(outcome: str) -> float:
    return float(metrics.EARLY_SENDS.labels(outcome)._value.get())  # type: ignore[attr-defined]


def _read_back(outcome: str) -> float:
    return float(metrics.EARLY_READ_BACK.labels(outcome)._value.get())  # type: ignore[attr-defined]


async def _in_log(watcher: AIOKafkaConsumer, value: bytes, seen: set[bytes], timeout_s: float) -> bool:
    """Whether *value* is (or, within *timeout_s*, comes) among the records *watcher* reads; *seen* keeps what it read."""
    deadline = time.monotonic() + timeout_s
    while value not in seen and time.monotonic() < deadline:
        for records in (await watcher.getmany(timeout_ms=50)).values():
            seen.update(r.value for r in records)
    return value in seen


async def _scenario(broker: str, early_ms: float, wait_s: float) -> list[bool]:
    """A warm-up and RECORDS interactions, one a batch, through an ingest stage that sends each to cx.resolve.v1
    (read back by an identity stage) and hands it to a local context stage in the same batch, whose handler waits
    up to *wait_s* for that record to be in the log.  Returns, for each of the RECORDS, whether it was; identity
    must have got every record once."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(topic_prefix=f"es{tag}.", app_id=f"cxes-{tag}", partitions=2, early_send_ms=early_ms)
    name = {spec: settings.topic_prefix + spec.name for spec in (INTERACTIONS, RESOLVE, CUSTOMER_EVENTS)}
    await ensure_topics(broker, settings, (INTERACTIONS, RESOLVE, CUSTOMER_EVENTS, DEAD_LETTER), prefix=settings.topic_prefix)
    rt = BatchRuntime(broker, settings)
    ingest = rt.stage("ingest", [INTERACTIONS])
    to_resolve, to_context = ingest.output(name[RESOLVE]), ingest.output(name[CUSTOMER_EVENTS])

    async def on_interaction(rec: Record) -> None:
        await to_resolve.send(rec.key, rec.value)
        await to_context.send(rec.key, rec.value)

    ingest.handler = on_interaction
    resolved: list[bytes] = []

    async def on_resolve(rec: Record) -> None:
        assert rec.value is not None
        resolved.append(rec.value)

    rt.stage("identity", [RESOLVE]).handler = on_resolve
    watcher = AIOKafkaConsumer(bootstrap_servers=broker, auto_offset_reset="earliest", fetch_max_wait_ms=20)
    in_log: dict[bytes, bool] = {}
    seen: set[bytes] = set()

    async def on_customer_event(rec: Record) -> None:
        assert rec.value is not None
        if rec.offset == -1:  # handed over in the batch that ingest sent it in
            in_log[rec.value] = await _in_log(watcher, rec.value, seen, 0.2 if rec.value == WARM_UP else wait_s)

    rt.stage("context", [CUSTOMER_EVENTS], local=True).handler = on_customer_event
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    await watcher.start()
    watcher.assign([TopicPartition(name[RESOLVE], p) for p in range(2)])
    try:
        await rt.start()
        # local delivery waits until the worker knows it is caught up on the context stage's partitions
        deadline = time.monotonic() + 30
        parts = [TopicPartition(name[CUSTOMER_EVENTS], p) for p in range(2)]
        while not all(rt._caught_up(tp) for tp in parts):
            assert time.monotonic() < deadline, "the worker never caught up on its context partitions"
            await asyncio.sleep(0.05)
        # the first interaction tells the worker what the context stage costs per record (here: the wait below)
        values = [WARM_UP, *(b"r%d" % n for n in range(RECORDS))]
        for n, value in enumerate(values):
            await producer.send_and_wait(name[INTERACTIONS], value, key=b"k%d" % n)
            deadline = time.monotonic() + 30
            while len(resolved) <= n and time.monotonic() < deadline:  # one interaction a batch
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # (nothing more may come)
        assert sorted(resolved) == sorted(values)  # each once
        assert set(in_log) == set(values), "every interaction is handed to the context stage in its batch"
        return [in_log[v] for v in values[1:]]
    finally:
        await rt.stop()
        await watcher.stop()
        await producer.stop()


def test_a_record_read_back_is_in_the_log_while_its_batch_is_still_processed(servers: tuple[str, str]) -> None:
    broker, _ = servers
    taken, next_batch, late = _early_sends("taken") + _early_sends("behind"), _read_back("next_batch"), _read_back("later")
    in_log = asyncio.run(_scenario(broker, early_ms=50.0, wait_s=10.0))  # the context stage waits longer
    assert len(in_log) == RECORDS and all(in_log), in_log
    assert _early_sends("taken") + _early_sends("behind") - taken >= RECORDS
    # each early send is followed by a look whether the worker's fetch has the records back before the next
    # batch is taken; the batch waited for the record to be in the log, so it mostly has
    back, later = _read_back("next_batch") - next_batch, _read_back("later") - late
    assert back + later >= RECORDS and back >= 1, (back, later)


@pytest.mark.parametrize("early_ms", [0.0, 60_000.0], ids=["off", "more work asked for than is left"])
def test_otherwise_a_batch_produces_only_when_it_is_done(servers: tuple[str, str], early_ms: float) -> None:
    broker, _ = servers
    sends = _early_sends("taken") + _early_sends("behind")
    in_log = asyncio.run(_scenario(broker, early_ms=early_ms, wait_s=1.0))
    assert len(in_log) == RECORDS and not any(in_log), in_log
    assert _early_sends("taken") + _early_sends("behind") == sends
