"""The 360° context: sentiment, intents, contact counts, repeat contacts, outcomes, merges, bounded memory."""

from __future__ import annotations

from typing import Any

from cxstream.context import ContextLimits, apply_interaction, apply_outcome, merge_contexts, set_scores
from cxstream.context.model import CustomerContext, context_json, decode_context, encode_context
from cxstream.schemas import Assignment, Identifiers, InteractionEvent, OutcomeEvent

DAY = 86400.0


def ev(n: int, kind: str = "message", channel: str = "chat", at: float | None = None, **kw: Any) -> InteractionEvent:
    return InteractionEvent(
        event_id=f"e{n}", occurred_at=at if at is not None else 1000.0 + n, channel=channel, kind=kind,  # type: ignore[arg-type]
        customer=Identifiers(customer_id="C"), **kw,
    )


def fold(events: list[InteractionEvent], ctx: CustomerContext | None = None, limits: ContextLimits | None = None) -> CustomerContext:
    limits = limits or ContextLimits()
    for e in events:
        ctx, _ = apply_interaction(ctx, e, "C", limits, redacted_text=e.text)
    assert ctx is not None
    return ctx


def test_inbound_messages_get_a_vader_sentiment_and_a_trend() -> None:
    texts = ["This is terrible, I am furious", "still broken, awful", "ok it works now", "great, thank you so much!"]
    ctx = fold([ev(i, text=t) for i, t in enumerate(texts)] + [ev(9, text="You're welcome!", direction="outbound")])
    scores = [p.score for p in ctx.sentiment_recent]
    assert len(scores) == 4, "outbound messages are not the customer's sentiment"
    assert scores[0] < -0.5 and scores[-1] > 0.5
    assert ctx.sentiment_trend is not None and ctx.sentiment_trend > 0.3, "improving"
    assert ctx.sentiment_last == scores[-1] and ctx.recent[1].sentiment == scores[-1]
    assert ctx.recent[0].sentiment is None


def test_channel_intents_build_the_history_and_the_contact_log() -> None:
    ctx = fold([
        ev(1, kind="contact_opened", contact_id="k1"),
        ev(2, text="lost my card", contact_id="k1", attributes={"intent": "card_lost", "intent_confidence": 0.8}),
        ev(3, kind="contact_closed", contact_id="k1", attributes={"resolved": False}),
    ])
    assert (ctx.latest_intent, ctx.intent_confidence) == ("card_lost", 0.8)
    (point,) = ctx.intent_history
    assert (point.source, point.contact_id, point.channel) == ("channel", "k1", "chat")
    (k1,) = ctx.contacts
    assert (k1.intent, k1.resolved, k1.closed_at) == ("card_lost", False, 1003.0)


def test_same_intent_again_without_resolution_is_a_repeat_contact_and_puts_the_customer_at_risk() -> None:
    first = [
        ev(1, kind="contact_opened", contact_id="k1", at=0),
        ev(2, contact_id="k1", at=10, text="card lost", attributes={"intent": "card_lost"}),
        ev(3, kind="contact_closed", contact_id="k1", at=20),
    ]
    second = [ev(4, kind="contact_opened", channel="voice", contact_id="k2", at=DAY), ev(5, contact_id="k2", at=DAY + 5, attributes={"intent": "card_lost"})]
    ctx = fold([*first, *second])
    assert ctx.repeat_contact and ctx.repeat_of == "k1" and ctx.journey_stage == "at_risk"
    assert (ctx.contacts_24h, ctx.contacts_7d) == (1, 2)
    resolved = fold([*first[:2], ev(3, kind="contact_closed", contact_id="k1", at=20, attributes={"resolved": True}), *second])
    assert not resolved.repeat_contact
    late = fold([*first, ev(4, kind="contact_opened", contact_id="k2", at=9 * DAY), ev(5, contact_id="k2", at=9 * DAY, attributes={"intent": "card_lost"})])
    assert not late.repeat_contact and late.contacts_7d == 1


def test_preferred_channel_and_language_are_learned_from_history() -> None:
    ctx = fold([ev(1, channel="email", language="fr"), ev(2, channel="email", language="fr"), ev(3, channel="voice", language="en")])
    assert (ctx.preferred_channel, ctx.preferred_language, ctx.last_channel, ctx.language) == ("email", "fr", "voice", "en")
    _, fx = apply_interaction(ctx, ev(4, kind="contact_opened", channel="voice", contact_id="k", needs_advisor=True), "C")
    assert fx.routing[0].language == "fr", "a contact without a language is routed in the preferred one"  # type: ignore[union-attr]


def test_outcomes_fill_satisfaction_consent_tier_and_milestones() -> None:
    def out(n: int, kind: str, value: float | None = None, **attrs: Any) -> OutcomeEvent:
        return OutcomeEvent(event_id=f"o{n}", occurred_at=2000.0 + n, customer=Identifiers(customer_id="C"), kind=kind, value=value, attributes=attrs)  # type: ignore[arg-type]

    ctx: CustomerContext | None = None
    for o in [out(1, "csat", 2), out(2, "csat", 4), out(3, "nps", 9), out(4, "consent", marketing=True, sms=False),
              out(5, "profile", tier="gold", value=1234.5), out(6, "consent", sms=True), out(7, "churned")]:
        ctx, dup = apply_outcome(ctx, o, "C")
        assert not dup
    assert ctx is not None
    assert (ctx.csat_last, ctx.csat_avg, ctx.csat_count, ctx.nps_last) == (4.0, 3.0, 2, 9.0)
    assert ctx.consent == {"marketing": True, "sms": True}
    assert (ctx.tier, ctx.value) == ("gold", 1234.5)
    assert ctx.journey_stage == "churned" and ctx.milestones["churned"] == 2007.0


def test_scores_from_the_scoring_stage_are_stamped_with_the_model_version() -> None:
    ctx = fold([ev(1, kind="contact_opened", contact_id="k1")])
    scored = set_scores(ctx, at=1005, intent="refund", intent_confidence=0.66, churn_risk=0.2, model_version="intent-v7", contact_id="k1")
    assert (scored.latest_intent, scored.intent_confidence, scored.churn_risk, scored.model_version) == ("refund", 0.66, 0.2, "intent-v7")
    assert scored.intent_history[-1].source == "model" and scored.contacts[0].intent == "refund"
    _, fx = apply_interaction(scored, ev(2, kind="contact_opened", channel="voice", contact_id="k2", needs_advisor=True), "C")
    req = fx.routing[0]
    assert (req.intent, req.churn_risk) == ("refund", 0.2)  # type: ignore[union-attr]


def test_merging_two_contexts_keeps_both_channels_history_intent_and_last_advisor() -> None:
    chat = fold([
        ev(1, kind="contact_opened", contact_id="chat-1", at=100),
        ev(2, contact_id="chat-1", at=110, text="my card is blocked", attributes={"intent": "card_blocked"}),
    ])
    from cxstream.context import apply_assignment

    chat = apply_assignment(chat, Assignment(
        assignment_id="a1", contact_id="chat-1", customer_id="C", advisor_id="ann", routing_group="g", channel="chat",
        contact_opened_at=100, decided_at=105, waited_s=5,
    ))
    call, _ = apply_interaction(None, InteractionEvent(
        event_id="v1", occurred_at=200, channel="voice", kind="contact_opened", customer=Identifiers(phone="+447700900123"),
        contact_id="call-1"), "P")
    merged = merge_contexts(chat, call, "C", "P", "m1", 201)
    assert [s.event_id for s in merged.recent] == ["v1", "e2", "e1"]
    assert merged.latest_intent == "card_blocked" and merged.last_advisor_id == "ann"
    assert set(merged.open_by_channel()) == {"chat", "voice"} and merged.merged_from == ["P"]
    assert merged.interactions_total == 3 and merged.customer_id == "C"
    assert merge_contexts(merged, call, "C", "P", "m1", 202) is merged, "a re-delivered hand-off is applied once"
    # order of arrival does not change the history
    other_way = merge_contexts(call, chat, "C", "C", "m1", 201)
    assert [s.event_id for s in other_way.recent] == [s.event_id for s in merged.recent]


def test_a_merge_counts_an_interaction_both_sides_applied_once() -> None:
    # After a crash, an event redelivered to identity resolves to the survivor and reaches it before
    # the hand-off of the absorbed context, which had already applied it: both sides hold it.
    page = ev(3, kind="page_view", channel="web", language="en")
    call = ev(4, kind="contact_opened", channel="voice", contact_id="call-4", language="en")
    msg = ev(5, text="my card was declined again, this is awful", language="en")
    absorbed = fold([page, call, msg])
    survivor = fold([ev(1, language="fr", text="hello"), page, call, msg])
    merged = merge_contexts(survivor, absorbed, "C", "P", "m1", 2000)
    once = fold([ev(1, language="fr", text="hello"), page, call, msg])
    assert merged.interactions_total == once.interactions_total == 4
    assert merged.channel_counts == once.channel_counts == {"chat": 2, "web": 1, "voice": 1}
    assert merged.language_counts == once.language_counts
    assert merged.contacts_total == once.contacts_total == 1
    assert [p.score for p in merged.sentiment_recent] == [p.score for p in once.sentiment_recent]
    assert sorted(s.event_id for s in merged.recent) == ["e1", "e3", "e4", "e5"]


def test_memory_per_customer_is_bounded_however_long_the_customer_lives() -> None:
    limits = ContextLimits()
    sizes = []
    ctx: CustomerContext | None = None
    for n in range(3000):
        k = f"contact-{n // 5}"
        kind = "contact_opened" if n % 5 == 0 else "contact_closed" if n % 5 == 4 else "message"
        e = ev(n, kind=kind, channel=("chat", "voice", "email")[n % 3], contact_id=k, text="x" * 600 if kind == "message" else None,
               language="en", attributes={"intent": f"intent-{n % 40}"} if kind == "message" else {})
        ctx, _ = apply_interaction(ctx, e, "C", limits, redacted_text=e.text)
        if n in (500, 2999):
            sizes.append(len(context_json(encode_context(ctx))))  # the JSON: what the bounds bound
    assert ctx is not None
    assert sizes[1] <= sizes[0] * 1.05, f"context grew from {sizes[0]} to {sizes[1]} bytes"
    assert sizes[1] < 32_000
    assert decode_context(encode_context(ctx)) == ctx


def test_a_close_that_overtakes_the_merge_hand_off_still_closes_the_contact_and_tells_the_router() -> None:
    # the call was opened (and routed) under the stranger's id; the merge moved the caller's id to the
    # survivor, whose partition saw the close before the hand-off of the stranger's context arrived
    ids = Identifiers(phone="+447700900123")
    stranger, _ = apply_interaction(None, InteractionEvent(event_id="o", occurred_at=10, channel="voice", kind="contact_opened",
                                                           customer=ids, contact_id="call", needs_advisor=True), "P")
    survivor = fold([ev(1, at=5, text="hi")])
    survivor, fx = apply_interaction(survivor, InteractionEvent(event_id="x", occurred_at=30, channel="voice", kind="contact_closed",
                                                                customer=ids, contact_id="call"), "C")
    assert fx.routing == []
    routing: list = []
    merged = merge_contexts(survivor, stranger, "C", "P", "m1", 31, routing=routing)
    assert "call" not in merged.open_contacts
    (call,) = [c for c in merged.contacts if c.contact_id == "call"]
    assert (call.opened_at, call.closed_at) == (10, 30)
    (upd,) = routing
    assert (upd.contact_id, upd.kind, upd.at) == ("call", "closed", 30)
