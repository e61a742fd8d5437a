"""The pure context core: folding events into a customer's context."""

from __future__ import annotations

import pytest

from cxstream.context import ContextLimits, apply_assignment, apply_interaction, apply_outcome
from cxstream.context.identity import InvalidIdentifier, customer_key, is_junk, normalise, normalised
from cxstream.context.model import decode_context, encode_context
from cxstream.context.redact import redact
from cxstream.schemas import Assignment, ContactRequest, ContactUpdate, Identifiers, InteractionEvent, OutcomeEvent

C = Identifiers(customer_id="C-1")


def ev(n: int, kind: str = "message", channel: str = "chat", **kw: object) -> InteractionEvent:
    return InteractionEvent(event_id=f"e{n}", occurred_at=100.0 + n, channel=channel, kind=kind, customer=C, **kw)  # type: ignore[arg-type]


def fold(events: list[InteractionEvent], limits: ContextLimits | None = None):  # type: ignore[no-untyped-def]
    limits = limits or ContextLimits()
    ctx, effects = None, []
    for e in events:
        ctx, fx = apply_interaction(ctx, e, "C-1", limits)
        effects.append(fx)
    return ctx, effects


def test_recent_interactions_are_newest_first_and_bounded() -> None:
    ctx, _ = fold([ev(i) for i in range(30)], ContextLimits(max_interactions=5))
    assert [s.event_id for s in ctx.recent] == ["e29", "e28", "e27", "e26", "e25"]
    assert ctx.interactions_total == 30


def test_duplicate_event_ids_are_dropped_and_the_memory_of_ids_is_bounded() -> None:
    limits = ContextLimits(max_event_ids=4)
    ctx, _ = fold([ev(i) for i in range(10)], limits)
    assert len(ctx.recent_event_ids) == 4
    again, fx = apply_interaction(ctx, ev(9), "C-1", limits)
    assert fx.duplicate and again is ctx


def test_contact_needing_an_advisor_becomes_a_routing_request_with_what_context_knows() -> None:
    history = [ev(1, language="fr")]
    ctx, _ = fold(history)
    a = Assignment(
        assignment_id="a1", contact_id="old", customer_id="C-1", advisor_id="ann", routing_group="g",
        channel="chat", contact_opened_at=100, decided_at=101, waited_s=1,
    )
    ctx = apply_assignment(ctx, a)
    opened = ev(2, kind="contact_opened", channel="voice", contact_id="k1", needs_advisor=True, routing_group="g", priority=3)
    ctx, fx = apply_interaction(ctx, opened, "C-1")
    (req,) = fx.routing
    assert isinstance(req, ContactRequest)
    assert (req.contact_id, req.channel, req.routing_group, req.priority) == ("k1", "voice", "g", 3)
    assert req.last_advisor_id == "ann" and req.language == "fr"
    assert ctx.open_by_channel() == {"voice": ["k1"]} and ctx.open_contacts["k1"].state == "queued"


def test_contact_without_advisor_need_is_tracked_but_not_routed() -> None:
    ctx, (fx,) = fold([ev(1, kind="contact_opened", contact_id="k1")])
    assert fx.routing == [] and ctx.open_contacts["k1"].state == "open"


@pytest.mark.parametrize(("kind", "update"), [("contact_abandoned", "abandoned"), ("contact_closed", "closed")])
def test_closing_a_routed_contact_tells_the_router(kind: str, update: str) -> None:
    ctx, fxs = fold([ev(1, kind="contact_opened", contact_id="k1", needs_advisor=True), ev(2, kind=kind, contact_id="k1")])
    (upd,) = fxs[1].routing
    assert isinstance(upd, ContactUpdate) and upd.kind == update and upd.at == 102.0
    assert ctx.open_contacts == {}


def test_history_survives_a_channel_switch() -> None:
    ctx, _ = fold([ev(1, channel="chat", text="card lost"), ev(2, channel="voice", kind="contact_opened", contact_id="k2")])
    assert [s.channel for s in ctx.recent] == ["voice", "chat"] and ctx.last_channel == "voice"


def test_assignment_marks_the_contact_and_last_advisor_once() -> None:
    ctx, _ = fold([ev(1, kind="contact_opened", contact_id="k1", needs_advisor=True)])
    a = Assignment(
        assignment_id="a1", contact_id="k1", customer_id="C-1", advisor_id="bob", routing_group="default",
        channel="chat", contact_opened_at=101, decided_at=103, waited_s=2,
    )
    ctx2 = apply_assignment(ctx, a)
    assert ctx2.open_contacts["k1"].advisor_id == "bob" and ctx2.last_advisor_at == 103
    assert apply_assignment(ctx2, a) is ctx2


def test_outcome_is_recorded_and_deduplicated() -> None:
    o = OutcomeEvent(event_id="o1", occurred_at=200, customer=C, kind="csat", value=4)
    ctx, dup = apply_outcome(None, o, "C-1")
    assert not dup and ctx.recent[0].kind == "outcome:csat"
    assert apply_outcome(ctx, o, "C-1") == (ctx, True)


def test_context_round_trips_through_its_encoding() -> None:
    ctx, _ = fold([ev(i, kind="contact_opened", contact_id=f"k{i}", needs_advisor=True) for i in range(3)])
    assert decode_context(encode_context(ctx)) == ctx


def test_long_text_is_truncated_in_the_context() -> None:
    ctx, _ = apply_interaction(None, ev(1, text="x" * 2000), "C-1", ContextLimits(max_text_chars=50), redacted_text="x" * 2000)
    assert len(ctx.recent[0].text or "") == 51


@pytest.mark.parametrize("value", ["", "0", "-1", "null", "NULL", "anonymous", "9999999", "  none "])
def test_junk_identifiers_are_refused(value: str) -> None:
    assert is_junk(value)
    with pytest.raises(InvalidIdentifier):
        normalise("phone", value)


def test_identifiers_are_normalised_and_keyed_by_precedence() -> None:
    ids = normalised(Identifiers(email=" Jane@Example.COM", phone="020 7946 0958"))
    assert ids == {"email": "jane@example.com", "phone": "+442079460958"}
    assert customer_key(ids) == "email:jane@example.com"
    with pytest.raises(InvalidIdentifier, match="not an email"):
        normalise("email", "jane-at-example")
    with pytest.raises(InvalidIdentifier, match="phone"):
        normalise("phone", "call me maybe")


def test_redaction_keeps_ordinary_numbers() -> None:
    text = "Order 123456 for £45.99; card 5500 0000 0000 0004; ring 07700 900123 or mail a.b@c.org"
    assert redact(text) == "Order 123456 for £45.99; card [card]; ring [phone] or mail [email]"
    assert redact("card 1234 5678 9012 3456") == "card 1234 5678 9012 3456"  # fails the Luhn check
