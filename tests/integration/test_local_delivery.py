"""Local delivery (CX_LOCAL_DELIVERY) changes when a stage sees a record, never what comes out.

Two engines on the same broker, one delivering records to its own context and router stages
in the same batch (the router because it is its group's only worker; identity never: it reads
its input in log order) and one sending every hop through the broker, are given the same
journey (a customer switching channel and identifier, a second customer merged into the
first, a routed contact).  Their contexts and assignments must be the same; the local one
must have delivered records locally and skipped every one of them when it came back from
the topic (so nothing was applied twice).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from cxstream.schemas import Identifiers, InteractionEvent
from cxstream.streams import topics as t
from cxstream.streams.admin import partitions_of
from cxstream.streams.batch import LOCAL_HEADER
from tests.integration.conftest import RunningEngine, start_engine, stop_engine
from tests.integration.helpers import produce, wait_for
from tests.integration.test_pipeline import assignments_for, get, login, opened

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engines(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningEngine, RunningEngine]]:
    broker, redis_url = servers
    local_tag, broker_tag = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    local = start_engine(broker, redis_url, tmp_path_factory.mktemp("local"), f"l{local_tag}.", f"cxlocal-{local_tag}")
    try:
        via_broker = start_engine(
            broker, redis_url, tmp_path_factory.mktemp("via"), f"b{broker_tag}.", f"cxbroker-{broker_tag}",
            CX_LOCAL_DELIVERY="0",
        )
    except BaseException:
        stop_engine(local)
        raise
    yield local, via_broker
    stop_engine(via_broker)
    stop_engine(local)


def metric(engine: RunningEngine, name: str, **labels: str) -> float:
    """The sum of *name* over the series whose labels include *labels* (0 if none)."""
    status, body = get(engine, "/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        m = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def journey(run: str) -> tuple[list[tuple[bytes, InteractionEvent]], str, str, str]:
    """A web chat by email, a call by phone that links the two, a second customer merged into the first, a routed call."""
    email, phone, other = f"jane-{run}@example.com", "+442079460" + str(100 + int(run[:4], 16) % 900), f"C-{run}-2"
    group, contact = f"g-{run}", f"k-{run}"
    now = time.time()

    def ev(n: int, ids: Identifiers, kind: str, channel: str, text: str | None = None) -> InteractionEvent:
        return InteractionEvent(
            event_id=f"e-{run}-{n}", occurred_at=now + n * 0.01, channel=channel, kind=kind, customer=ids,
            contact_id=f"c-{run}-{n}", text=text,
        )

    events = [
        ev(1, Identifiers(email=email), "message", "chat", "my card was charged twice"),
        ev(2, Identifiers(email=email), "message", "chat", "still waiting for the refund"),
        ev(3, Identifiers(phone=phone, email=email), "message", "voice", "calling about the double charge"),
        ev(4, Identifiers(customer_id=other), "message", "email", "please close my old account"),
        ev(5, Identifiers(customer_id=other, phone=phone), "message", "sms", "same person, new number"),
        ev(6, Identifiers(phone=phone), "message", "sms", "any news?"),
    ]
    routed = opened(Identifiers(email=email), contact, group, now + 0.1)
    return [(b"journey", e) for e in events] + [(b"journey", routed)], email, group, contact


def essentials(ctx: dict[str, Any]) -> dict[str, Any]:
    """What local delivery must not change (ids are derived from the inputs, so they must match too)."""
    return {
        "customer_id": ctx["customer_id"],
        "interactions_total": ctx["interactions_total"],
        "recent": sorted(i["event_id"] for i in ctx["recent"]),
        "identifiers": ctx["identifiers"],
        "open_contacts": {k: v["state"] for k, v in ctx["open_contacts"].items()},
        "last_advisor_id": ctx.get("last_advisor_id"),
        "intents": sorted(i.get("intent", "") for i in ctx["recent"]),
    }


async def local_headers(broker: str, topic: str) -> tuple[int, int]:
    """(records, records carrying the local-delivery header) in *topic*."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        total = marked = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                break
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                total += len(msgs)
                marked += sum(1 for m in msgs if any(k == LOCAL_HEADER for k, _ in (m.headers or ())))
        return total, marked
    finally:
        await consumer.stop()


def test_local_delivery_gives_the_same_contexts_and_assignments_as_the_broker(
    engines: tuple[RunningEngine, RunningEngine],
) -> None:
    local, via_broker = engines
    run = uuid.uuid4().hex[:8]
    events, email, group, contact = journey(run)
    results = []
    advisor = f"adv-{run}"
    for engine in (local, via_broker):
        asyncio.run(produce(engine.broker, engine.topic(t.ADVISOR_EVENTS.name), [login(advisor, group, time.time(), capacity={"voice": 1})]))
        asyncio.run(produce(engine.broker, engine.topic(t.INTERACTIONS.name), events))
        (a,) = assignments_for(engine, group, 1)

        def settled(engine: RunningEngine = engine) -> dict[str, Any] | None:
            status, body = get(engine, f"/customers/context?email={email}")
            if status != 200 or body["interactions_total"] != 7 or body.get("last_advisor_id") != advisor:
                return None
            return body

        ctx = wait_for(settled, timeout=30)
        results.append(((a.advisor_id, a.contact_id, a.customer_id, a.assignment_id), essentials(ctx)))
    (a_local, ctx_local), (a_broker, ctx_broker) = results
    assert a_local == a_broker and a_local[1] == contact
    assert ctx_local == ctx_broker
    assert len(ctx_local["recent"]) == 7 and ctx_local["open_contacts"][contact] == "assigned"

    # the local engine delivered to the context and the router locally (the router because this engine is its
    # group's only worker), and dropped every such record when it came back; never to identity, which reads
    # cx.resolve in log order (a record it acted on must be in the log: cxstream.streams.batch)
    for engine in (local, via_broker):
        assert metric(engine, "cx_stage_local_records_total", stage="identity", outcome="delivered") == 0
    for stage in ("context", "router"):
        assert metric(local, "cx_stage_local_records_total", stage=stage, outcome="delivered") > 0, stage
        wait_for(
            lambda stage=stage: metric(local, "cx_stage_local_records_total", stage=stage, outcome="skipped")
            == metric(local, "cx_stage_local_records_total", stage=stage, outcome="delivered"),
            timeout=20,
        )
        assert metric(via_broker, "cx_stage_local_records_total", stage=stage, outcome="delivered") == 0
    assert metric(local, "cx_duplicates_total", stage="context") == 0, "nothing was applied twice"
    total, marked = asyncio.run(local_headers(local.broker, local.topic(t.CUSTOMER_EVENTS.name)))
    assert total >= 7 and marked > 0, "locally delivered records are still produced to their topic"
    total, marked = asyncio.run(local_headers(via_broker.broker, via_broker.topic(t.CUSTOMER_EVENTS.name)))
    assert total >= 7 and marked == 0
    total, marked = asyncio.run(local_headers(local.broker, local.topic(t.RESOLVE.name)))
    assert total >= 7 and marked == 0, "identity's input is never handed over: none of it carries the header"


def test_two_workers_deliver_locally_only_what_they_own_and_lose_nothing(
    servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two workers of one app: each hands over only records for partitions it owns, the router none."""
    broker, redis_url = servers
    tag = uuid.uuid4().hex[:8]
    prefix, app_id = f"w{tag}.", f"cxtwo-{tag}"
    a = start_engine(broker, redis_url, tmp_path_factory.mktemp("wa"), prefix, app_id)
    try:
        b = start_engine(broker, redis_url, tmp_path_factory.mktemp("wb"), prefix, app_id)
    except BaseException:
        stop_engine(a)
        raise
    try:
        workers = (a, b)
        # the group has settled when both own a share and neither thinks it is alone
        wait_for(
            lambda: all(
                metric(w, "cx_stages_partitions_owned") > 0 and metric(w, "cx_stages_alone") == 0 for w in workers
            ),
            timeout=60,
        )
        run = uuid.uuid4().hex[:8]
        group, advisor = f"g-{run}", f"adv-{run}"
        now = time.time()
        asyncio.run(produce(broker, a.topic(t.ADVISOR_EVENTS.name), [login(advisor, group, now, capacity={"chat": 20})]))
        events: list[tuple[bytes, InteractionEvent]] = []
        for n in range(12):  # customers spread over every partition: a chat by email, then an SMS linking a phone
            email, phone = f"c{n}-{run}@example.com", f"+44207946{n:04d}"
            key = f"cust-{n}".encode()
            events += [
                (key, InteractionEvent(
                    event_id=f"m1-{run}-{n}", occurred_at=now + 0.01 * n, channel="chat", kind="message",
                    customer=Identifiers(email=email), contact_id=f"c1-{run}-{n}", text="where is my new card",
                )),
                (key, InteractionEvent(
                    event_id=f"m2-{run}-{n}", occurred_at=now + 0.01 * n + 0.001, channel="sms", kind="message",
                    customer=Identifiers(email=email, phone=phone), contact_id=f"c2-{run}-{n}", text="still no card",
                )),
                (key, opened(Identifiers(phone=phone), f"k-{run}-{n}", group, now + 0.2 + 0.01 * n, channel="chat")),
            ]
        asyncio.run(produce(broker, a.topic(t.INTERACTIONS.name), events))

        got = assignments_for(a, group, 12)
        assert sorted(x.contact_id for x in got) == sorted(f"k-{run}-{n}" for n in range(12)), "each contact assigned once"
        for n in range(12):
            email = f"c{n}-{run}@example.com"

            def settled(n: int = n, email: str = email) -> dict[str, Any] | None:
                status, body = get(b if n % 2 else a, f"/customers/context?email={email}")
                return body if status == 200 and body["interactions_total"] == 3 and body.get("last_advisor_id") == advisor else None

            ctx = wait_for(settled, timeout=30)
            assert sorted(i["event_id"] for i in ctx["recent"])[:2] == sorted([f"m1-{run}-{n}", f"m2-{run}-{n}"])

        delivered = {
            stage: sum(metric(w, "cx_stage_local_records_total", stage=stage, outcome="delivered") for w in workers)
            for stage in ("identity", "context", "router")
        }
        assert delivered["router"] == 0, "the router takes records locally only when its worker is alone"
        assert delivered["identity"] == 0, "identity reads its input in log order"
        assert delivered["context"] > 0, "each worker still hands records to the context partitions it owns"
        assert sum(metric(w, "cx_stage_local_records_total", stage="context", outcome="via_broker") for w in workers) > 0
        for w in workers:
            wait_for(
                lambda w=w: metric(w, "cx_stage_local_records_total", stage="context", outcome="skipped")
                == metric(w, "cx_stage_local_records_total", stage="context", outcome="delivered"),
                timeout=20,
            )
    finally:
        stop_engine(b)
        stop_engine(a)
