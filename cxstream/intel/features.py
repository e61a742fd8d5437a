"""Feature maps for the churn model (pure functions of a context-like dict).

:func:`churn_features` accepts the customer-context view the engine keeps (keys below,
all optional) and returns a flat ``dict[str, float | str]``: numbers are put on fixed,
documented scales (no data-dependent scaling, so the first prediction is as sane as the
thousandth), categories become strings for one-hot encoding by the model.

Context keys read (business systems may or may not send the account ones):

=====================  ===================================================
``tenure_months``      months as a customer
``contract``           ``month-to-month`` / ``one_year`` / ``two_year``
``monthly_charges``    monthly value (currency units); alias ``monthly_value``
``total_charges``      lifetime value; alias ``lifetime_value``
``payment_method``     free text category (e.g. ``electronic_check``)
``plan``               main plan / product tier category (crossed with contract)
``paperless_billing``  bool
``products``           list/ tuple of product names (one-hot ``product=NAME``)
``segment``            category (e.g. ``family``); ``|``-separated parts
                       become one indicator ``segment=PART`` each
``contacts_30d``       contacts in the last 30 days
``repeat_contacts``    contacts about the same issue within 7 days
``negative_sentiment`` share of negative messages recently, 0..1
``sentiment_trend``    mean compound sentiment recently, -1..1
``failed_payments``    failed payments in the last 90 days
``complaints``         complaints in the last 90 days
``days_since_contact`` recency of the last contact
=====================  ===================================================

>>> f = churn_features({"tenure_months": 2, "contract": "Month-to-month", "complaints": 1})
>>> f["contract"], f["tenure_bucket"], round(f["tenure_years"], 3), f["complaints_log"] > 0
('month_to_month', '0-6', 0.167, True)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

Features = dict[str, float | str]

_TENURE_EDGES = (6, 12, 24, 48)
_TENURE_BAND_EDGES = (1, 2, 3, 6, 12, 24, 36, 48, 60)
_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(value: Any) -> str:
    """Lower-case identifier form of a category.

    >>> _slug("Credit card (automatic)")
    'credit_card_automatic'
    """
    return _SLUG.sub("_", str(value).strip().lower()).strip("_") or "none"


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def tenure_bucket(months: float) -> str:
    """Coarse tenure band, e.g. ``'0-6'``, ``'6-12'``, ``'48+'``.

    >>> tenure_bucket(0), tenure_bucket(12), tenure_bucket(70)
    ('0-6', '12-24', '48+')
    """
    lo = 0
    for edge in _TENURE_EDGES:
        if months < edge:
            return f"{lo}-{edge}"
        lo = edge
    return f"{lo}+"


def tenure_band(months: float) -> str:
    """Fine tenure band (first months singled out), e.g. ``'0-1'``, ``'3-6'``, ``'60+'``.

    >>> tenure_band(0), tenure_band(2), tenure_band(5), tenure_band(72)
    ('0-1', '2-3', '3-6', '60+')
    """
    lo = 0
    for edge in _TENURE_BAND_EDGES:
        if months < edge:
            return f"{lo}-{edge}"
        lo = edge
    return f"{lo}+"


def churn_features(ctx: Mapping[str, Any]) -> Features:
    """Map a context-like mapping to churn-model features (missing keys are skipped).

    >>> churn_features({})
    {'bias_context': 1.0}
    >>> churn_features({"failed_payments": 2, "negative_sentiment": 0.5})["negative_sentiment"]
    0.5
    """
    f: Features = {"bias_context": 1.0}
    tenure = _num(ctx.get("tenure_months"))
    if tenure is not None:
        tenure = max(0.0, tenure)
        f["tenure_years"] = tenure / 12.0
        f["tenure_log"] = math.log1p(tenure) / math.log1p(72.0)
        f["tenure_bucket"] = tenure_bucket(tenure)
        f["tenure_band"] = tenure_band(tenure)
    contract = ctx.get("contract")
    if contract is not None:
        f["contract"] = _slug(contract)
        if tenure is not None:
            f["contract_x_tenure"] = f"{f['contract']}|{f['tenure_bucket']}"
    monthly = _num(ctx.get("monthly_charges", ctx.get("monthly_value")))
    if monthly is not None:
        monthly_100 = max(0.0, monthly) / 100.0
        f["monthly_100"] = monthly_100
        if tenure is not None:
            f["monthly_x_short_tenure"] = monthly_100 * (1.0 if tenure < 12 else 0.0)
    total = _num(ctx.get("total_charges", ctx.get("lifetime_value")))
    if total is not None:
        f["total_log"] = math.log1p(max(0.0, total)) / 10.0
    if ctx.get("plan") is not None:
        f["plan"] = _slug(ctx["plan"])
        if contract is not None:
            f["contract_x_plan"] = f"{f['contract']}|{f['plan']}"
    if ctx.get("payment_method") is not None:
        f["payment_method"] = _slug(ctx["payment_method"])
    if ctx.get("paperless_billing") is not None:
        f["paperless_billing"] = 1.0 if bool(ctx["paperless_billing"]) else 0.0
    if ctx.get("segment") is not None:
        # "senior|partner|no_dependents" -> one indicator per part (parts share weights)
        for part in str(ctx["segment"]).split("|"):
            f[f"segment={_slug(part)}"] = 1.0
    products = ctx.get("products")
    if products:
        names = sorted({_slug(p) for p in products})
        for name in names:
            f[f"product={name}"] = 1.0
        f["n_products"] = len(names) / 8.0
    for key in ("contacts_30d", "repeat_contacts", "failed_payments", "complaints"):
        v = _num(ctx.get(key))
        if v is not None:
            f[f"{key}_log"] = math.log1p(max(0.0, v))
    neg = _num(ctx.get("negative_sentiment"))
    if neg is not None:
        f["negative_sentiment"] = min(1.0, max(0.0, neg))
    trend = _num(ctx.get("sentiment_trend"))
    if trend is not None:
        f["sentiment_trend"] = min(1.0, max(-1.0, trend))
    recency = _num(ctx.get("days_since_contact"))
    if recency is not None:
        f["recency_log"] = math.log1p(max(0.0, recency)) / math.log1p(365.0)
    return f


#: The context key(s) each churn feature is made from: a feature's share of the risk is credited to
#: them (a cross of two keys half to each).  ``bias_context`` is in every example and is left out.
FEATURE_INPUTS: dict[str, tuple[str, ...]] = {
    "tenure_years": ("tenure_months",),
    "tenure_log": ("tenure_months",),
    "tenure_bucket": ("tenure_months",),
    "tenure_band": ("tenure_months",),
    "contract": ("contract",),
    "contract_x_tenure": ("contract", "tenure_months"),
    "monthly_100": ("monthly_charges",),
    "monthly_x_short_tenure": ("monthly_charges", "tenure_months"),
    "total_log": ("total_charges",),
    "plan": ("plan",),
    "contract_x_plan": ("contract", "plan"),
    "payment_method": ("payment_method",),
    "paperless_billing": ("paperless_billing",),
    "segment": ("segment",),
    "product": ("products",),
    "n_products": ("products",),
    "contacts_30d_log": ("contacts_30d",),
    "repeat_contacts_log": ("repeat_contacts",),
    "failed_payments_log": ("failed_payments",),
    "complaints_log": ("complaints",),
    "negative_sentiment": ("negative_sentiment",),
    "sentiment_trend": ("sentiment_trend",),
    "recency_log": ("days_since_contact",),
}
#: Aliases of the account keys, as :func:`churn_features` reads them.
_INPUT_ALIASES = {"monthly_charges": "monthly_value", "total_charges": "lifetime_value"}


def _shown(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "|".join(str(v) for v in value)[:80]
    return str(value)[:80]


def churn_reasons(
    shares: Mapping[str, float], inputs: Mapping[str, Any], top: int = 3, min_share: float = 0.05
) -> list[tuple[str, str | None, float]]:
    """The inputs that raise a churn risk most: ``(context key, its value, log-odds share)``, largest first.

    *shares*: :meth:`~cxstream.intel.churn.ChurnModel.explain_one`'s shares by feature name;
    *inputs*: what :func:`churn_features` read.  Shares are credited to the context keys the
    features come from (:data:`FEATURE_INPUTS`); keys whose total is below *min_share* (about 5 %
    on the odds) are not reasons.

    >>> churn_reasons({"contract": 0.8, "contract_x_tenure": 0.4, "tenure_log": -0.5, "complaints_log": 0.02},
    ...     {"contract": "Month-to-month", "tenure_months": 2, "complaints": 1})
    [('contract', 'Month-to-month', 1.0)]
    """
    total: dict[str, float] = {}
    for feature, share in shares.items():
        keys = FEATURE_INPUTS.get(feature, ())
        for key in keys:
            total[key] = total.get(key, 0.0) + share / len(keys)
    ranked = sorted(((k, v) for k, v in total.items() if v >= min_share), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [(k, _shown(inputs.get(k, inputs.get(_INPUT_ALIASES.get(k, ""), None))), round(v, 4)) for k, v in ranked]


_TELCO_PRODUCTS = (
    "PhoneService",
    "MultipleLines",
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
)


def telco_context(row: Mapping[str, str]) -> dict[str, Any]:
    """Map one IBM Telco churn CSV row to the context keys :func:`churn_features` reads.

    >>> ctx = telco_context({"tenure": "3", "Contract": "One year", "MonthlyCharges": "70.5",
    ...     "TotalCharges": " ", "InternetService": "Fiber optic", "TechSupport": "No",
    ...     "PaymentMethod": "Electronic check", "PaperlessBilling": "Yes", "SeniorCitizen": "1"})
    >>> ctx["contract"], ctx["total_charges"], ctx["products"], ctx["segment"]
    ('One year', None, ['internet_fiber_optic'], 'senior|no_partner|no_dependents')
    """

    def yes(col: str) -> bool:
        return str(row.get(col, "")).strip().lower() == "yes"

    products = [col for col in _TELCO_PRODUCTS if yes(col)]
    internet = str(row.get("InternetService", "No")).strip()
    if internet and internet.lower() != "no":
        products.append("internet_" + _slug(internet))
    total = _num(str(row.get("TotalCharges", "")).strip() or None)
    segment = "|".join(
        (
            "senior" if str(row.get("SeniorCitizen", "0")).strip() == "1" else "non_senior",
            "partner" if yes("Partner") else "no_partner",
            "dependents" if yes("Dependents") else "no_dependents",
        )
    )
    return {
        "tenure_months": _num(row.get("tenure")),
        "contract": row.get("Contract"),
        "monthly_charges": _num(row.get("MonthlyCharges")),
        "total_charges": total,
        "payment_method": row.get("PaymentMethod"),
        "plan": "internet_" + _slug(internet or "no"),
        "paperless_billing": yes("PaperlessBilling"),
        "products": [_slug(p) for p in products],
        "segment": segment,
    }


def telco_features(row: Mapping[str, str]) -> Features:
    """``churn_features(telco_context(row))``.

    >>> "contract" in telco_features({"Contract": "Two year", "tenure": "40"})
    True
    """
    return churn_features(telco_context(row))


def telco_label(row: Mapping[str, str]) -> bool:
    """True when the Telco row churned.

    >>> telco_label({"Churn": "Yes"}), telco_label({"Churn": "No"})
    (True, False)
    """
    return str(row.get("Churn", "")).strip().lower() == "yes"
