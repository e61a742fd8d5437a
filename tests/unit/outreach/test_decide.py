"""Deterministic ids, outcome attribution, stats, state round-trip and bounds, the context view."""

from __future__ import annotations

import random

import msgspec

from cxstream.outreach import (
    OutreachStats,
    decode_state,
    encode_state,
    evaluate,
    outreach_id,
    record_outcome,
    view_from_dict,
)
from cxstream.outreach.state import OpenOutreach, OutreachState
from cxstream.schemas import Identifiers, InteractionEvent, OutcomeEvent, RoutingEvent

from .helpers import DAY, HOUR, NOON_UTC, config, contact, view


def _outcome(kind: str, at: float, oid: str | None = None, **kw: object) -> OutcomeEvent:
    return OutcomeEvent(event_id=f"{kind}-{at}", occurred_at=at, customer=Identifiers(customer_id="c1"), kind=kind,  # type: ignore[arg-type]
                        outreach_id=oid, **kw)  # type: ignore[arg-type]


def _script(seed: int) -> list[tuple[float, object, dict[str, object]]]:
    """A random but seeded sequence of (time, event, view overrides) for one customer."""
    rng = random.Random(seed)
    t = NOON_UTC
    steps: list[tuple[float, object, dict[str, object]]] = []
    for i in range(300):
        t += rng.choice((600.0, 3 * HOUR, DAY))
        r = rng.random()
        ev: object = None
        if r < 0.2:
            ev = InteractionEvent(event_id=f"e{i}", occurred_at=t, channel="voice", kind="contact_abandoned",
                                  customer=Identifiers(customer_id="c1"), contact_id=f"k{i}")
        elif r < 0.3:
            ev = RoutingEvent(event_id=f"r{i}", kind="sla_breached", routing_group="default", contact_id=f"k{i}", at=t)
        elif r < 0.4:
            ev = _outcome("payment_failed", t)
        overrides = {
            "churn_risk": rng.random(),
            "open_contacts": int(rng.random() < 0.2),
            "timezone": rng.choice(("Europe/London", "Asia/Tokyo", "America/New_York", None)),
            "sentiments": [(t - k * 60, rng.uniform(-1, 0.3)) for k in range(4, 0, -1)],
            "contacts": [contact(f"k{i}", t - 3600, intent=rng.choice(("a", "b"))), contact(f"j{i}", t - 60, intent="a")],
            "consent": {"email": True, "voice": rng.random() < 0.5},
        }
        steps.append((t, ev, overrides))
    return steps


def _replay(seed: int) -> tuple[OutreachState, list[str], list[tuple[str, str, bool]]]:
    state = None
    ids: list[str] = []
    sups: list[tuple[str, str, bool]] = []
    for t, ev, overrides in _script(seed):
        state, out, sup = evaluate(state, view(**overrides), ev, t, config(cap_max=3, cap_window_s=DAY))  # type: ignore[arg-type]
        ids += [e.outreach_id for e in out]
        sups += [(x.outreach_id, x.guardrail, x.final) for x in sup]
    assert state is not None
    return state, ids, sups


def test_same_stream_same_outreach_ids() -> None:
    s1, ids1, sup1 = _replay(3)
    s2, ids2, sup2 = _replay(3)
    assert ids1 == ids2 and sup1 == sup2 and encode_state(s1) == encode_state(s2)
    assert len(ids1) > 10 and len(set(ids1)) == len(ids1)  # no outreach id is sent twice


def test_ids_depend_on_customer_trigger_key_and_anchor() -> None:
    base = outreach_id("c1", "abandoned_contact", "k1", 10.0)
    assert base == outreach_id("c1", "abandoned_contact", "k1", 10.0)
    assert base.startswith("or-") and len(base) == 19
    others = {outreach_id("c2", "abandoned_contact", "k1", 10.0), outreach_id("c1", "sla_breached", "k1", 10.0),
              outreach_id("c1", "abandoned_contact", "k2", 10.0), outreach_id("c1", "abandoned_contact", "k1", 11.0)}
    assert base not in others and len(others) == 4


def test_redelivered_event_gives_no_second_outreach() -> None:
    ev = InteractionEvent(event_id="e1", occurred_at=NOON_UTC, channel="chat", kind="contact_abandoned",
                          customer=Identifiers(customer_id="c1"), contact_id="k1")
    s, out, _ = evaluate(None, view(), ev, NOON_UTC, config(cap_max=10))
    s, again, sup = evaluate(s, view(), ev, NOON_UTC, config(cap_max=10))
    assert len(out) == 1 and again == [] and sup == []


def test_state_round_trip_after_activity() -> None:
    state, _, _ = _replay(5)
    raw = encode_state(state)
    assert decode_state(raw) == state
    assert msgspec.json.decode(raw)["customer_id"] == "c1"


def test_state_is_bounded() -> None:
    cfg = config(cap_max=3, cap_window_s=DAY)
    state, _, _ = _replay(11)
    assert len(state.pending) <= cfg.max_pending
    assert len(state.open) <= cfg.max_open
    assert len(state.marks) <= cfg.max_marks
    assert len(state.sent) <= cfg.cap_max
    assert len(encode_state(state)) < 4000
    # many simultaneous held recommendations: the pending list stays capped
    s = None
    for i in range(40):
        rev = RoutingEvent(event_id=f"r{i}", kind="sla_breached", routing_group="default", contact_id=f"k{i}", at=NOON_UTC + i)
        s, _, _ = evaluate(s, view(open_contacts=1), rev, NOON_UTC + i, config())
    assert s is not None and len(s.pending) == config().max_pending


def _sent_state() -> tuple[OutreachState, str]:
    s, out, _ = evaluate(None, view(churn_risk=0.9), None, NOON_UTC, config())
    return s, out[0].outreach_id


def test_outcome_attributed_explicitly_and_closes_on_conversion() -> None:
    s, oid = _sent_state()
    s, a = record_outcome(s, _outcome("outreach_response", NOON_UTC + HOUR, oid))
    assert a is not None and (a.outreach_id, a.trigger, a.explicit, a.success, a.first_success) == (oid, "churn_risk", True, True, True)
    assert [o.responded for o in s.open] == [True]  # still open: awaiting the final outcome
    s, a = record_outcome(s, _outcome("converted", NOON_UTC + 2 * DAY, oid))
    assert a is not None and a.kind == "converted" and a.latency_s == 2 * DAY and not a.first_success
    assert s.open == []
    s, a = record_outcome(s, _outcome("churned", NOON_UTC + 3 * DAY, oid))
    assert a is None  # closed already


def test_outcome_attributed_implicitly_within_window_only() -> None:
    s, oid = _sent_state()
    _, a = record_outcome(s, _outcome("churned", NOON_UTC + 10 * DAY))
    assert a is not None and a.outreach_id == oid and not a.explicit and not a.success
    _, late = record_outcome(s, _outcome("churned", NOON_UTC + 31 * DAY))
    _, before = record_outcome(s, _outcome("churned", NOON_UTC - 1))
    _, other = record_outcome(s, _outcome("csat", NOON_UTC + HOUR, value=4.0))
    _, unknown = record_outcome(s, _outcome("converted", NOON_UTC + HOUR, "or-unknown"))
    assert late is None and before is None and other is None and unknown is None


def test_negative_response_is_not_a_success() -> None:
    s, oid = _sent_state()
    _, a = record_outcome(s, _outcome("outreach_response", NOON_UTC + HOUR, oid, attributes={"response": "declined"}))
    assert a is not None and not a.success


def test_implicit_attribution_picks_newest_open_outreach() -> None:
    s = OutreachState(customer_id="c1", open=[
        OpenOutreach(outreach_id="or-a", trigger="churn_risk", sent_at=100.0, attribute_until=10_000.0),
        OpenOutreach(outreach_id="or-b", trigger="payment_failed", sent_at=200.0, attribute_until=10_000.0),
    ])
    _, a = record_outcome(s, _outcome("converted", 300.0))
    assert a is not None and (a.outreach_id, a.trigger) == ("or-b", "payment_failed")
    _, a = record_outcome(s, _outcome("converted", 150.0))
    assert a is not None and a.outreach_id == "or-a"


def test_stats_precision_and_lift_against_control() -> None:
    st = OutreachStats()
    cfg_treated, cfg_control = config(), config(holdout_fraction=1.0)
    for i in range(10):
        control = i >= 6
        v = view(customer_id=f"c{i}", churn_risk=0.9)
        s, out, sup = evaluate(None, v, None, NOON_UTC, cfg_control if control else cfg_treated)
        st.observe(out, sup)
        kind = "converted" if i in (0, 1, 2, 6) else "churned"
        s, a = record_outcome(s, _outcome(kind, NOON_UTC + DAY))
        assert a is not None and a.control is control
        st.observe_attribution(a)
    summary = st.summary()["churn_risk"]
    assert (summary["sent"], summary["control"], summary["successes"], summary["control_successes"]) == (6, 4, 3, 1)
    assert summary["precision"] == 0.5 and summary["lift"] == 2.0
    assert summary["churned_rate"] == 0.5 and summary["churn_lift"] == round(0.5 / 0.75, 4)


def test_stats_count_blocked_and_final_suppressions() -> None:
    st = OutreachStats()
    s, out, sup = evaluate(None, view(churn_risk=0.9, open_contacts=1), None, NOON_UTC, config())
    st.observe(out, sup)
    s, out, sup = evaluate(s, view(churn_risk=0.9, open_contacts=1), None, NOON_UTC + 4 * DAY, config())
    st.observe(out, sup)
    t = st.triggers["churn_risk"]
    assert t.blocked == {"open_contact": 1} and t.suppressed == {"open_contact": 1} and t.sent == 0


def test_view_from_context_json() -> None:
    d = {
        "customer_id": "c9", "created_at": 0, "updated_at": 5, "preferred_channel": None, "last_channel": "chat",
        "preferred_language": "fr", "language": "en", "consent": {"sms": True, "email": "yes"},
        "open_contacts": {"k1": {"contact_id": "k1", "channel": "voice", "opened_at": 1.0, "routing_group": "paris"}},
        "churn_risk": 1.7, "sentiment_recent": [[3.0, -0.2], {"at": 1.0, "score": -0.9}, "junk"],
        "contacts": [{"contact_id": "k2", "opened_at": 4.0, "resolved": False}, {"contact_id": "k1", "opened_at": 1.0}, {"x": 1}],
        "intent_history": [{"at": 4.0, "intent": "refund", "contact_id": "k2"}],
        "milestones": {"erasure_requested": 9.0}, "profile": {"timezone": "Europe/Paris"},
    }
    v = view_from_dict(d)
    assert (v.customer_id, v.routing_group, v.preferred_channel, v.language, v.timezone) == ("c9", "paris", "chat", "fr", "Europe/Paris")
    assert v.consent == {"sms": True} and v.open_contacts == 1 and v.churn_risk == 1.0 and v.erased
    assert v.sentiments == [(1.0, -0.9), (3.0, -0.2)]
    assert [(c.contact_id, c.intent, c.resolved) for c in v.contacts] == [("k1", None, None), ("k2", "refund", False)]


def test_view_from_real_context_record() -> None:
    from cxstream.context.model import CustomerContext

    ctx = CustomerContext(customer_id="c1", created_at=1.0, updated_at=2.0)
    v = view_from_dict(msgspec.to_builtins(ctx))
    assert v.customer_id == "c1" and v.open_contacts == 0 and not v.erased and v.churn_risk is None
    _, out, sup = evaluate(None, v, None, NOON_UTC, config())
    assert out == [] and sup == []


def test_invalid_language_is_dropped() -> None:
    assert view_from_dict({"customer_id": "c", "language": "english please"}).language is None
