"""Each guardrail suppresses with its own name; quiet hours follow the customer's time zone."""

from __future__ import annotations

import pytest

from cxstream.outreach import evaluate
from cxstream.outreach.guardrails import GUARDRAILS, in_quiet_hours, quiet_hours_end

from .helpers import DAY, HOUR, NOON_UTC, config, view


@pytest.mark.parametrize(
    ("overrides", "guardrail", "final"),
    [
        ({"erased": True}, "erased", True),
        ({"opted_out": True}, "opted_out", True),
        ({"consent": {"email": False}}, "consent", True),
        ({"consent": {}}, "consent", True),
        ({"open_contacts": 2}, "open_contact", False),
        ({"timezone": "Asia/Tokyo"}, "quiet_hours", False),
    ],
)
def test_guardrail_names_its_suppression(overrides: dict[str, object], guardrail: str, final: bool) -> None:
    s, out, sup = evaluate(None, view(churn_risk=0.9, **overrides), None, NOON_UTC, config())
    assert out == []
    assert [(x.trigger, x.guardrail, x.final, x.cause) for x in sup] == [("churn_risk", guardrail, final, "blocked")]
    assert (s.pending == []) is final


def test_erased_wins_over_every_other_guardrail() -> None:
    v = view(churn_risk=0.9, erased=True, opted_out=True, consent={}, open_contacts=1, timezone="Asia/Tokyo")
    _, _, sup = evaluate(None, v, None, NOON_UTC, config())
    assert [x.guardrail for x in sup] == ["erased"]
    assert GUARDRAILS[0] == "erased"


def test_opt_out_key_in_consent() -> None:
    _, out, sup = evaluate(None, view(churn_risk=0.9, opted_out=False, consent={"email": True}), None, NOON_UTC,
                           config(require_explicit_consent=False))
    assert len(out) == 1
    from cxstream.outreach import view_from_dict

    v = view_from_dict({"customer_id": "c1", "consent": {"email": True, "outreach": False}, "churn_risk": 0.9})
    _, out, sup = evaluate(None, v, None, NOON_UTC, config())
    assert out == [] and sup[0].guardrail == "opted_out"


def test_frequency_cap_holds_then_expires() -> None:
    t = NOON_UTC
    cfg = config()  # 1 per 7 days
    s, out, _ = evaluate(None, view(churn_risk=0.9), None, t, cfg)
    assert len(out) == 1
    from cxstream.schemas import Identifiers, InteractionEvent

    abandon = InteractionEvent(event_id="a", occurred_at=t + HOUR, channel="voice", kind="contact_abandoned",
                               customer=Identifiers(customer_id="c1"), contact_id="k9")
    s, out, sup = evaluate(s, view(churn_risk=0.9), abandon, t + HOUR, cfg)
    assert out == [] and [(x.trigger, x.guardrail, x.final) for x in sup] == [("abandoned_contact", "frequency_cap", False)]
    # the call-back offer expires after 4 h still capped: dropped for good, named by the guardrail that held it
    s, out, sup = evaluate(s, view(churn_risk=0.9), None, t + 6 * HOUR, cfg)
    assert out == [] and [(x.guardrail, x.final, x.cause) for x in sup] == [("frequency_cap", True, "expired")]
    assert s.pending == []


def test_frequency_cap_configurable() -> None:
    t = NOON_UTC
    cfg = config(cap_max=2, cap_window_s=DAY)
    from cxstream.schemas import OutcomeEvent

    def pay(at: float, n: int) -> OutcomeEvent:
        return OutcomeEvent(event_id=f"p{n}", occurred_at=at, customer={"customer_id": "c1"}, kind="payment_failed")

    s, out1, _ = evaluate(None, view(churn_risk=0.9), None, t, cfg)
    s, out2, _ = evaluate(s, view(churn_risk=0.9), pay(t + 60, 1), t + 60, cfg)
    s, out3, sup = evaluate(s, view(churn_risk=0.9, sentiments=[(t, -0.5)] * 3), None, t + 120, cfg)
    assert (len(out1), len(out2), len(out3)) == (1, 1, 0) and sup[0].guardrail == "frequency_cap"
    s, out4, _ = evaluate(s, view(churn_risk=0.9, sentiments=[(t, -0.5)] * 3), None, t + DAY + 1, cfg)
    assert [e.reason for e in out4] == ["negative_sentiment"]


def test_quiet_hours_by_customer_time_zone() -> None:
    # the same instant: 21:00 in Tokyo and 07:00 in New York are quiet, 12:00 in London and
    # 04:00 in Los Angeles... is quiet too; 13:00 in Paris is not
    quiet = {tz: in_quiet_hours(NOON_UTC, view(timezone=tz), config())
             for tz in ("Asia/Tokyo", "America/New_York", "Europe/London", "America/Los_Angeles", "Europe/Paris")}
    assert quiet == {"Asia/Tokyo": True, "America/New_York": True, "Europe/London": False,
                     "America/Los_Angeles": True, "Europe/Paris": False}


def test_quiet_hours_default_timezone_when_missing_or_unknown() -> None:
    for tz in (None, "Not/AZone"):
        assert not in_quiet_hours(NOON_UTC, view(timezone=tz), config())  # UTC noon
        assert in_quiet_hours(NOON_UTC, view(timezone=tz), config(default_timezone="Asia/Tokyo"))


def test_quiet_hours_not_wrapping_midnight_and_disabled() -> None:
    assert in_quiet_hours(NOON_UTC, view(), config(quiet_start="12:00", quiet_end="13:00"))
    assert not in_quiet_hours(NOON_UTC, view(), config(quiet_start="13:00", quiet_end="14:00"))
    assert not in_quiet_hours(NOON_UTC, view(timezone="Asia/Tokyo"), config(quiet_start="00:00", quiet_end="00:00"))


def test_quiet_hours_held_then_sent_at_local_morning() -> None:
    # 12:00 UTC is 21:00 in Tokyo: held; a tick at 22:59 UTC (07:59 Tokyo) still holds; 23:00 UTC sends
    s, out, sup = evaluate(None, view(churn_risk=0.9, timezone="Asia/Tokyo"), None, NOON_UTC, config())
    assert out == [] and sup[0].guardrail == "quiet_hours"
    s, out, _ = evaluate(s, view(churn_risk=0.9, timezone="Asia/Tokyo"), None, NOON_UTC + 10 * HOUR + 59 * 60, config())
    assert out == []
    s, out, _ = evaluate(s, view(churn_risk=0.9, timezone="Asia/Tokyo"), None, NOON_UTC + 11 * HOUR, config())
    assert [e.reason for e in out] == ["churn_risk"] and out[0].context["held_by"] == "quiet_hours"


def test_quiet_hours_end_across_dst_change() -> None:
    # New York springs forward on 2024-03-10 (02:00 EST -> 03:00 EDT).  At 06:30 UTC (01:30 EST)
    # quiet hours end at 08:00 EDT = 12:00 UTC, 5.5 hours later, not 6.5.
    t = 1710052200.0  # 2024-03-10 06:30 UTC
    end = quiet_hours_end(t, view(timezone="America/New_York"), config())
    assert end - t == 5.5 * HOUR
    assert quiet_hours_end(NOON_UTC, view(), config()) == NOON_UTC  # not quiet: now


def test_holdout_records_control_without_sending() -> None:
    s, out, sup = evaluate(None, view(churn_risk=0.9), None, NOON_UTC, config(holdout_fraction=1.0))
    assert out == [] and [(x.guardrail, x.final) for x in sup] == [("holdout", True)]
    assert [o.control for o in s.open] == [True] and s.sent == []
