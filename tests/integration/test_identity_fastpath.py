"""The identity fast path (``CX_IDENTITY_FAST_PATH``, cxstream/agents/fastpath.py) on the real broker and Redis.

* One worker, by default (``auto``): settled events go straight to their context, handed over in the
  worker (it is the group's only one); a contact opened with a new identifier
  (the identity stage must link it) and closed at once by an identifier already known is closed in
  the context, not left open by a close that overtook its open: the rule held the close back.
* Two workers of one app with ``1``: the same, with events of every input partition; a customer
  erased and writing again right after is a new customer with that message, whichever road it took.
* Two workers by default: nothing goes fast while both run, identity's outputs are handed over
  locally as without the fast path, and the orders hold; once one stops, the other (alone) sends
  the settled events fast.
* A worker with ``1`` beside one with the default: the group tells both (the assignor), and both
  context stages read their input from the log, so the fast events of the one are not overtaken
  by the other's local hand-over.
* A worker with ``1`` beside a member that does not say its mode (plain round robin, as an engine
  from before the assignor): nothing fast while not alone (``modes_unknown``); fast once alone.
* The same inputs (links, a merge, a routed contact, settled events after them) give the same
  contexts and assignment with the fast path as without it.

The kill -9 of one of two workers with the fast path is in test_chaos.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from cxstream.schemas import Identifiers, InteractionEvent, OutcomeEvent
from cxstream.streams import topics as t
from tests.integration.conftest import RunningEngine, start_engine, stop_engine
from tests.integration.helpers import produce, wait_for
from tests.integration.test_contact_keys import context_by
from tests.integration.test_local_delivery import essentials, journey, metric
from tests.integration.test_pipeline import assignments_for, get, login

pytestmark = pytest.mark.integration
N = 16
SETTLE_S = 3.0  # past the identity stage's next commits (every 0.5 s) and the road's reading of them (every 0.2 s)


def when(ctx: dict[str, Any] | None, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return ctx if ctx is not None and test(ctx) else None


def journeys(engines: tuple[RunningEngine, ...], run: str, group: str) -> list[str]:
    """Each of N customers writes, then opens a contact with a new phone and closes it at once, then writes three times."""
    broker, topic = engines[0].broker, engines[0].topic(t.INTERACTIONS.name)
    now = time.time()
    emails = [f"fp{n}-{run}@example.com" for n in range(N)]

    def ev(n: int, i: int, kind: str, ids: Identifiers, **kw: Any) -> tuple[bytes, InteractionEvent]:
        # keyed by customer: one input partition keeps a customer's order (the engine's promise)
        e = InteractionEvent(event_id=f"{kind}-{run}-{n}-{i}", occurred_at=now + i * 0.01, channel="chat", kind=kind,  # type: ignore[arg-type]
                             customer=ids, contact_id=f"k-{run}-{n}", **kw)
        return f"cust-{n}".encode(), e

    asyncio.run(produce(broker, topic, [ev(n, 0, "message", Identifiers(email=e), text="where is my card") for n, e in enumerate(emails)]))
    for engine_, e in zip(engines * N, emails, strict=False):
        wait_for(lambda e=e, engine_=engine_: when(context_by(engine_, email=e), lambda c: c["interactions_total"] == 1), timeout=60)
    time.sleep(SETTLE_S)  # past the identity stage's next commits: nothing pending, every partition open
    wave: list[tuple[bytes, InteractionEvent]] = []
    for n, e in enumerate(emails):
        phone = f"+4420794{n:02d}{int(run[:3], 16) % 1000:03d}"
        wave += [
            ev(n, 1, "contact_opened", Identifiers(email=e, phone=phone), needs_advisor=True, routing_group=group),
            ev(n, 2, "contact_closed", Identifiers(email=e)),
            ev(n, 3, "message", Identifiers(phone=phone), text="thanks"),
        ]
    asyncio.run(produce(broker, topic, wave))
    for engine_, e in zip(engines * N, emails, strict=False):
        wait_for(lambda e=e, engine_=engine_: when(context_by(engine_, email=e), lambda c: c["interactions_total"] == 4), timeout=60)
    time.sleep(SETTLE_S)
    asyncio.run(produce(broker, topic, [ev(n, 4 + i, "message", Identifiers(email=e), text="hello again")
                                        for n, e in enumerate(emails) for i in range(3)]))
    return emails


def check(engines: tuple[RunningEngine, ...], emails: list[str]) -> None:
    for engine_, e in zip(engines * N, emails, strict=False):
        ctx = wait_for(lambda e=e, engine_=engine_: when(context_by(engine_, email=e), lambda c: c["interactions_total"] == 7), timeout=60)
        assert ctx["open_contacts"] == {}, f"the close overtook its open: {ctx['open_contacts']}"
        assert len(ctx["identifiers"].get("phone", [])) == 1, ctx["identifiers"]
    fast = sum(metric(w, "cx_identity_road_total", road="fast") for w in engines)
    # each close is settled, but its open is still on the slow road: the close is held back there
    # ("pending"; "moved" if a rebalance had just closed the partition: slow all the same)
    held = sum(metric(w, "cx_identity_road_total", road="slow", reason=reason) for w in engines for reason in ("pending", "moved"))
    assert fast >= 2 * N, f"the settled messages took the fast road ({fast} of the {3 * N} sent once nothing was pending)"
    assert held >= N, f"each close was held behind its open on the slow road ({held})"
    assert sum(metric(w, "cx_duplicates_total", stage="context") for w in engines) == 0


def two_workers(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, name: str,
                second: dict[str, str] | None = None, **env: str) -> tuple[RunningEngine, RunningEngine]:
    """Two workers of one app, *env* in both unless *second* is the second's (the first stopped if the second does not start)."""
    broker, redis_url = servers
    tag = uuid.uuid4().hex[:8]
    prefix, app_id = f"{name}{tag}.", f"cx{name}-{tag}"
    a = start_engine(broker, redis_url, tmp_path_factory.mktemp(f"{name}a"), prefix, app_id, **env)
    try:
        return a, start_engine(broker, redis_url, tmp_path_factory.mktemp(f"{name}b"), prefix, app_id,
                               **(env if second is None else second))
    except BaseException:
        stop_engine(a)
        raise


def journeys_on_two(workers: tuple[RunningEngine, RunningEngine]) -> tuple[str, list[str]]:
    """Once both own partitions (neither alone): an advisor logged in, and :func:`journeys` sent; the run id and the emails."""
    wait_for(lambda: all(metric(w, "cx_stages_partitions_owned") > 0 and metric(w, "cx_stages_alone") == 0 for w in workers),
             timeout=60)
    run = uuid.uuid4().hex[:8]
    group = f"g-{run}"
    broker, a = workers[0].broker, workers[0]
    asyncio.run(produce(broker, a.topic(t.ADVISOR_EVENTS.name), [login(f"adv-{run}", group, time.time(), capacity={"chat": 20})]))
    return run, journeys(workers, run, group)


def test_one_worker_sends_settled_events_past_identity_and_keeps_each_customers_order(
    servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    broker, redis_url = servers
    tag = uuid.uuid4().hex[:8]
    e = start_engine(broker, redis_url, tmp_path_factory.mktemp("fp1"), f"f{tag}.", f"cxfast-{tag}")  # auto, the default
    try:
        run, group = uuid.uuid4().hex[:8], f"g-{tag}"
        asyncio.run(produce(broker, e.topic(t.ADVISOR_EVENTS.name), [login(f"adv-{run}", group, time.time(), capacity={"chat": 20})]))
        check((e,), journeys((e,), run, group))
        assert metric(e, "cx_identity_road_total", road="slow", reason="unsettled") >= 2 * N, "new identifiers: slow"
        # alone, the worker hands its fast events to the context stage itself, as it does identity's outputs
        fast = metric(e, "cx_identity_road_total", road="fast")
        by_broker = metric(e, "cx_stage_local_records_total", stage="context", outcome="via_broker")
        assert by_broker < fast / 4, f"{by_broker} of the context stage's records went by the broker ({fast} fast)"
        assert metric(e, "cx_stage_local_records_total", stage="context", outcome="delivered") >= fast
        # and skips each when it is fetched back from the log (check() found none applied twice)
        wait_for(lambda: metric(e, "cx_stage_local_records_total", stage="context", outcome="skipped")
                 == metric(e, "cx_stage_local_records_total", stage="context", outcome="delivered"), timeout=20)
    finally:
        stop_engine(e)


def test_two_workers_keep_order_and_an_erased_customer_writing_again_is_not_lost(
    servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workers = a, b = two_workers(servers, tmp_path_factory, "fast2", CX_IDENTITY_FAST_PATH="1")
    broker = a.broker
    try:
        run, emails = journeys_on_two(workers)
        check(workers, emails)
        assert all(metric(w, "cx_identity_road_total", road="fast") > 0 for w in workers), "both workers' ingest"
        assert sum(metric(w, "cx_stage_local_records_total", stage="context", outcome="delivered") for w in workers) == 0, (
            "with the fast path and two workers the context stage reads its input from the log"
        )

        # erased, and writing again at once: a new customer holds the message, whichever road it took
        gone = emails[0]
        old = context_by(a, email=gone)
        assert old is not None
        now = time.time()
        erase = OutcomeEvent(event_id=f"erase-{run}", occurred_at=now, customer=Identifiers(email=gone), kind="erasure_requested")
        again = InteractionEvent(event_id=f"again-{run}", occurred_at=now + 0.5, channel="chat", kind="message",
                                 customer=Identifiers(email=gone), text="it's me again")
        asyncio.run(produce(broker, a.topic(t.OUTCOMES.name), [(b"cust-0", erase)]))
        # (the two input topics interleave by timing: the message must come after the erasure was taken)
        wait_for(lambda: context_by(a, email=gone) is None, timeout=60)
        asyncio.run(produce(broker, a.topic(t.INTERACTIONS.name), [(b"cust-0", again)]))
        new = wait_for(lambda: when(context_by(b, email=gone), lambda c: c["customer_id"] != old["customer_id"]), timeout=60)
        assert [i["event_id"] for i in new["recent"]] == [f"again-{run}"] and new["interactions_total"] == 1
        assert get(a, f"/customers/{old['customer_id']}/context")[0] == 404
    finally:
        stop_engine(b)
        stop_engine(a)


def test_by_default_two_workers_send_nothing_fast_and_the_one_left_alone_does(
    servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workers = a, b = two_workers(servers, tmp_path_factory, "auto")  # auto, the default
    broker = a.broker
    try:
        try:
            run, emails = journeys_on_two(workers)
            for engine_, e in zip(workers * N, emails, strict=False):
                ctx = wait_for(lambda e=e, engine_=engine_: when(context_by(engine_, email=e), lambda c: c["interactions_total"] == 7),
                               timeout=60)
                assert ctx["open_contacts"] == {}, f"the close overtook its open: {ctx['open_contacts']}"
            assert sum(metric(w, "cx_identity_road_total", road="fast") for w in workers) == 0, "two workers: nothing fast"
            assert sum(metric(w, "cx_identity_road_total", road="slow", reason="not_alone") for w in workers) >= 6 * N
            assert sum(metric(w, "cx_stage_local_records_total", stage="context", outcome="delivered") for w in workers) > 0, (
                "identity's outputs are handed to the context stage locally, as without the fast path"
            )
            assert sum(metric(w, "cx_duplicates_total", stage="context") for w in workers) == 0
        finally:
            stop_engine(b)
        wait_for(lambda: metric(a, "cx_stages_alone") == 1, timeout=60)

        sent = [0]

        def wave(each: int) -> None:
            """*each* more messages by each customer, applied (7 interactions before)."""
            now, first = time.time(), sent[0]
            sent[0] += each
            asyncio.run(produce(broker, a.topic(t.INTERACTIONS.name), [
                (f"cust-{n}".encode(), InteractionEvent(event_id=f"alone-{run}-{n}-{j}", occurred_at=now + j * 0.01,
                                                        channel="chat", kind="message", customer=Identifiers(email=e), text="and now?"))
                for n, e in enumerate(emails) for j in range(first, sent[0])
            ]))
            for e in emails:
                wait_for(lambda e=e: when(context_by(a, email=e), lambda c: c["interactions_total"] == 7 + sent[0]), timeout=60)

        # its input partitions, taken anew, send by the slow road until the identity stage has committed
        # past what cx.resolve.v1 held then (read at their first event); after that, fast
        wave(1)
        time.sleep(SETTLE_S)
        wave(3)
        fast = metric(a, "cx_identity_road_total", road="fast")
        slow = {r: metric(a, "cx_identity_road_total", road="slow", reason=r) for r in ("not_alone", "moved", "pending", "not_ready")}
        assert fast >= 2 * N, f"alone, the settled messages took the fast road ({fast} of the last {3 * N}; slow: {slow})"
        assert metric(a, "cx_duplicates_total", stage="context") == 0
    finally:
        stop_engine(a)


def test_a_worker_with_the_fast_path_on_every_worker_beside_a_default_one_puts_both_context_stages_on_the_log(
    servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workers = a, b = two_workers(servers, tmp_path_factory, "mixed", {}, CX_IDENTITY_FAST_PATH="1")  # b: auto, the default
    try:
        _, emails = journeys_on_two(workers)
        assert all(metric(w, "cx_stages_fast_elsewhere") == 1 for w in workers), "the group told both that one runs '1'"
        for engine_, e in zip(workers * N, emails, strict=False):
            ctx = wait_for(lambda e=e, engine_=engine_: when(context_by(engine_, email=e), lambda c: c["interactions_total"] == 7),
                           timeout=60)
            assert ctx["open_contacts"] == {}, f"the close overtook its open: {ctx['open_contacts']}"
        assert metric(a, "cx_identity_road_total", road="fast") > 0 and metric(b, "cx_identity_road_total", road="fast") == 0
        assert sum(metric(w, "cx_stage_local_records_total", stage="context", outcome="delivered") for w in workers) == 0, (
            "beside a worker with the fast path on every worker, neither context stage takes records locally"
        )
        assert sum(metric(w, "cx_duplicates_total", stage="context") for w in workers) == 0
    finally:
        stop_engine(b)
        stop_engine(a)


def test_a_worker_with_the_fast_path_on_every_worker_sends_nothing_fast_beside_a_member_that_did_not_say_its_mode(
    servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A member of the stages' group that offers only plain round robin (as an engine from before the
    assignor does) makes the group assign with it: the '1' worker learns nobody's mode, and while it
    is not alone it sends every event by the slow road (that member's context stage might hand
    records over locally).  Once the member has left, the worker, alone, sends settled events fast."""
    broker, redis_url = servers
    tag = uuid.uuid4().hex[:8]
    app_id = f"cxsilent-{tag}"
    e = start_engine(broker, redis_url, tmp_path_factory.mktemp("silent"), f"s{tag}.", app_id, CX_IDENTITY_FAST_PATH="1")
    topic = e.topic(t.INTERACTIONS.name)
    run = uuid.uuid4().hex[:8]
    emails = [f"silent{n}-{run}@example.com" for n in range(N)]

    def wave(i: int) -> None:
        now = time.time()
        asyncio.run(produce(broker, topic, [
            (f"cust-{n}".encode(), InteractionEvent(event_id=f"silent-{run}-{n}-{i}", occurred_at=now, channel="chat",
                                                    kind="message", customer=Identifiers(email=m), text="hello"))
            for n, m in enumerate(emails)
        ]))

    async def beside() -> None:
        member = AIOKafkaConsumer(topic, bootstrap_servers=broker, group_id=f"{app_id}.stages", enable_auto_commit=False,
                                  partition_assignment_strategy=(RoundRobinPartitionAssignor,))
        await member.start()
        try:
            deadline = time.monotonic() + 60
            while not member.assignment() or metric(e, "cx_stages_alone") != 0:
                assert time.monotonic() < deadline, "the silent member did not join the group"
                await member.getmany(timeout_ms=200)
            assert metric(e, "cx_stages_fast_elsewhere") == 1
            await asyncio.to_thread(wave, 0)
            ours = await asyncio.to_thread(wait_for, lambda: metric(e, "cx_identity_road_total", road="slow", reason="modes_unknown") or None,
                                           timeout=60)
            await asyncio.sleep(SETTLE_S)  # what is settled by now would go fast if the worker did not hold back
            await asyncio.to_thread(wave, 1)
            await asyncio.sleep(SETTLE_S)
            assert metric(e, "cx_identity_road_total", road="fast") == 0, "beside a member that did not say its mode"
            assert metric(e, "cx_identity_road_total", road="slow", reason="modes_unknown") > ours
        finally:
            await member.stop()

    try:
        asyncio.run(beside())
        wait_for(lambda: metric(e, "cx_stages_alone") == 1, timeout=60)
        for e_ in emails:  # the silent member's partitions too, now the worker's (it committed nothing)
            wait_for(lambda e_=e_: when(context_by(e, email=e_), lambda c: c["interactions_total"] == 2), timeout=60)
        # its input partitions, taken anew, send by the slow road until the identity stage has committed past the barrier
        wave(2)
        time.sleep(SETTLE_S)
        wave(3)
        for e_ in emails:
            wait_for(lambda e_=e_: when(context_by(e, email=e_), lambda c: c["interactions_total"] == 4), timeout=60)
        assert metric(e, "cx_identity_road_total", road="fast") >= N // 2, "alone: the settled messages go fast"
        assert metric(e, "cx_duplicates_total", stage="context") == 0
    finally:
        stop_engine(e)


def test_the_fast_path_gives_the_same_contexts_and_assignment_as_the_identity_stage_alone(
    servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The same inputs (a link, a merge, a routed call, then settled events by each identifier and the merged
    customer's CRM id) on an engine with the fast path and one without: the same contexts and assignment."""
    broker, redis_url = servers
    engines = []
    for road in ("1", "0"):
        tag = uuid.uuid4().hex[:8]
        try:
            engines.append(start_engine(broker, redis_url, tmp_path_factory.mktemp(f"road{road}"), f"r{tag}.", f"cxroad-{tag}",
                                        CX_IDENTITY_FAST_PATH=road))
        except BaseException:
            for e in engines:
                stop_engine(e)
            raise
    try:
        run = uuid.uuid4().hex[:8]
        events, email, group, contact = journey(run)
        phone, crm = events[2][1].customer.phone, events[3][1].customer.customer_id
        later = [
            (b"journey", InteractionEvent(event_id=f"later-{run}-{n}", occurred_at=time.time() + 1 + n * 0.01, channel="chat",
                                          kind="message", customer=ids, text="any update on my refund"))
            for n, ids in enumerate([Identifiers(email=email), Identifiers(phone=phone), Identifiers(customer_id=crm),
                                     Identifiers(email=email, phone=phone)])
        ]
        results = []
        advisor = f"adv-{run}"
        for engine in engines:
            asyncio.run(produce(broker, engine.topic(t.ADVISOR_EVENTS.name), [login(advisor, group, time.time(), capacity={"voice": 1})]))
            asyncio.run(produce(broker, engine.topic(t.INTERACTIONS.name), events))
            (a,) = assignments_for(engine, group, 1)
            wait_for(lambda engine=engine: when(context_by(engine, email=email), lambda c: c["interactions_total"] == 7), timeout=30)
            time.sleep(SETTLE_S)  # nothing pending any more: the settled events below may take the fast road
            asyncio.run(produce(broker, engine.topic(t.INTERACTIONS.name), later))

            def settled(engine: RunningEngine = engine) -> dict[str, Any] | None:
                return when(context_by(engine, email=email), lambda c: c["interactions_total"] == 11 and c.get("last_advisor_id") == advisor)

            ctx = wait_for(settled, timeout=30)
            results.append(((a.advisor_id, a.contact_id, a.customer_id, a.assignment_id), essentials(ctx)))
        (a_fast, ctx_fast), (a_slow, ctx_slow) = results
        assert a_fast == a_slow and a_fast[1] == contact
        assert ctx_fast == ctx_slow
        assert metric(engines[0], "cx_identity_road_total", road="fast") >= 4, "the later events took the fast road"
        assert metric(engines[1], "cx_identity_road_total", road="fast") == 0
    finally:
        for e in engines:
            stop_engine(e)
