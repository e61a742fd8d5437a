"""The next-best-action glue of the context stage: decisions kept in the context, outcomes turned into rewards."""

from __future__ import annotations

import pytest

from cxstream.agents.learner import Learner
from cxstream.agents.nba import MAX_PENDING, NBA, features
from cxstream.context.model import CustomerContext, OpenContact
from cxstream.intel.nba import ACTIONS, NBAConfig, NBAPolicy
from cxstream.schemas import Disposition, Identifiers, OutcomeEvent, RoutingEvent
from cxstream.schemas.events import NBAAction
from cxstream.schemas.learning import NBALabel
from cxstream.streams.settings import Settings, SettingsError

DAY = 86400.0


def ctx(**kw: object) -> CustomerContext:
    return CustomerContext(customer_id="c1", created_at=0, updated_at=0,
                           open_contacts={"k1": OpenContact(contact_id="k1", channel="chat", opened_at=0)}, **kw)  # type: ignore[arg-type]


def completed(contact: str, at: float, resolved: bool, action: str | None = None) -> RoutingEvent:
    return RoutingEvent(event_id=f"done-{contact}-{at}", kind="completed", routing_group="g", contact_id=contact, at=at,
                        advisor_id="ann", customer_id="c1",
                        disposition=Disposition(intent="card", resolved=resolved, action=action, document="kb-1" if action else None))  # type: ignore[arg-type]


def test_the_action_kinds_of_the_contract_are_the_policys() -> None:
    assert tuple(NBAAction.__args__) == ACTIONS  # type: ignore[attr-defined]


def test_a_decision_is_kept_in_the_context_with_its_propensity() -> None:
    nba = NBA(NBAConfig(epsilon=0.2))
    new, d = nba.decide(ctx(churn_risk=0.7), source_id="e1", at=10.0, channel="chat", contact_id="k1")
    assert new.nba == [d]
    assert d.decision_id == "nba:e1" and d.contact_id == "k1" and d.model_version == "nba-0"
    assert d.ranked[0].action == d.chosen
    assert {r.action for r in d.ranked} == {"resolve", "offer_retention", "call_back", "escalate_tier"}
    assert d.propensity == pytest.approx(0.85 if not d.explored else 0.05)
    assert sum(r.probability for r in d.ranked) == pytest.approx(1.0)
    assert d.features["churn_risk"] == 0.7


def test_vip_desk_is_eligible_for_vip_tiers_only() -> None:
    nba = NBA()
    _, d = nba.decide(ctx(tier="Gold"), source_id="e1", at=1, channel="voice", contact_id="k1")
    assert "vip_desk" in {r.action for r in d.ranked}
    assert features(ctx(tier="Gold"), "voice")["tier"] == "gold"


def test_completion_rewards_the_contacts_decision_with_the_advisors_action() -> None:
    nba = NBA()
    c, d = nba.decide(ctx(), source_id="e1", at=10.0, channel="chat", contact_id="k1")
    c, labels = nba.on_completion(c, completed("k1", 20.0, True, "call_back"))
    assert c.nba == []
    [label] = labels
    assert (label.action, label.recommended, label.reward, label.reason, label.document_id) == ("call_back", d.chosen, 1.0, "resolved", "kb-1")
    assert label.propensity == d.propensity and label.features == d.features
    # a completion without an action learns the recommended one; unresolved is 0
    c, d2 = nba.decide(c, source_id="e2", at=30.0, channel="chat", contact_id="k1")
    _, [label2] = nba.on_completion(c, completed("k1", 40.0, False))
    assert (label2.action, label2.reward) == (d2.chosen, 0.0)


def test_an_outcome_after_the_attribution_window_teaches_nothing() -> None:
    nba = NBA(window_s=7 * DAY)
    c, _ = nba.decide(ctx(), source_id="e1", at=0.0, channel="chat", contact_id="k1")
    c2, labels = nba.on_completion(c, completed("k1", 8 * DAY, True))
    assert labels == [] and c2.nba == []
    c, _ = nba.decide(ctx(), source_id="o1", at=0.0, channel="sms", outreach_id="out-1")
    late = OutcomeEvent(event_id="r", occurred_at=9 * DAY, customer=Identifiers(customer_id="c1"), kind="retained")
    assert nba.on_outcome(c, late)[1] == []


def test_retention_outcomes_reward_outreach_decisions() -> None:
    nba = NBA()
    c, d = nba.decide(ctx(), source_id="o1", at=100.0, channel="sms", outreach_id="out-1")
    assert {r.action for r in d.ranked} == {"offer_retention", "call_back", "resolve"}
    c, _ = nba.decide(c, source_id="e1", at=100.0, channel="chat", contact_id="k1")
    churned = OutcomeEvent(event_id="x", occurred_at=200.0, customer=Identifiers(customer_id="c1"), kind="churned")
    c, [label] = nba.on_outcome(c, churned)
    assert (label.reward, label.reason, label.decision_id) == (0.0, "churned", "nba:o1")
    assert [p.decision_id for p in c.nba] == ["nba:e1"]  # the contact's decision waits for its completion
    csat = OutcomeEvent(event_id="y", occurred_at=200.0, customer=Identifiers(customer_id="c1"), kind="csat", value=5)
    assert nba.on_outcome(c, csat) == (c, [])


def test_pending_decisions_are_bounded() -> None:
    nba = NBA()
    c = ctx()
    for i in range(MAX_PENDING + 5):
        c, _ = nba.decide(c, source_id=f"e{i}", at=float(i), channel="chat", contact_id=f"k{i}")
    assert len(c.nba) == MAX_PENDING and c.nba[-1].decision_id == f"nba:e{MAX_PENDING + 4}"


def test_the_learner_learns_nba_labels_and_publishes_the_policy() -> None:
    learner = Learner()
    for _ in range(10):
        learner.learn(NBALabel(event_id="l", at=1, decision_id="d", intent="card", features={"churn_risk": 0.9},
                               action="call_back", recommended="resolve", propensity=0.05, reward=1.0, reason="resolved"))
    assert learner.seen["nba"] == 10 and learner.pending["nba"] == 10
    _, version, _, _ = learner.nba.publish_parts()
    assert version == 11  # +1 per outcome, +1 for the publication
    assert learner.nba.rank({"churn_risk": 0.9}, "card")[0][0] == "call_back"
    assert learner.learn(NBALabel(event_id="bad", at=1, decision_id="d", intent="card", features={}, action="teleport",
                                  recommended="resolve", propensity=0.5, reward=1.0, reason="resolved")) == []
    assert learner.seen["nba"] == 10
    assert NBAPolicy.from_bytes(learner.nba.to_bytes()).n_learned == 10


def test_exploration_settings_are_bounded() -> None:
    with pytest.raises(SettingsError, match="CX_NBA_EPSILON"):
        Settings(nba_epsilon=0.9)
    assert Settings(nba_epsilon=0.5).nba_epsilon == 0.5


def test_the_context_stage_decides_for_contacts_and_outreach_and_rewards_retention() -> None:
    """Through the context stage's handler (no broker): a routed contact and an outreach each get a logged
    decision on cx.nba.v1 and in the context; a retained outcome sends the outreach decision's reward to the learner."""
    import asyncio

    import msgspec

    from cxstream.agents import context as context_agent
    from cxstream.agents.context import RedisContextWriter
    from cxstream.agents.scoring import Scorer
    from cxstream.context.model import decode_context
    from cxstream.schemas import InteractionEvent, NextBestAction
    from cxstream.streams import topics as t
    from cxstream.streams.batch import BatchRuntime, Record
    from cxstream.streams.codecs import encode

    settings = Settings(outreach_quiet_start="00:00", outreach_quiet_end="00:00")  # no quiet hours: any hour CI runs at
    rt = BatchRuntime("127.0.0.1:9", settings)
    writer = RedisContextWriter(client=None, ttl_s=60)  # type: ignore[arg-type]  # marks only: nothing is flushed here
    st = context_agent.stage(rt, settings, writer, Scorer(nba=NBA(NBAConfig(epsilon=0.1))))
    assert st.handler is not None
    cust, other = Identifiers(customer_id="c9"), Identifiers(customer_id="c8")  # an open contact holds outreach back
    records = [
        InteractionEvent(event_id="open-1", occurred_at=1000.0, channel="chat", kind="contact_opened", customer=cust,
                         contact_id="k9", needs_advisor=True),
        OutcomeEvent(event_id="consent-1", occurred_at=900.0, customer=other, kind="consent", attributes={"sms": True}),
        OutcomeEvent(event_id="pay-1", occurred_at=1001.0, customer=other, kind="payment_failed", value=30.0),
        OutcomeEvent(event_id="kept-1", occurred_at=2000.0, customer=other, kind="retained"),
    ]

    async def run() -> None:
        for i, rec in enumerate(records):
            key = rec.customer.customer_id.encode()  # type: ignore[union-attr]
            await st.handler(Record(rt.topic(t.CUSTOMER_EVENTS), 0, i, key, encode(rec)))  # type: ignore[misc]

    asyncio.run(run())
    sent = [(topic, value) for topic, _, value in rt.buffer]
    decisions = [msgspec.json.decode(v, type=NextBestAction) for topic, v in sent if topic == rt.topic(t.NBA) and v]
    assert [(d.decision_id, d.contact_id) for d in decisions if d.contact_id] == [("nba:open-1", "k9")]
    [outreach_decision] = [d for d in decisions if d.outreach_id]
    assert {r.action for r in outreach_decision.ranked} == {"offer_retention", "call_back", "resolve"}
    labels = [msgspec.json.decode(v, type=NBALabel) for topic, v in sent
              if topic == rt.topic(t.LABELS) and v and b"NBALabel" in v]
    assert [(lb.decision_id, lb.reward, lb.reason) for lb in labels] == [(outreach_decision.decision_id, 1.0, "retained")]
    assert [d.decision_id for d in decode_context(st.tables[0].get(b"c9")).nba] == ["nba:open-1"]  # awaits its completion
    assert decode_context(st.tables[0].get(b"c8")).nba == []  # rewarded


def test_a_merge_keeps_both_sides_pending_decisions() -> None:
    from cxstream.context import ContextLimits, merge_contexts

    nba = NBA()
    a, _ = nba.decide(ctx(), source_id="e1", at=10.0, channel="chat", contact_id="k1")
    b, _ = nba.decide(CustomerContext(customer_id="c2", created_at=0, updated_at=0), source_id="e2", at=5.0, channel="voice",
                      contact_id="k2")
    merged = merge_contexts(a, b, "c1", "c2", "m1", 20.0, ContextLimits(), [])
    assert [d.decision_id for d in merged.nba] == ["nba:e2", "nba:e1"]
    _, [label] = nba.on_completion(merged, completed("k2", 30.0, True))  # the absorbed side's contact still teaches
    assert label.decision_id == "nba:e2"
