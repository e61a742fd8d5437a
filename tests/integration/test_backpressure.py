"""Liveness under a burst: every event of a burst reaches the context, and no stage stops consuming.

Regression test for the stall of the context benchmark at full size: the identity stage
stopped consuming while ingest went on.  Cause: the embedded broker (Tansu, memory engine)
needs time proportional to a partition's log to serve a fetch and, when that exceeds the
fetch's ``max_wait_ms``, answers with no records at all; the engine's 10 ms idle wait
(``CX_FETCH_WAIT_MS``) starved the single-partition ``cx.resolve.v1`` once it held ~30,000
one-record batches (docs/ARCHITECTURE.md, "Delivery and failure").  The transport now uses
a long wait whenever a fetched partition lags (``cxstream/streams/transport.py``).

Reaching 30,000 batches takes minutes, so this test scales the same condition down, and
makes it deterministic: the engine runs with a 1 ms idle wait, and the first part of the burst
is written straight onto ``cx.resolve.v1`` one record per batch (as the HTTP API publishes
erasure requests; ingest does the same whenever events arrive slower than its linger), so the
log identity reads soon holds thousands of batches; the rest goes through ingest.  Measured on
a fresh Tansu (raw fetches, 1-record batches): with a 1 ms wait a 1,000-batch log already
answers with no records, a 3 ms wait at 3,000 batches, 10 ms at ~20,000.  Before the fix the
engine's identity stage stops early and the test fails on "no stage moved for 10 s"; after it
the whole burst reaches the context.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator

import msgspec
import pytest
import redis
from aiokafka import AIOKafkaProducer

from cxstream.schemas import Identifiers, InteractionEvent, ResolveRequest
from cxstream.streams import topics as t
from cxstream.streams.keys import context_key
from cxstream.streams.transport import LAGGING_FETCH_WAIT_MS, install_lag_aware_wait
from tests.integration.conftest import API_KEY, RunningEngine, start_engine, stop_engine

pytestmark = pytest.mark.integration

#: Events written straight onto cx.resolve.v1 (one record per batch), then through ingest.
DIRECT = int(os.environ.get("CX_TEST_BURST_DIRECT", "2500"))
VIA_INGEST = int(os.environ.get("CX_TEST_BURST_INGEST", "500"))
BURST = DIRECT + VIA_INGEST
#: Idle fetch wait of the engine under test: scaled down from the default 10 ms (see the module doc).
FETCH_WAIT_MS = os.environ.get("CX_TEST_BURST_FETCH_WAIT_MS", "1")
DEADLINE_S = 50.0
#: No stage counter moved for this long while contexts are missing: the stall this test is about.
STALL_S = 10.0


@pytest.fixture(scope="module")
def burst_engine(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    broker, redis_url = servers
    tag = uuid.uuid4().hex[:8]
    e = start_engine(broker, redis_url, tmp_path_factory.mktemp("burst"), f"b{tag}.", f"cxburst-{tag}", CX_FETCH_WAIT_MS=FETCH_WAIT_MS)
    yield e
    stop_engine(e)


def stage_counts(engine: RunningEngine) -> dict[str, float]:
    req = urllib.request.Request(engine.http + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        text = resp.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cx_stage_seconds_count{"):
            stage = line.split('stage="', 1)[1].split('"', 1)[0]
            counts[stage] = float(line.rsplit(" ", 1)[1])
    return counts


async def publish_burst(engine: RunningEngine, direct: list[InteractionEvent], via_ingest: list[InteractionEvent]) -> None:
    """*direct* onto cx.resolve.v1 one record per batch, then *via_ingest* as fast as the producer goes."""
    producer = AIOKafkaProducer(bootstrap_servers=engine.broker, linger_ms=0, acks="all")
    await producer.start()
    try:
        resolve = engine.topic(t.RESOLVE.name)
        for ev in direct:  # ingest's output: validated, normalised identifiers, no text to redact
            await producer.send_and_wait(resolve, msgspec.json.encode(ResolveRequest(event=ev)), key=ev.event_id.encode())
        inputs = engine.topic(t.INTERACTIONS.name)
        for ev in via_ingest:
            await producer.send(inputs, msgspec.json.encode(ev), key=ev.event_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


class _State:
    def __init__(self, position: int | None, highwater: int | None, paused: bool = False) -> None:
        self._position, self.highwater, self.paused = position, highwater, paused

    @property
    def has_valid_position(self) -> bool:
        return self._position is not None

    @property
    def position(self) -> int:
        assert self._position is not None
        return self._position


class _Assignment:
    def __init__(self, states: dict[str, _State]) -> None:
        self.states = states
        self.tps = frozenset(states)

    def state_value(self, tp: str) -> _State:
        return self.states[tp]


class _Fetcher:
    """The three aiokafka ``Fetcher`` internals the transport relies on."""

    def __init__(self) -> None:
        self._records: dict[str, object] = {}
        self._fetch_max_wait_ms = 10
        self.waits: list[int] = []

    def _get_actions_per_node(self, assignment: _Assignment) -> None:
        self.waits.append(self._fetch_max_wait_ms)


def test_fetch_wait_is_long_only_while_a_fetched_partition_lags() -> None:
    f = _Fetcher()
    assert install_lag_aware_wait(f, idle_ms=10)
    f._get_actions_per_node(_Assignment({"caught-up": _State(5, 5), "new": _State(0, None), "no-position": _State(None, 9)}))
    f._get_actions_per_node(_Assignment({"caught-up": _State(5, 5), "lagging": _State(30_482, 46_220)}))
    f._get_actions_per_node(_Assignment({"paused": _State(0, 9, paused=True)}))  # not fetched: its lag does not count
    f._records["buffered"] = object()  # records fetched, not yet handed to Faust: not fetched either
    f._get_actions_per_node(_Assignment({"buffered": _State(0, 9)}))
    assert f.waits == [10, LAGGING_FETCH_WAIT_MS, 10, 10]


def test_the_aiokafka_fetcher_still_has_the_internals_the_transport_hooks() -> None:
    from aiokafka.consumer.fetcher import Fetcher

    assert callable(Fetcher._get_actions_per_node)
    assert "_fetch_max_wait_ms" in Fetcher.__init__.__code__.co_names
    assert "_records" in Fetcher.__init__.__code__.co_names


def test_a_burst_is_applied_in_full_and_identity_keeps_consuming(burst_engine: RunningEngine, servers: tuple[str, str]) -> None:
    tag = uuid.uuid4().hex[:8]
    now = time.time()
    customers = [f"bp-{tag}-{i}" for i in range(BURST)]
    events = [
        InteractionEvent(
            event_id=f"bp-{tag}-{i}", occurred_at=now + i * 1e-3, channel="chat", kind="message", contact_id=f"k-{tag}-{i}",
            customer=Identifiers(customer_id=cid, email=f"{cid}@burst.example.org"), text="where is my parcel",
        )
        for i, cid in enumerate(customers)
    ]
    before = stage_counts(burst_engine)
    started = time.monotonic()
    asyncio.run(publish_burst(burst_engine, events[:DIRECT], events[DIRECT:]))

    def moved(counts: dict[str, float]) -> dict[str, int]:
        return {k: int(counts.get(k, 0) - before.get(k, 0)) for k in ("ingest", "identity", "context")}

    client = redis.Redis.from_url(servers[1])
    missing = [context_key(cid) for cid in customers]
    history: list[tuple[float, dict[str, int]]] = []
    last_progress = time.monotonic()
    try:
        # Until every context is there; a stage that stops moving while it is behind fails at once
        # (the bug), a slow one only at the deadline (a shared CI machine may be busy).
        while missing and time.monotonic() - started < DEADLINE_S and time.monotonic() - last_progress < STALL_S:
            time.sleep(0.5)
            pipe = client.pipeline(transaction=False)
            for k in missing:
                pipe.exists(k)
            missing = [k for k, found in zip(missing, pipe.execute(), strict=True) if not found]
            now_counts = moved(stage_counts(burst_engine))
            if not history or now_counts != history[-1][1]:
                last_progress = time.monotonic()
            history.append((round(time.monotonic() - started, 1), now_counts))
    finally:
        client.close()
    took = time.monotonic() - started
    stalled = f" (no stage moved for {STALL_S:.0f} s)" if time.monotonic() - last_progress >= STALL_S else ""
    assert not missing, (
        f"{len(missing)} of {BURST} contexts missing after {took:.0f} s{stalled}; "
        f"stage counters (s since start, events): {history[-4:]}"
    )
    print(f"burst of {BURST} applied in {took:.1f} s")
