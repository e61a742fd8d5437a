"""Customer health: a 0-100 score of the relationship, explained by the factors that move it most.

A pure function of a context-like mapping (the keys of :func:`cxstream.agents.scoring.health_inputs`:
the churn model's account and engagement keys, plus satisfaction, unresolved contacts and the churn
risk).  It is a fixed, versioned rule set (:data:`HEALTH_VERSION`), not a learned model:

* **One scale.**  ``health = 50 + 10 x (log-odds that the customer stays)``, clamped to 0..100, so
  10 points are a factor e (2.7) on the odds of staying: 50 is even odds, 60 about 73 %, 70 about
  88 %.  Every factor's contribution is in points on that scale, so the factors add up and an
  advisor can read them ("a complaint: -10").
* **Account factors** (tenure, contract, payment method): their points are the
  coefficients of a logistic regression of churn on these levels, fitted once on a *tuning* half of
  the IBM Telco table (``cxstream eval health`` refits and shows them; the other half measures),
  times 10 and rounded; :data:`BASE` is its intercept.  A fact the context does not have
  contributes nothing (the score stays near the base).
* **Experience factors** (CSAT, NPS, negative sentiment and its trend, complaints, failed payments,
  repeat and unresolved contacts, contact volume) have no labels in any public table here; their
  points are set by contact-centre convention on the same scale (e.g. a detractor NPS or a
  complaint ~ -10: the odds of staying divided by e) and capped, so no single one dominates.
* **Churn risk**, when the churn model has scored the customer, adds half of its log-odds distance
  from the Telco base rate (capped to -15..+10): it already counts the account facts, so only
  half, and a model that has not learned yet cannot swing the score.

>>> score, factors = health_score({"contract": "Two year", "tenure_months": 60, "complaints": 1})
>>> score, [(f.factor, f.points) for f in factors]
(78, [('contract', 22.0), ('complaints', -10.0), ('tenure_months', 3.0)])
>>> health_score({})[0] == round(BASE)
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HEALTH_VERSION = "health-1"
#: Points per unit of log-odds of staying.
POINTS_PER_LOGIT = 10.0
#: The score of a customer the engine knows nothing about: 50 + 10 x the tuning half's intercept
#: (log-odds of staying at the reference levels: month-to-month, 12-24 months, mailed check).
BASE = 63.0
#: Telco's churn rate (26.5 %), the neutral point of the churn-risk factor.
BASE_CHURN_RATE = 0.265

#: Account factor -> level -> points, from the tuning half's logistic regression (see the module doc).
ACCOUNT_POINTS: dict[str, dict[str, float]] = {
    "tenure_months": {"0-6": -9.0, "6-12": -3.0, "12-24": 0.0, "24-48": 1.0, "48+": 3.0},
    "contract": {"month_to_month": 0.0, "one_year": 12.0, "two_year": 22.0},
    "payment_method": {"electronic_check": -11.0, "mailed_check": 0.0, "automatic": -4.0},
}

_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class HealthFactor:
    """One factor's contribution: the context key (as the churn reasons name them), its value, points (+ raises health)."""

    factor: str
    value: str | None
    points: float


def _slug(value: Any) -> str:
    return _SLUG.sub("_", str(value).strip().lower()).strip("_")


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def tenure_level(months: float) -> str:
    """The tenure level (months) the points are set for.

    >>> [tenure_level(m) for m in (0, 6, 23, 47, 70)]
    ['0-6', '6-12', '12-24', '24-48', '48+']
    """
    for edge, name in ((6, "0-6"), (12, "6-12"), (24, "12-24"), (48, "24-48")):
        if months < edge:
            return name
    return "48+"


def payment_level(method: Any) -> str | None:
    """The payment level: automatic, electronic check, or other (mailed check, cash...).

    >>> payment_level("Credit card (automatic)"), payment_level("Electronic check"), payment_level("cash")
    ('automatic', 'electronic_check', 'mailed_check')
    """
    slug = _slug(method)
    if not slug:
        return None
    if "automatic" in slug or "direct_debit" in slug:
        return "automatic"
    if "electronic" in slug:
        return "electronic_check"
    return "mailed_check"


def account_levels(inputs: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The account factors' levels: factor -> (level, value as shown), for the keys present.

    >>> account_levels({"tenure_months": 3, "contract": "One year", "payment_method": "Bank transfer (automatic)"})
    {'tenure_months': ('0-6', '3'), 'contract': ('one_year', 'One year'), 'payment_method': ('automatic', 'Bank transfer (automatic)')}
    """
    out: dict[str, tuple[str, str]] = {}
    tenure = _num(inputs.get("tenure_months"))
    if tenure is not None:
        out["tenure_months"] = (tenure_level(max(0.0, tenure)), f"{tenure:g}")
    contract = inputs.get("contract")
    if contract is not None and _slug(contract) in ACCOUNT_POINTS["contract"]:
        out["contract"] = (_slug(contract), str(contract)[:40])
    payment = payment_level(inputs.get("payment_method")) if inputs.get("payment_method") is not None else None
    if payment is not None:
        out["payment_method"] = (payment, str(inputs["payment_method"])[:40])
    return out


def _capped(points: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, points))


def experience_points(inputs: Mapping[str, Any]) -> list[HealthFactor]:
    """The experience factors' points (convention-set, capped), for the keys present.

    >>> [(f.factor, f.points) for f in experience_points({"csat": 5, "nps": 3, "repeat_contacts": 2})]
    [('csat', 9.0), ('nps', -10.0), ('repeat_contacts', -12.0)]
    """
    out: list[HealthFactor] = []

    def add(key: str, value: float | None, points: float, shown: str | None = None) -> None:
        if value is not None and points != 0.0:
            out.append(HealthFactor(key, shown if shown is not None else f"{value:.3g}", round(points, 1)))

    csat = _num(inputs.get("csat"))  # 1-5
    if csat is not None:
        add("csat", csat, _capped((csat - 3.5) * 6.0, -15.0, 9.0))
    nps = _num(inputs.get("nps"))  # 0-10: promoters 9-10, passives 7-8, detractors 0-6
    if nps is not None:
        add("nps", nps, 8.0 if nps >= 9 else 0.0 if nps >= 7 else -6.0 if nps >= 5 else -10.0)
    neg = _num(inputs.get("negative_sentiment"))  # share 0..1 of recent messages
    if neg is not None:
        add("negative_sentiment", neg, -20.0 * min(1.0, max(0.0, neg)))
    trend = _num(inputs.get("sentiment_trend"))  # slope per message
    if trend is not None:
        add("sentiment_trend", trend, _capped(40.0 * trend, -8.0, 8.0))
    for key, each, cap in (("complaints", -10.0, -20.0), ("failed_payments", -8.0, -16.0),
                           ("repeat_contacts", -6.0, -18.0), ("unresolved_contacts", -5.0, -15.0)):
        n = _num(inputs.get(key))
        if n is not None and n > 0:
            add(key, n, max(cap, each * n), f"{n:g}")
    contacts = _num(inputs.get("contacts_30d"))
    if contacts is not None and contacts > 3:  # a few contacts a month are normal; more is effort
        add("contacts_30d", contacts, max(-10.0, -2.0 * (contacts - 3)), f"{contacts:g}")
    risk = _num(inputs.get("churn_risk"))
    if risk is not None:
        p = min(0.999, max(0.001, risk))
        logit = math.log(p / (1 - p)) - math.log(BASE_CHURN_RATE / (1 - BASE_CHURN_RATE))
        add("churn_risk", risk, _capped(-0.5 * POINTS_PER_LOGIT * logit, -15.0, 10.0), f"{risk:.2f}")
    return out


def health_factors(inputs: Mapping[str, Any]) -> list[HealthFactor]:
    """Every factor with a non-zero contribution, account factors first."""
    out = [
        HealthFactor(key, shown, ACCOUNT_POINTS[key][level])
        for key, (level, shown) in account_levels(inputs).items()
        if ACCOUNT_POINTS[key][level] != 0.0
    ]
    return out + experience_points(inputs)


def health_score(inputs: Mapping[str, Any], top: int = 3) -> tuple[int, list[HealthFactor]]:
    """The health score (0-100) and its *top* factors by size of contribution (ties by name).

    >>> s, f = health_score({"tenure_months": 2, "payment_method": "Electronic check", "csat": 1})
    >>> s, [(x.factor, x.points) for x in f]
    (28, [('csat', -15.0), ('payment_method', -11.0), ('tenure_months', -9.0)])
    """
    factors = health_factors(inputs)
    total = BASE + sum(f.points for f in factors)
    score = round(min(100.0, max(0.0, total)))
    ranked = sorted(factors, key=lambda f: (-abs(f.points), f.factor))
    return score, ranked[:top]


#: Bands for the desk and reports: lower bound -> name.
BANDS: tuple[tuple[int, str], ...] = ((70, "healthy"), (50, "watch"), (30, "at_risk"), (0, "critical"))


def band(score: float) -> str:
    """The band of a score (:data:`BANDS`).

    >>> [band(s) for s in (95, 70, 55, 30, 12)]
    ['healthy', 'healthy', 'watch', 'at_risk', 'critical']
    """
    for lower, name in BANDS:
        if score >= lower:
            return name
    return "critical"
