"""Each trigger fires, names itself in ``reason``, and does not re-fire inside its hysteresis/cooldown."""

from __future__ import annotations

from cxstream.outreach import evaluate
from cxstream.schemas import Identifiers, InteractionEvent, OutcomeEvent, RoutingEvent

from .helpers import DAY, HOUR, NOON_UTC, config, contact, view

NO_CAP = config(cap_max=1000)


def _interaction(kind: str, at: float, contact_id: str | None = "k1", **kw: object) -> InteractionEvent:
    return InteractionEvent(event_id=f"{kind}-{at}", occurred_at=at, channel="voice", kind=kind,  # type: ignore[arg-type]
                            customer=Identifiers(customer_id="c1"), contact_id=contact_id, **kw)  # type: ignore[arg-type]


def test_churn_fires_once_then_hysteresis_then_rearms() -> None:
    t = NOON_UTC
    s, out, sup = evaluate(None, view(churn_risk=0.7), None, t, NO_CAP)
    assert [e.reason for e in out] == ["churn_risk"] and sup == []
    assert out[0].context["churn_risk"] == 0.7 and out[0].context["threshold"] == 0.6
    first_id = out[0].outreach_id
    # every rescore above the threshold, or inside the band (0.5..0.6): nothing new
    for i, risk in enumerate((0.9, 0.65, 0.59, 0.51, 0.62)):
        s, out, sup = evaluate(s, view(churn_risk=risk), None, t + (i + 1) * HOUR, NO_CAP)
        assert out == [] and sup == [], risk
    assert not s.churn_armed
    # below threshold - hysteresis: re-armed (no outreach), then crossing again fires a new id
    s, out, _ = evaluate(s, view(churn_risk=0.45), None, t + HOUR, NO_CAP)
    assert out == [] and s.churn_armed and s.churn_epoch == 1
    s, out, _ = evaluate(s, view(churn_risk=0.61), None, t + 2 * HOUR, NO_CAP)
    assert [e.reason for e in out] == ["churn_risk"] and out[0].outreach_id != first_id


def test_churn_below_threshold_or_unknown_does_not_fire() -> None:
    for risk in (None, 0.0, 0.59):
        _, out, sup = evaluate(None, view(churn_risk=risk), None, NOON_UTC, NO_CAP)
        assert out == [] and sup == []


def test_churn_priority_grows_with_risk() -> None:
    _, low, _ = evaluate(None, view(churn_risk=0.6), None, NOON_UTC, NO_CAP)
    _, high, _ = evaluate(None, view(churn_risk=0.99), None, NOON_UTC, NO_CAP)
    assert low[0].priority == 5 and high[0].priority == 7


def test_repeat_contact_within_72h_fires_once() -> None:
    t = NOON_UTC
    v = view(contacts=[contact("k1", t - 30 * HOUR, resolved=False), contact("k2", t - HOUR)])
    s, out, _ = evaluate(None, v, None, t, NO_CAP)
    assert [e.reason for e in out] == ["repeat_contact"]
    assert out[0].context["intent"] == "refund" and out[0].context["contacts"] == 2
    # a third contact on the same intent, same streak: no second outreach
    v3 = view(contacts=[*v.contacts, contact("k3", t + HOUR)])
    s, out, _ = evaluate(s, v3, None, t + 2 * HOUR, NO_CAP)
    assert out == []


def test_repeat_contact_needs_same_intent_unresolved_and_inside_window() -> None:
    t = NOON_UTC
    cases = [
        [contact("k1", t - 80 * HOUR), contact("k2", t - HOUR)],  # 79 h apart: outside 72 h
        [contact("k1", t - 5 * HOUR, resolved=True), contact("k2", t - HOUR)],  # first one resolved
        [contact("k1", t - 5 * HOUR, intent="billing"), contact("k2", t - HOUR)],  # other intent
        [contact("k1", t - 5 * HOUR, intent=None), contact("k2", t - HOUR, intent=None)],  # no intent known
    ]
    for contacts in cases:
        _, out, _ = evaluate(None, view(contacts=contacts), None, t, NO_CAP)
        assert out == [], contacts


def test_negative_sentiment_streak_fires_rearms_on_positive() -> None:
    t = NOON_UTC
    msgs = [(t - 3 * HOUR, -0.4), (t - 2 * HOUR, -0.6), (t - HOUR, -0.2)]
    s, out, _ = evaluate(None, view(sentiments=msgs[:2]), None, t - HOUR, NO_CAP)
    assert out == []  # two negatives: not yet a streak of 3
    s, out, _ = evaluate(s, view(sentiments=msgs), None, t, NO_CAP)
    assert [e.reason for e in out] == ["negative_sentiment"] and out[0].context["negative_streak"] == 3
    msgs.append((t + HOUR, -0.7))
    s, out, _ = evaluate(s, view(sentiments=msgs), None, t + HOUR, NO_CAP)
    assert out == []  # still the same streak
    msgs.append((t + 2 * HOUR, 0.5))
    s, out, _ = evaluate(s, view(sentiments=msgs), None, t + 2 * HOUR, NO_CAP)
    assert out == [] and s.sentiment_armed
    msgs += [(t + 3 * HOUR, -0.5), (t + 4 * HOUR, -0.5), (t + 5 * HOUR, -0.5)]
    s, out, _ = evaluate(s, view(sentiments=msgs), None, t + 5 * HOUR, NO_CAP)
    assert [e.reason for e in out] == ["negative_sentiment"]


def test_abandoned_contact_offers_callback_on_voice_once() -> None:
    t = NOON_UTC
    v = view(consent={"email": True, "voice": True}, contacts=[contact("k1", t - 60)])
    ev = _interaction("contact_abandoned", t)
    s, out, _ = evaluate(None, v, ev, t, NO_CAP)
    assert [(e.reason, e.channel, e.priority) for e in out] == [("abandoned_contact", "voice", 8)]
    assert out[0].expires_at - out[0].created_at == 4 * HOUR
    s, again, _ = evaluate(s, v, ev, t + 60, NO_CAP)  # redelivered event
    assert again == []
    # the router's own abandon event for the same contact is the same fire
    s, again, _ = evaluate(s, v, RoutingEvent(event_id="r", kind="abandoned", routing_group="default", contact_id="k1", at=t), t + 90, NO_CAP)
    assert again == []


def test_abandoned_callback_falls_back_to_consented_channel() -> None:
    _, out, _ = evaluate(None, view(), _interaction("contact_abandoned", NOON_UTC), NOON_UTC, NO_CAP)
    assert out[0].channel == "email"


def test_payment_failed_fires_then_cooldown() -> None:
    t = NOON_UTC
    o = OutcomeEvent(event_id="p1", occurred_at=t, customer=Identifiers(customer_id="c1"), kind="payment_failed", value=19.5)
    s, out, _ = evaluate(None, view(failed_payments=1), o, t, NO_CAP)
    assert [e.reason for e in out] == ["payment_failed"] and out[0].context["amount"] == 19.5
    s, out, _ = evaluate(s, view(failed_payments=2), _interaction("payment_failed", t + DAY, None), t + DAY, NO_CAP)
    assert out == []  # inside the 3-day cooldown
    s, out, _ = evaluate(s, view(failed_payments=3), _interaction("payment_failed", t + 4 * DAY, None), t + 4 * DAY, NO_CAP)
    assert [e.reason for e in out] == ["payment_failed"]


def test_payment_failed_min_failures() -> None:
    o = _interaction("payment_failed", NOON_UTC, None)
    _, out, _ = evaluate(None, view(failed_payments=1), o, NOON_UTC, config(cap_max=9, payment_min_failures=2))
    assert out == []


def test_business_event_configured_names_and_outcome_kinds() -> None:
    t = NOON_UTC
    cfg = config(cap_max=1000, business_events=["service_outage"])
    outage = _interaction("business_event", t, None, attributes={"event": "service_outage"})
    other = _interaction("business_event", t, None, attributes={"event": "newsletter"})
    _, out, _ = evaluate(None, view(), outage, t, cfg)
    assert [(e.reason, e.context["event"]) for e in out] == [("business_event", "service_outage")]
    _, out, _ = evaluate(None, view(), other, t, cfg)
    assert out == []
    complaint = OutcomeEvent(event_id="x", occurred_at=t, customer=Identifiers(customer_id="c1"), kind="complaint")
    _, out, _ = evaluate(None, view(), complaint, t, cfg)
    assert [e.context["event"] for e in out] == ["complaint"]


def test_sla_breach_held_while_contact_open_then_sent() -> None:
    t = NOON_UTC
    breach = RoutingEvent(event_id="r1", kind="sla_breached", routing_group="default", contact_id="k1", at=t)
    s, out, sup = evaluate(None, view(open_contacts=1), breach, t, NO_CAP)
    assert out == [] and [(x.trigger, x.guardrail, x.final) for x in sup] == [("sla_breached", "open_contact", False)]
    s, out, sup = evaluate(s, view(open_contacts=1), None, t + 60, NO_CAP)
    assert out == [] and sup == []  # reported once, not on every tick
    s, out, sup = evaluate(s, view(open_contacts=0), None, t + 600, NO_CAP)
    assert [e.reason for e in out] == ["sla_breached"] and out[0].context["held_by"] == "open_contact"
    assert out[0].expires_at == t + DAY  # expiry counts from when it fired


def test_disabled_trigger_never_fires() -> None:
    from cxstream.outreach import TriggerSettings

    cfg = config(triggers={"churn_risk": TriggerSettings(enabled=False)})
    _, out, sup = evaluate(None, view(churn_risk=0.99), None, NOON_UTC, cfg)
    assert out == [] and sup == []


def test_two_triggers_at_once_send_one_outreach() -> None:
    t = NOON_UTC
    v = view(churn_risk=0.9, consent={"email": True, "voice": True})
    s, out, sup = evaluate(None, v, _interaction("contact_abandoned", t), t, NO_CAP)
    assert [e.reason for e in out] == ["abandoned_contact"] and out[0].context["also"] == "churn_risk"
    assert sup == [] and s.pending == []
