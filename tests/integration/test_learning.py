"""The learning loop over the real broker: dispositions train the intent model, the scorer hot-swaps to it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cxstream.schemas import AdvisorEvent, Disposition, Identifiers, InteractionEvent, OutcomeEvent
from cxstream.schemas.learning import ModelEvent
from cxstream.streams import topics as t
from tests.integration.conftest import RunningEngine, start_engine, stop_engine
from tests.integration.helpers import consume_until, produce, wait_for
from tests.integration.test_pipeline import assignments_for, get, login, uid

pytestmark = pytest.mark.integration

TEXTS = {
    "card_arrival": ["my card has not arrived yet", "still waiting for my new card to arrive", "when will my card arrive"],
    "refund": ["I want a refund for this order", "please refund the double charge", "how do I get my money refunded"],
}


@pytest.fixture(scope="module")
def learning_engine(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    tag = uuid.uuid4().hex[:8]
    e = start_engine(
        servers[0], servers[1], tmp_path_factory.mktemp("learning"), f"l{tag}.", f"cxlearn-{tag}",
        CX_SNAPSHOT_EVERY="6", CX_SNAPSHOT_INTERVAL_S="1", CX_MODEL_REFRESH_S="0.5", CX_LEARNER_NICE="7",
    )
    yield e
    stop_engine(e)


def test_dispositions_train_the_intent_model_and_scores_reach_the_router(learning_engine: RunningEngine) -> None:
    e = learning_engine
    group, advisor = uid("g"), uid("adv")
    asyncio.run(produce(e.broker, e.topic(t.ADVISOR_EVENTS.name), [login(advisor, group, time.time(), capacity={"chat": 3})]))
    done = 0
    for round_ in range(4):
        batch = []
        for intent, texts in TEXTS.items():
            text = texts[round_ % len(texts)]
            cust = Identifiers(customer_id=uid("C"))
            k = uid("k")
            batch.append((cust.customer_id.encode(), InteractionEvent(
                event_id=uid("o"), occurred_at=time.time(), channel="chat", kind="contact_opened", customer=cust,
                contact_id=k, needs_advisor=True, routing_group=group, text=text)))
            batch.append((cust.customer_id.encode(), InteractionEvent(
                event_id=uid("m"), occurred_at=time.time(), channel="chat", kind="message", customer=cust,
                contact_id=k, routing_group=group, text=text, attributes={"truth": intent})))
        asyncio.run(produce(e.broker, e.topic(t.INTERACTIONS.name), batch))
        assigned = assignments_for(e, group, done + 2)[done:]
        truth = {ev.contact_id: ev.attributes["truth"] for _, ev in batch if ev.kind == "message"}
        answers = []
        for a in assigned:
            base = dict(advisor_id=advisor, routing_group=group, contact_id=a.contact_id, assignment_id=a.assignment_id)
            answers.append((advisor.encode(), AdvisorEvent(event_id=uid("acc"), occurred_at=time.time(), kind="offer_accepted", **base)))
            answers.append((advisor.encode(), AdvisorEvent(
                event_id=uid("done"), occurred_at=time.time(), kind="contact_completed",
                disposition=Disposition(intent=truth[a.contact_id], resolved=True), **base)))
        asyncio.run(produce(e.broker, e.topic(t.ADVISOR_EVENTS.name), answers))
        done += 2

    decode = msgspec.json.Decoder(ModelEvent).decode
    events = asyncio.run(consume_until(
        e.broker, e.topic(t.MODEL_EVENTS.name),
        lambda vs: any(v.model == "intent" and v.kind == "published" and v.labels_seen >= 6 for v in vs), decode, timeout=60,
    ))
    published = [v for v in events if v.kind == "published" and v.model == "intent"]
    assert published and published[-1].version > 0

    # a new customer's first words are now scored, and the router sees the intent
    cust = Identifiers(customer_id=uid("C"))

    def scored_assignment() -> bool:
        asyncio.run(produce(e.broker, e.topic(t.INTERACTIONS.name), [(b"n", InteractionEvent(
            event_id=uid("o"), occurred_at=time.time(), channel="chat", kind="contact_opened", customer=cust,
            contact_id=uid("k"), needs_advisor=True, routing_group=group, text="my card still has not arrived"))]))
        time.sleep(1.0)
        status, ctx = get(e, f"/customers/{cust.customer_id}/context")
        return status == 200 and ctx["latest_intent"] == "card_arrival" and str(ctx["model_version"]).startswith("intent-")

    wait_for(scored_assignment, timeout=30, interval=0.5)
    intents = [a.intent for a in assignments_for(e, group, 9)]
    assert "card_arrival" in intents, intents


def test_churn_outcomes_train_the_churn_model_and_contexts_get_a_risk_with_its_reasons(learning_engine: RunningEngine) -> None:
    """A CRM's profiles and churn outcomes train the model; a new month-to-month customer's risk names why."""
    e = learning_engine
    profiles = []
    customers = []
    for i in range(16):
        cust = Identifiers(customer_id=uid("C"))
        customers.append(cust)
        profiles.append((b"x", OutcomeEvent(
            event_id=uid("p"), occurred_at=time.time(), customer=cust, kind="profile",
            attributes={"contract": "Month-to-month" if i % 2 else "Two year", "tenure_months": 2 if i % 2 else 40})))
    asyncio.run(produce(e.broker, e.topic(t.OUTCOMES.name), profiles))
    wait_for(lambda: get(e, f"/customers/{customers[-1].customer_id}/context")[0] == 200)
    labels = [(b"x", OutcomeEvent(event_id=uid("out"), occurred_at=time.time(), customer=c, kind="churned" if i % 2 else "retained"))
              for i, c in enumerate(customers)]
    asyncio.run(produce(e.broker, e.topic(t.OUTCOMES.name), labels))
    decode = msgspec.json.Decoder(ModelEvent).decode
    # a model that learned every outcome (the learner publishes every 6 labels or 1 s: a first one may know a few)
    events = asyncio.run(consume_until(
        e.broker, e.topic(t.MODEL_EVENTS.name),
        lambda vs: any(v.model == "churn" and v.kind == "published" and v.labels_seen >= len(customers) for v in vs),
        decode, timeout=60,
    ))
    full = min(v.version for v in events if v.model == "churn" and v.kind == "published" and v.labels_seen >= len(customers))
    late = Identifiers(customer_id=uid("C"))
    seen: dict[str, object] = {}

    def has_risk() -> bool:
        asyncio.run(produce(e.broker, e.topic(t.OUTCOMES.name), [(b"y", OutcomeEvent(
            event_id=uid("p"), occurred_at=time.time(), customer=late, kind="profile",
            attributes={"contract": "Month-to-month", "tenure_months": 2}))]))
        time.sleep(0.5)
        status, ctx = get(e, f"/customers/{late.customer_id}/context")
        seen.update(ctx if status == 200 else {})
        return (status == 200 and ctx["churn_risk"] is not None and 0 <= ctx["churn_risk"] <= 1
                and str(ctx["model_version"]).startswith("churn-") and int(str(ctx["model_version"])[6:]) >= full)

    wait_for(has_risk, timeout=30, interval=0.5)
    assert seen["churn_risk"] > 0.5, seen  # type: ignore[operator]
    reasons = seen["churn_reasons"]
    assert isinstance(reasons, list) and reasons, seen
    assert {r["factor"]: r["value"] for r in reasons} == {"contract": "Month-to-month", "tenure_months": "2"}, reasons
    assert all(r["weight"] > 0 for r in reasons)


def learner_processes(e: RunningEngine) -> list[psutil.Process]:
    """The engine's live ``cxstream learn`` children (a killed one is a zombie until the engine reaps it)."""
    found = []
    for c in psutil.Process(e.proc.pid).children():
        with contextlib.suppress(psutil.ZombieProcess, psutil.NoSuchProcess):
            if c.cmdline()[1:4] == ["-m", "cxstream.cli", "learn"] and c.status() != psutil.STATUS_ZOMBIE:
                found.append(c)
    return found


def all_series(e: RunningEngine) -> list[tuple[str, dict[str, str], float]]:
    """The engine's /metrics, parsed as Prometheus would (it refuses a family declared twice)."""
    status, body = get(e, "/metrics")
    assert status == 200
    families = list(text_string_to_metric_families(body.decode()))
    names = [fam.name for fam in families]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    return [(s.name, s.labels, float(s.value)) for fam in families for s in fam.samples]


def learner_series(e: RunningEngine, name: str, **labels: str) -> float | None:
    """The value of the series *name* with exactly *labels*, or None."""
    return next((v for n, ls, v in all_series(e) if n == name and ls == labels), None)


def churn_outcomes(e: RunningEngine, n: int) -> None:
    """*n* churn labels for the learner: a profile, then an outcome, for *n* new customers."""
    customers = [Identifiers(customer_id=uid("C")) for _ in range(n)]
    asyncio.run(produce(e.broker, e.topic(t.OUTCOMES.name), [
        (b"x", OutcomeEvent(event_id=uid("p"), occurred_at=time.time(), customer=c, kind="profile",
                            attributes={"contract": "One year", "tenure_months": 12})) for c in customers]))
    asyncio.run(produce(e.broker, e.topic(t.OUTCOMES.name), [
        (b"x", OutcomeEvent(event_id=uid("out"), occurred_at=time.time(), customer=c, kind="retained")) for c in customers]))


def test_the_learner_runs_in_a_process_of_its_own_and_is_restarted_when_it_dies(learning_engine: RunningEngine) -> None:
    """CX_LEARNER_PROCESS (the default): the labels are learned in a ``cxstream learn`` child, whose metrics
    the engine's /metrics includes, labelled; killed, it is started again and learns on from its snapshot."""
    e = learning_engine
    (learner,) = wait_for(lambda: learner_processes(e), timeout=30)
    assert learner.pid != e.proc.pid and learner.ppid() == e.proc.pid
    assert learner.nice() == 7 and psutil.Process(e.proc.pid).nice() == 0  # CX_LEARNER_NICE: the learner alone yields
    churn_outcomes(e, 4)
    # learned there: its series carry process="learner", in one valid exposition with the engine's own
    wait_for(lambda: (learner_series(e, "cx_labels_total", model="churn", process="learner") or 0) >= 4, timeout=60)
    assert learner_series(e, "cx_learner_metrics_up") == 1.0
    assert any(n == "cx_events_in_total" and "process" not in ls for n, ls, _ in all_series(e))  # the worker's own, beside
    published = wait_for(lambda: learner_series(e, "cx_model_version", model="churn", process="learner"), timeout=60)

    learner.kill()  # SIGKILL: no goodbye to its consumer group
    (restarted,) = wait_for(lambda: [p for p in learner_processes(e) if p.pid != learner.pid], timeout=60)
    assert "learner process" in e.output() and "restarting it" in e.output()
    # the new one gets the labels' partition once the group drops the dead member, continues from the
    # newest snapshot, and learns what comes next: its publication is a newer version of the same model
    wait_for(lambda: churn_outcomes(e, 2) or (learner_series(e, "cx_labels_total", model="churn", process="learner") or 0) >= 2,
             timeout=90, interval=3.0)
    wait_for(lambda: (learner_series(e, "cx_model_version", model="churn", process="learner") or 0) > published, timeout=60)
    assert restarted.is_running() and e.proc.poll() is None
    assert restarted.nice() == 7


def test_a_merge_scores_the_churn_risk_again_on_both_sides_facts(learning_engine: RunningEngine) -> None:
    """A caller known by phone only is scored without account facts; once an event links the phone to
    the e-mail a CRM profile came with, the merged context's risk and reasons use the profile."""
    e = learning_engine
    wait_for(lambda: "cx_model_version{model=\"churn\"}" in str(get(e, "/metrics")[1]), timeout=60)  # trained by the test above
    email, phone = f"{uid('m')}@example.org", f"+4477009{int(time.time() * 1000) % 100000:05d}"
    now = time.time()
    # the phone-only side is scored last in event time, so the old rule (keep the side scored last) kept its risk
    asyncio.run(produce(e.broker, e.topic(t.OUTCOMES.name), [(b"p", OutcomeEvent(
        event_id=uid("p"), occurred_at=now, customer=Identifiers(email=email), kind="profile",
        attributes={"contract": "Month-to-month", "tenure_months": 2}))]))
    asyncio.run(produce(e.broker, e.topic(t.INTERACTIONS.name), [(b"v", InteractionEvent(
        event_id=uid("v"), occurred_at=now + 10, channel="voice", kind="message", customer=Identifiers(phone=phone), text="hello"))]))

    def scored(path: str) -> dict[str, Any] | None:
        status, ctx = get(e, path)
        return ctx if status == 200 and ctx.get("churn_risk") is not None else None

    assert wait_for(lambda: scored(f"/customers/email:{email}/context"), timeout=30)["churn_reasons"]
    phone_side = wait_for(lambda: scored(f"/customers/phone:{phone}/context"), timeout=30)
    assert phone_side["churn_reasons"] == [] and phone_side["account"] == {}
    asyncio.run(produce(e.broker, e.topic(t.INTERACTIONS.name), [(b"w", InteractionEvent(
        event_id=uid("w"), occurred_at=now + 5, channel="web", kind="page_view", customer=Identifiers(email=email, phone=phone)))]))

    def merged() -> dict[str, Any] | None:
        a, b = scored(f"/customers/email:{email}/context"), scored(f"/customers/phone:{phone}/context")
        return a if a and b and a["customer_id"] == b["customer_id"] and a.get("merged_from") else None

    ctx = wait_for(merged, timeout=30)
    assert ctx["account"] == {"contract": "Month-to-month", "tenure_months": 2.0}
    assert "contract" in {r["factor"] for r in ctx["churn_reasons"]}, ctx["churn_reasons"]
