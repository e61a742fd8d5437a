"""``CX_PROCESSING_GUARANTEE=exactly_once``: each batch's outputs, table changes and input offsets in one Kafka transaction.

On the embedded Apache Kafka: the engine routes as usual; what it writes is committed
(a read_committed consumer sees it; the internal topics hold transaction markers); the group's
offsets are committed through the transactions, and past the markers once idle, so its lag reads 0.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer

from cxstream.schemas import Identifiers, InteractionEvent
from cxstream.streams import topics as t
from cxstream.streams.admin import partitions_of
from tests.integration.conftest import RunningEngine, start_engine, stop_engine
from tests.integration.helpers import produce, read_to_end, wait_for
from tests.integration.test_pipeline import assignments_for, get, login, opened, uid

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def eos_engine(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningEngine, str]]:
    broker, redis_url = servers
    tag = uuid.uuid4().hex[:8]
    app_id = f"cxeos-{tag}"
    e = start_engine(broker, redis_url, tmp_path_factory.mktemp("eos"), f"x{tag}.", app_id, CX_PROCESSING_GUARANTEE="exactly_once")
    yield e, app_id
    assert stop_engine(e) == 0, e.output()[-3000:]


async def offsets(engine: RunningEngine, app_id: str, topic: str) -> tuple[int, int, int]:
    """(records a read_committed reader gets, end offset, the stages group's committed offset), summed over partitions."""
    records = len(await read_to_end(engine.broker, topic, isolation_level="read_committed"))
    group = AIOKafkaConsumer(bootstrap_servers=engine.broker, group_id=f"{app_id}.stages", enable_auto_commit=False,
                             isolation_level="read_committed")  # its end offsets: the last stable offsets
    await group.start()
    try:
        tps = await partitions_of(group, topic)
        ends = await group.end_offsets(tps)
        committed = sum([(await group.committed(tp)) or 0 for tp in tps])
        return records, sum(ends.values()), committed
    finally:
        await group.stop()


def test_routes_with_transactions_and_commits_past_their_markers(eos_engine: tuple[RunningEngine, str]) -> None:
    eos_engine, app_id = eos_engine  # type: ignore[assignment]
    group, advisor, contact = uid("g"), uid("adv"), uid("k")
    now = time.time()
    ids = Identifiers(email=f"{uid('eos')}@example.org")
    asyncio.run(produce(eos_engine.broker, eos_engine.topic(t.ADVISOR_EVENTS.name), [login(advisor, group, now, capacity={"chat": 1})]))
    message = InteractionEvent(event_id=uid("msg"), occurred_at=now + 0.2, channel="chat", kind="message", customer=ids,
                               contact_id=contact, text="my card was declined")
    asyncio.run(produce(eos_engine.broker, eos_engine.topic(t.INTERACTIONS.name),
                        [(b"k", opened(ids, contact, group, now + 0.1, channel="chat")), (b"k", message)]))

    (a,) = assignments_for(eos_engine, group, 1)  # read by a read_committed consumer: the transaction was committed
    assert (a.advisor_id, a.contact_id) == (advisor, contact)
    def context() -> dict[str, object] | None:
        code, ctx = get(eos_engine, f"/customers/context?email={ids.email}")
        return ctx if code == 200 and ctx["interactions_total"] == 2 else None

    assert wait_for(context)["channel_counts"] == {"chat": 2}

    def settled() -> tuple[int, int, int] | None:
        got = asyncio.run(offsets(eos_engine, app_id, eos_engine.topic(t.RESOLVE.name)))
        return got if got[2] == got[1] else None

    records, end, _ = wait_for(settled, timeout=30)
    assert end > records, "cx.resolve.v1 holds transaction markers besides its records"
