"""Per-trigger outreach counters and the metrics derived from them (precision, lift).

Fed with what :func:`~cxstream.outreach.decide.evaluate` returns (sent events,
suppressions) and what :func:`~cxstream.outreach.decide.record_outcome` attributes.

Per trigger:

- ``precision`` = sent outreach with a positive attributed outcome (a response that is
  not a refusal, a conversion or a retention) / sent outreach.
- ``churned_rate`` = sent outreach whose customer churned anyway / sent outreach.  For
  ``churn_risk`` this is the trigger's precision as a churn predictor (confounded by the
  outreach's own effect: a saved customer counts as a miss).
- ``lift`` = precision / the same rate in the control group (``holdout_fraction`` > 0),
  else precision / the ``baseline`` rate given to :meth:`OutreachStats.summary`, else None.
- ``churn_lift`` = churned_rate / the control group's churned rate (< 1: outreach helps).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from cxstream.outreach.decide import Attribution, Suppression
from cxstream.schemas import OutreachEvent


class TriggerCounters(msgspec.Struct, kw_only=True):
    """Counters of one trigger."""

    sent: int = 0
    control: int = 0
    #: Blocks reported (held or dropped), by guardrail.
    blocked: dict[str, int] = {}
    #: Recommendations dropped for good (never sent), by the guardrail that held them last.
    suppressed: dict[str, int] = {}
    responded: int = 0
    converted: int = 0
    retained: int = 0
    churned: int = 0
    successes: int = 0
    control_successes: int = 0
    control_churned: int = 0


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


class OutreachStats(msgspec.Struct, kw_only=True):
    """Counters per trigger.

    >>> from cxstream.outreach.decide import Attribution
    >>> st = OutreachStats()
    >>> ev = OutreachEvent(outreach_id="or-1", customer_id="c", reason="churn_risk", channel="email", created_at=0, expires_at=9)
    >>> st.observe([ev], [])
    >>> st.observe_attribution(Attribution(outreach_id="or-1", customer_id="c", trigger="churn_risk", kind="retained",
    ...     at=5, latency_s=5, explicit=False, control=False, success=True, first_success=True))
    >>> st.summary(baseline={"churn_risk": 0.5})["churn_risk"]["precision"], st.summary(baseline={"churn_risk": 0.5})["churn_risk"]["lift"]
    (1.0, 2.0)
    """

    triggers: dict[str, TriggerCounters] = {}

    def _t(self, name: str) -> TriggerCounters:
        got = self.triggers.get(name)
        if got is None:
            got = self.triggers[name] = TriggerCounters()
        return got

    def observe(self, events: Iterable[OutreachEvent], suppressions: Iterable[Suppression]) -> None:
        """Count one evaluation's output."""
        for e in events:
            self._t(e.reason).sent += 1
        for s in suppressions:
            t = self._t(s.trigger)
            if s.guardrail == "holdout":
                t.control += 1
                continue
            if s.cause == "blocked":
                t.blocked[s.guardrail] = t.blocked.get(s.guardrail, 0) + 1
            if s.final:
                t.suppressed[s.guardrail] = t.suppressed.get(s.guardrail, 0) + 1

    def observe_attribution(self, a: Attribution) -> None:
        """Count one attributed outcome."""
        t = self._t(a.trigger)
        if a.control:
            t.control_successes += int(a.first_success)
            t.control_churned += int(a.kind == "churned")
            return
        t.responded += int(a.kind == "outreach_response")
        t.converted += int(a.kind == "converted")
        t.retained += int(a.kind == "retained")
        t.churned += int(a.kind == "churned")
        t.successes += int(a.first_success)

    def summary(self, baseline: dict[str, float] | None = None) -> dict[str, dict[str, object]]:
        """Counters and derived metrics per trigger (see the module doc)."""
        out: dict[str, dict[str, object]] = {}
        for name in sorted(self.triggers):
            t = self.triggers[name]
            precision = _ratio(t.successes, t.sent)
            control_rate = _ratio(t.control_successes, t.control)
            base = control_rate if control_rate else (baseline or {}).get(name)
            churned_rate = _ratio(t.churned, t.sent)
            control_churn = _ratio(t.control_churned, t.control)
            out[name] = {
                **msgspec.structs.asdict(t),
                "precision": precision,
                "churned_rate": churned_rate,
                "lift": round(precision / base, 4) if precision is not None and base else None,
                "churn_lift": round(churned_rate / control_churn, 4) if churned_rate is not None and control_churn else None,
            }
        return out
