"""The stages' group joins (cxstream/streams/groupjoin.py) on the real broker.

The stages' consumers offer two assignment protocols (``cx-roundrobin``, then ``roundrobin``).
aiokafka 0.14 sends one JoinGroup per protocol offered, each offering more, and the coordinator
starts a new rebalance for each change: a consumer alone in its group came out of its first join at
generation 2, and two started together could keep rebalancing for ever.  With the fix each join
offers the whole list every time:

* a consumer alone joins once: generation 1 (aiokafka's own join, run here too, gives 2: the day
  aiokafka sends one request per join, that test fails and says the fix can go);
* two consumers started at the same moment, six times over, settle at generation 2 at most (one
  rebalance per member joining), share the partitions, and no rebalance follows;
* a third joining a settled group of two costs one rebalance, not more;
* two engine workers (``cxstream run``) started at the same moment are both ready, their stages'
  group at generation 2 at most (aiokafka's own join: 4, ``bench/chaos/parallel_start.py``), and
  each counts the rebalances it took part in (``cx_stages_rebalances_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer import group_coordinator
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from cxstream.streams.admin import ensure_named_topics
from cxstream.streams.assignor import GroupAssignor
from cxstream.streams.groupjoin import OneListRebalance, install
from cxstream.streams.settings import Settings
from tests.integration.conftest import start_engine, stop_engine
from tests.integration.helpers import wait_for
from tests.integration.test_local_delivery import metric

pytestmark = pytest.mark.integration

PARTITIONS = 6
QUIET_S = 3.0  # three heartbeats (1 s apart here): a rebalance under way would show by then
TRIALS = 6
AIOKAFKA_REBALANCE = OneListRebalance.__mro__[1]


async def _topic(broker: str) -> str:
    topic = f"gjoin-{uuid.uuid4().hex[:8]}"
    await ensure_named_topics(broker, [(topic, PARTITIONS, {})], Settings())
    return topic


def _member(broker: str, topic: str, group: str) -> AIOKafkaConsumer:
    """A consumer offering what a stages consumer offers (cxstream/streams/batch.py)."""
    return AIOKafkaConsumer(topic, bootstrap_servers=broker, group_id=group, enable_auto_commit=False,
                            session_timeout_ms=10000, heartbeat_interval_ms=1000,
                            partition_assignment_strategy=(GroupAssignor("auto"), RoundRobinPartitionAssignor))


def _generations(members: Sequence[AIOKafkaConsumer]) -> list[int | None]:
    return [getattr(m._coordinator, "generation", None) for m in members]


@contextlib.asynccontextmanager
async def _started(members: Sequence[AIOKafkaConsumer]) -> AsyncIterator[None]:
    """*members* started at the same moment (each start returns once it has its first assignment), stopped after."""
    try:
        try:
            await asyncio.wait_for(asyncio.gather(*(m.start() for m in members)), 60)
        except TimeoutError:
            raise AssertionError(f"not every member had an assignment in 60 s: generations {_generations(members)}") from None
        yield
    finally:
        await asyncio.gather(*(m.stop() for m in members), return_exceptions=True)


async def _settled(members: Sequence[AIOKafkaConsumer], timeout_s: float = 60.0) -> int:
    """Wait until every member holds a share of one generation's assignment, which then holds for QUIET_S; its generation."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        assert loop.time() < deadline, f"no settled assignment in {timeout_s:.0f} s: generations {_generations(members)}"
        generations = {m._coordinator.generation for m in members}
        shares = [m.assignment() for m in members]
        if len(generations) == 1 and all(shares) and sum(map(len, shares)) == PARTITIONS:
            [generation] = generations
            await asyncio.sleep(QUIET_S)
            if {m._coordinator.generation for m in members} == {generation} and [m.assignment() for m in members] == shares:
                return generation
        await asyncio.sleep(0.1)


def test_a_consumer_alone_joins_in_one_generation(servers: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    broker, _ = servers

    async def alone() -> int:
        topic = await _topic(broker)
        member = _member(broker, topic, f"gjoin-{uuid.uuid4().hex[:8]}")
        async with _started([member]):
            return await _settled([member])

    install()
    assert asyncio.run(alone()) == 1
    monkeypatch.setattr(group_coordinator, "CoordinatorGroupRebalance", AIOKAFKA_REBALANCE)
    assert asyncio.run(alone()) == 2, "aiokafka's own join no longer rebalances twice: cxstream/streams/groupjoin.py can go"


def test_two_consumers_started_together_settle_at_once_every_time(servers: tuple[str, str]) -> None:
    broker, _ = servers
    install()

    async def together() -> list[int]:
        topic = await _topic(broker)
        generations = []
        for _ in range(TRIALS):
            group = f"gjoin-{uuid.uuid4().hex[:8]}"
            members = [_member(broker, topic, group) for _ in range(2)]
            async with _started(members):
                generations.append(await _settled(members))
        return generations

    generations = asyncio.run(together())
    assert max(generations) <= 2, f"one rebalance per member at most: {generations}"


def test_a_third_member_costs_one_rebalance(servers: tuple[str, str]) -> None:
    broker, _ = servers
    install()

    async def third() -> tuple[int, int]:
        topic = await _topic(broker)
        group = f"gjoin-{uuid.uuid4().hex[:8]}"
        two = [_member(broker, topic, group) for _ in range(2)]
        async with _started(two):
            before = await _settled(two)
            late = _member(broker, topic, group)
            async with _started([late]):
                return before, await _settled([*two, late])

    before, after = asyncio.run(third())
    assert after == before + 1


def test_two_engine_workers_started_together_are_ready_after_one_rebalance_each(
    servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    broker, redis_url = servers
    tag = uuid.uuid4().hex[:8]
    prefix, app_id = f"gj{tag}.", f"cxgjoin-{tag}"
    with ThreadPoolExecutor(2) as pool:  # both launched at once; each call returns once its worker is ready
        started = [pool.submit(start_engine, broker, redis_url, tmp_path_factory.mktemp(f"gjoin{i}"), prefix, app_id, ready_s=120)
                   for i in range(2)]
        workers = [f.result() for f in started if f.exception() is None]
    try:
        errors = [str(f.exception()).splitlines() for f in started if f.exception() is not None]
        assert len(workers) == 2, f"not both ready: {[(e[0], e[-1]) for e in errors]}"  # the first line and the log's last
        wait_for(lambda: all(metric(w, "cx_stages_partitions_owned") > 0 for w in workers), timeout=60)
        joined = re.compile(rf"Joined group '{re.escape(app_id)}\.stages' \(generation (\d+)\)")
        generation = max(int(g) for w in workers for g in joined.findall(w.output()))
        assert generation <= 2, f"the stages' group rebalanced {generation} times for two workers"
        counted = [metric(w, "cx_stages_rebalances_total") for w in workers]
        assert all(1 <= n <= generation for n in counted), counted
    finally:
        for w in workers:
            stop_engine(w)
