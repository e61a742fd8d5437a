"""The churn model's inputs from a live context: account facts from ``profile`` outcomes, engagement from the logs."""

from __future__ import annotations

import random
from typing import Any

import msgspec

from cxstream.agents.scoring import churn_inputs, features_of
from cxstream.context import apply_interaction, apply_outcome, merge_contexts
from cxstream.context.model import CustomerContext, decode_context, encode_context
from cxstream.intel.churn import ChurnModel
from cxstream.intel.evaluate import exact_auc
from cxstream.schemas import Identifiers, InteractionEvent, OutcomeEvent

DAY = 86400.0


def interaction(n: int, at: float, kind: str = "message", cid: str = "C", **kw: Any) -> InteractionEvent:
    return InteractionEvent(event_id=f"{cid}-e{n}", occurred_at=at, channel="chat", kind=kind,  # type: ignore[arg-type]
                            customer=Identifiers(customer_id=cid), **kw)


def outcome(n: int, at: float, kind: str, cid: str = "C", **attrs: Any) -> OutcomeEvent:
    return OutcomeEvent(event_id=f"{cid}-o{n}", occurred_at=at, customer=Identifiers(customer_id=cid),
                        kind=kind, attributes=attrs)  # type: ignore[arg-type]


def fold(events: list[InteractionEvent | OutcomeEvent], cid: str = "C") -> CustomerContext:
    ctx: CustomerContext | None = None
    for e in events:
        if isinstance(e, OutcomeEvent):
            ctx, _ = apply_outcome(ctx, e, cid)
        else:
            ctx, _ = apply_interaction(ctx, e, cid, redacted_text=e.text)
    assert ctx is not None
    return ctx


def test_profile_outcomes_keep_the_account_facts_and_nothing_else() -> None:
    ctx = fold([
        outcome(1, 10.0, "profile", tenure_months=3, contract="Month-to-month", monthly_charges=89.5, colour="red",
                products="PhoneService|StreamingTV", paperless_billing="Yes"),
        outcome(2, 20.0, "profile", contract="One year", total_charges=268.5, tier="gold"),
    ])
    assert ctx.account == {"tenure_months": 3.0, "monthly_charges": 89.5, "contract": "One year",
                           "products": "PhoneService|StreamingTV", "paperless_billing": True, "total_charges": 268.5}
    assert ctx.tier == "gold"
    assert decode_context(encode_context(ctx)) == ctx
    other = fold([outcome(3, 30.0, "profile", cid="D", payment_method="Electronic check")], cid="D")
    merged = merge_contexts(ctx, other, "C", "D", "m1", 40.0)
    assert merged.account["payment_method"] == "Electronic check" and merged.account["contract"] == "One year"


def test_engagement_inputs_come_from_the_contact_log_sentiment_and_outcomes() -> None:
    t0 = 100 * DAY
    ctx = fold([
        interaction(1, t0 - 40 * DAY, "contact_opened", contact_id="old"),  # outside the 30 days
        interaction(2, t0 - 3 * DAY, "contact_opened", contact_id="k1"),
        interaction(3, t0 - 3 * DAY + 5, contact_id="k1", text="my card was charged twice, this is awful",
                    attributes={"intent": "card_charge"}),
        interaction(4, t0 - 3 * DAY + 60, "contact_closed", contact_id="k1", attributes={"resolved": False}),
        interaction(5, t0 - 1 * DAY, "contact_opened", contact_id="k2"),
        interaction(6, t0 - 1 * DAY + 5, contact_id="k2", text="still charged twice, terrible service",
                    attributes={"intent": "card_charge"}),
        interaction(7, t0 - DAY / 2, "payment_failed"),
        outcome(8, t0 - DAY / 4, "payment_failed"),
        outcome(9, t0 - DAY / 8, "complaint", contact_id="k2"),
        interaction(10, t0, text="thanks, that is great"),
        outcome(11, t0, "profile", tenure_months=5, contract="Month-to-month", products="PhoneService|Fiber optic"),
    ])
    got = churn_inputs(ctx)
    assert got["contacts_30d"] == 2 and got["repeat_contacts"] == 1
    assert got["failed_payments"] == 2 and got["complaints"] == 1
    assert got["negative_sentiment"] == 2 / 3
    assert got["days_since_contact"] == 1.0
    assert got["products"] == ["PhoneService", "Fiber optic"] and got["tenure_months"] == 5.0
    feats = features_of(ctx)
    for name in ("contacts_30d_log", "repeat_contacts_log", "failed_payments_log", "complaints_log", "negative_sentiment",
                 "recency_log", "tenure_years", "contract", "product=phoneservice"):
        assert name in feats, name
    assert features_of(decode_context(encode_context(ctx))) == feats, "a replayed (decoded) context gives the same features"


def test_a_milestone_in_the_window_counts_even_when_the_interaction_log_has_moved_on() -> None:
    t0 = 50 * DAY
    events: list[InteractionEvent | OutcomeEvent] = [outcome(1, t0 - 5 * DAY, "payment_failed")]
    events += [interaction(10 + i, t0 - 4 * DAY + i, "page_view") for i in range(40)]  # pushes it out of `recent`
    ctx = fold(events)
    assert not any(r.kind == "outcome:payment_failed" for r in ctx.recent)
    assert churn_inputs(ctx)["failed_payments"] == 1
    later = fold([*events, interaction(99, t0 + 40 * DAY, "page_view")])
    assert churn_inputs(later)["failed_payments"] == 0


def test_the_live_path_carries_the_signal_a_churn_model_learns_from() -> None:
    """Churners complain, fail payments and are unhappy; the others are not: online learning must see it."""
    rng = random.Random(5)
    model, labels, scores = ChurnModel(), [], []
    for c in range(600):
        cid = f"C{c}"
        churns = rng.random() < 0.3
        t0 = 200 * DAY + c * 60.0
        events: list[InteractionEvent | OutcomeEvent] = [
            outcome(0, t0 - 60 * DAY, "profile", cid=cid, tenure_months=rng.randint(1, 72),
                    contract=rng.choice(["Month-to-month", "One year", "Two year"]))]
        for i in range(rng.randint(1, 4) + (3 if churns else 0)):
            at = t0 - rng.uniform(0, 25) * DAY
            events.append(interaction(10 + i, at, "contact_opened", cid=cid, contact_id=f"{cid}-k{i}"))
            text = "this is terrible and I am angry" if churns and rng.random() < 0.8 else "thanks, all good"
            events.append(interaction(20 + i, at + 5, cid=cid, contact_id=f"{cid}-k{i}", text=text))
        if churns and rng.random() < 0.7:
            events.append(outcome(40, t0 - DAY, "complaint", cid=cid))
        if churns and rng.random() < 0.5:
            events.append(interaction(41, t0 - 2 * DAY, "payment_failed", cid=cid))
        events.sort(key=lambda e: e.occurred_at)
        feats = features_of(fold(events, cid))
        scores.append(model.predict_proba_one(feats))
        labels.append(churns)
        model.learn_one(feats, churns)
    assert exact_auc(labels[200:], scores[200:]) > 0.9


def test_the_scorer_stores_the_models_reasons_with_the_risk_and_a_merge_keeps_them() -> None:
    from cxstream.agents.scoring import Scorer
    from cxstream.context import set_scores

    model = ChurnModel()
    rng = random.Random(9)
    for c in range(400):  # month-to-month customers with few months churn; two-year ones stay
        monthly = rng.random() < 0.5
        ctx = fold([outcome(0, 10.0, "profile", cid=f"T{c}", contract="Month-to-month" if monthly else "Two year",
                            tenure_months=rng.randint(1, 6) if monthly else rng.randint(30, 72))], cid=f"T{c}")
        model.learn_one(features_of(ctx), monthly and rng.random() < 0.8)
    scorer = Scorer()
    scorer.churn.model, scorer.churn.version = model, 7

    risky = fold([outcome(1, 10.0, "profile", contract="Month-to-month", tenure_months=2)])
    scored = scorer.churn_risk(risky)
    assert scored is not None
    risk, version, reasons = scored
    assert risk > 0.5 and version == "churn-7"
    assert [r.factor for r in reasons][:1] in (["contract"], ["tenure_months"])
    assert {r.factor: r.value for r in reasons} == {"contract": "Month-to-month", "tenure_months": "2"}
    ctx = set_scores(risky, at=11.0, churn_risk=risk, model_version=version, churn_reasons=reasons)
    assert ctx.churn_reasons == reasons and decode_context(encode_context(ctx)) == ctx
    # a later intent-only score keeps the risk and its reasons
    assert set_scores(ctx, at=12.0, intent="billing", intent_confidence=0.9).churn_reasons == reasons

    safe = fold([outcome(2, 30.0, "profile", cid="D", contract="Two year", tenure_months=60)], cid="D")
    s_risk, s_version, s_reasons = scorer.churn_risk(safe) or (None, None, None)
    assert s_risk is not None and s_risk < 0.2 and s_reasons == []
    safe = set_scores(safe, at=31.0, churn_risk=s_risk, model_version=s_version, churn_reasons=s_reasons)
    assert merge_contexts(ctx, safe, "C", "D", "m1", 40.0).churn_reasons == []  # D was scored last
    assert merge_contexts(safe, ctx, "D", "C", "m1", 40.0).churn_reasons == []
    newer = set_scores(ctx, at=50.0, churn_risk=risk, model_version=version, churn_reasons=reasons)
    assert merge_contexts(safe, newer, "D", "C", "m1", 60.0).churn_reasons == reasons


def test_a_context_stored_before_reasons_existed_still_decodes() -> None:
    ctx = fold([outcome(1, 10.0, "profile", contract="Month-to-month")])
    raw = msgspec.json.encode(ctx).replace(b',"churn_reasons":[]', b"")  # stored as plain JSON, before compression too
    assert b"churn_reasons" not in raw
    assert decode_context(raw).churn_reasons == []
