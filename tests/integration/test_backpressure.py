"""Liveness under a burst: every event of a burst reaches the context, and no stage stops consuming.

Regression test for a stall seen on the previous embedded broker (Tansu): the identity stage
stopped consuming the single-partition ``cx.resolve.v1`` while ingest went on, once that log
held tens of thousands of one-record batches (docs/PERFORMANCE.md, history).  Apache Kafka
serves a fetch from an offset index, whatever the log's length, but the condition stays worth
guarding: the first part of the burst is written straight onto ``cx.resolve.v1`` one record
per batch (as the HTTP API publishes erasure requests), so the log identity reads holds
thousands of batches; the rest goes through ingest.  A stage that stops moving for 10 s while
contexts are missing fails the test at once; a slow one only at the deadline.
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
from tests.integration.conftest import API_KEY, RunningEngine, start_engine, stop_engine

pytestmark = pytest.mark.integration

#: Events written straight onto cx.resolve.v1 (one record per batch), then through ingest.
DIRECT = int(os.environ.get("CX_TEST_BURST_DIRECT", "2500"))
VIA_INGEST = int(os.environ.get("CX_TEST_BURST_INGEST", "500"))
BURST = DIRECT + VIA_INGEST
DEADLINE_S = 50.0
#: No stage counter moved for this long while contexts are missing: the stall this test is about.
STALL_S = 10.0


@pytest.fixture(scope="module")
def burst_engine(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    broker, redis_url = servers
    tag = uuid.uuid4().hex[:8]
    e = start_engine(broker, redis_url, tmp_path_factory.mktemp("burst"), f"b{tag}.", f"cxburst-{tag}")
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
