"""Next-best action on the real broker: a routed contact gets ranked actions with their logged propensity,
on cx.nba.v1 and on the desk; the advisor's action and outcome teach the policy, which the next contact shows."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from cxstream.schemas import Identifiers, InteractionEvent, NextBestAction
from cxstream.schemas.learning import ModelEvent
from cxstream.streams import topics as t
from tests.integration.conftest import RunningEngine, start_engine, stop_engine
from tests.integration.helpers import consume_until, produce, trace, wait_for
from tests.integration.test_desk_api import call
from tests.integration.test_pipeline import login, uid

pytestmark = pytest.mark.integration

EPSILON = 0.2
CONTACT_ACTIONS = {"resolve", "offer_retention", "call_back", "escalate_tier"}


@pytest.fixture(scope="module")
def nba_engine(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    tag = uuid.uuid4().hex[:8]
    e = start_engine(
        servers[0], servers[1], tmp_path_factory.mktemp("nba"), f"n{tag}.", f"cxnba-{tag}",
        CX_SNAPSHOT_EVERY="3", CX_SNAPSHOT_INTERVAL_S="1", CX_MODEL_REFRESH_S="0.5",
        CX_NBA_EPSILON=str(EPSILON), CX_NBA_MIN_PULLS="2",
    )
    yield e
    stop_engine(e)


def open_contact(e: RunningEngine, group: str) -> tuple[str, str]:
    cust, contact = uid("C"), uid("k")
    asyncio.run(produce(e.broker, e.topic(t.INTERACTIONS.name), [(cust.encode(), InteractionEvent(
        event_id=uid("o"), occurred_at=time.time(), channel="chat", kind="contact_opened",
        customer=Identifiers(customer_id=cust), contact_id=contact, needs_advisor=True, routing_group=group))]))
    return cust, contact


def decisions(e: RunningEngine, contact: str) -> list[NextBestAction]:
    decode = msgspec.json.Decoder(NextBestAction).decode
    found = asyncio.run(consume_until(e.broker, e.topic(t.NBA.name), lambda vs: any(v.contact_id == contact for v in vs),
                                      decode, timeout=60))
    return [v for v in found if v.contact_id == contact]


def check_propensity(d: dict[str, Any] | NextBestAction) -> None:
    rec = d if isinstance(d, NextBestAction) else msgspec.convert(d, NextBestAction)
    k = len(rec.ranked)
    assert rec.ranked[0].action == rec.chosen
    assert rec.propensity == pytest.approx(EPSILON / k if rec.explored else 1 - EPSILON + EPSILON / k, abs=1e-6)
    assert sum(r.probability for r in rec.ranked) == pytest.approx(1.0, abs=1e-5)
    assert rec.explored == (rec.chosen != rec.greedy)


def test_a_contact_gets_ranked_actions_and_an_outcome_teaches_the_policy(nba_engine: RunningEngine) -> None:
    e = nba_engine
    group, advisor = uid("g"), uid("adv")
    asyncio.run(produce(e.broker, e.topic(t.ADVISOR_EVENTS.name), [login(advisor, group, time.time(), capacity={"chat": 3})]))
    handled = 3
    for _ in range(handled):
        _, contact = open_contact(e, group)

        def offered(contact: str = contact) -> Any:
            _, body = call(e.http, f"/advisors/{advisor}/work")
            return next((w for w in body.get("work", []) if w["contact_id"] == contact), None)

        try:
            work = wait_for(offered, timeout=60, interval=0.3)
        except TimeoutError:
            _, body = call(e.http, f"/advisors/{advisor}/work")
            raise AssertionError(f"contact {contact} not offered to {advisor}; work: {body}\n{trace(e, contact, advisor)}") from None
        # accepted at once: an offer left unanswered for 30 s sets the advisor away (and no later contact is offered)
        status, body = call(e.http, f"/advisors/{advisor}/offers/{work['assignment_id']}/accept", "POST")
        assert status == 202, body

        # the desk's block: the contact's ranked actions, chosen first, with the logged propensity
        def ranked(contact: str = contact) -> Any:
            status, answer = call(e.http, f"/advisors/{advisor}/contacts/{contact}/nba")
            return answer["decision"] if status == 200 and answer["decision"] else None

        d = wait_for(ranked, timeout=30, interval=0.3)
        assert {r["action"] for r in d["ranked"]} == CONTACT_ACTIONS and d["contact_id"] == contact
        check_propensity(d)
        [logged] = decisions(e, contact)  # the same decision on the wire, for off-policy evaluation
        assert logged.decision_id == d["decision_id"] and logged.propensity == d["propensity"]
        wait_for(lambda contact=contact: any(w["contact_id"] == contact and w["status"] == "active"
                                             for w in call(e.http, f"/advisors/{advisor}/work")[1].get("work", [])), timeout=30, interval=0.3)
        status, body = call(e.http, f"/advisors/{advisor}/contacts/{contact}/complete", "POST",
                            {"resolved": True, "intent": "card_arrival", "action": "call_back"})
        assert status == 202 and body["disposition"]["action"] == "call_back", body

    model_events = asyncio.run(consume_until(
        e.broker, e.topic(t.MODEL_EVENTS.name),
        lambda vs: any(v.model == "nba" and v.kind == "published" and v.labels_seen >= handled for v in vs),
        msgspec.json.Decoder(ModelEvent).decode, timeout=90,
    ))
    learned = min(v.version for v in model_events if v.model == "nba" and v.kind == "published" and v.labels_seen >= handled)

    # a new contact is decided by a policy that learned those outcomes: call back now ranks first
    seen: list[NextBestAction] = []

    def taught() -> bool:
        _, contact = open_contact(e, group)
        d = decisions(e, contact)[0]
        seen.append(d)
        return int(d.model_version.split("-")[1]) >= learned

    wait_for(taught, timeout=60, interval=0.5)
    d = seen[-1]
    check_propensity(d)
    assert d.greedy == "call_back", d
    best = next(r for r in d.ranked if r.action == "call_back")
    assert best.pulls >= handled and best.estimate > 0.5 and best.source == "intent", best
    others = [r for r in d.ranked if r.action != "call_back"]
    assert all(r.estimate == 0.0 and r.pulls == 0 for r in others), others


def test_a_completion_naming_an_unknown_action_is_refused(nba_engine: RunningEngine) -> None:
    status, body = call(nba_engine.http, f"/advisors/{uid('adv')}/contacts/{uid('k')}/complete", "POST",
                        {"resolved": True, "action": "teleport"})
    assert status == 400 and body["error"] == "invalid_body" and "action" in body["detail"], body
