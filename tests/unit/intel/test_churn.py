"""ChurnModel and the churn feature map."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cxstream.intel.churn import SNAPSHOT_KIND, ChurnModel
from cxstream.intel.features import churn_features, churn_reasons, telco_context, telco_features, telco_label
from cxstream.intel.metrics import exact_auc
from cxstream.intel.snapshot import SnapshotError, dump_snapshot

TELCO_ROW = {
    "customerID": "0000-TEST",
    "gender": "Female",
    "SeniorCitizen": "0",
    "Partner": "Yes",
    "Dependents": "No",
    "tenure": "1",
    "PhoneService": "No",
    "MultipleLines": "No phone service",
    "InternetService": "DSL",
    "OnlineSecurity": "No",
    "OnlineBackup": "Yes",
    "DeviceProtection": "No",
    "TechSupport": "No",
    "StreamingTV": "No",
    "StreamingMovies": "No",
    "Contract": "Month-to-month",
    "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check",
    "MonthlyCharges": "29.85",
    "TotalCharges": "29.85",
    "Churn": "No",
}


def test_telco_row_mapping() -> None:
    ctx = telco_context(TELCO_ROW)
    assert ctx["tenure_months"] == 1.0
    assert ctx["contract"] == "Month-to-month"
    assert ctx["products"] == ["onlinebackup", "internet_dsl"]
    feats = telco_features(TELCO_ROW)
    assert feats["contract"] == "month_to_month"
    assert feats["payment_method"] == "electronic_check"
    assert feats["tenure_bucket"] == "0-6"
    assert feats["plan"] == "internet_dsl"
    assert feats["tenure_band"] == "1-2"
    assert feats["segment=non_senior"] == feats["segment=partner"] == feats["segment=no_dependents"] == 1.0
    assert "segment" not in feats
    assert "customerID" not in str(feats) and "0000-TEST" not in str(feats)
    assert telco_label(TELCO_ROW) is False
    blank = dict(TELCO_ROW, TotalCharges=" ")
    assert "total_log" not in telco_features(blank)


def test_engagement_features_are_monotone() -> None:
    low = churn_features({"complaints": 0, "failed_payments": 0, "contacts_30d": 1, "negative_sentiment": 0.1})
    high = churn_features({"complaints": 3, "failed_payments": 2, "contacts_30d": 9, "negative_sentiment": 2.0})
    for key in ("complaints_log", "failed_payments_log", "contacts_30d_log"):
        assert float(high[key]) > float(low[key])
    assert high["negative_sentiment"] == 1.0  # clipped to [0, 1]
    assert "tenure_years" not in low  # missing account data is skipped, not invented


def test_learns_risk_ordering(make_churn_rows: Any) -> None:
    model = ChurnModel()
    rows = make_churn_rows(3000, 11)
    probs, labels = [], []
    for feats, churned in rows:
        probs.append(model.predict_proba_one(feats))
        labels.append(churned)
        model.learn_one(feats, churned)
    assert exact_auc(labels[1000:], probs[1000:]) > 0.75
    risky: dict[str, float | str] = {
        "contract": "month_to_month",
        "complaints_log": 2.0,
        "failed_payments_log": 1.0,
        "tenure_years": 0.1,
    }
    safe: dict[str, float | str] = {
        "contract": "two_year",
        "complaints_log": 0.0,
        "failed_payments_log": 0.0,
        "tenure_years": 5.0,
    }
    assert model.predict_proba_one(risky) > 0.7 > 0.2 > model.predict_proba_one(safe)


def test_unseen_feature_ignored_at_predict() -> None:
    model = ChurnModel()
    model.learn_one({"contract": "one_year"}, False)
    n = len(model.names)
    model.predict_proba_one({"contract": "brand_new_value", "other": 3.0})
    assert len(model.names) == n  # predicting never grows the vocabulary


def test_live_context_without_telco_keys() -> None:
    feats = churn_features({"segment": "Family", "contacts_30d": 3})
    assert feats == {"bias_context": 1.0, "segment=family": 1.0, "contacts_30d_log": feats["contacts_30d_log"]}
    model = ChurnModel()
    for i in range(50):
        model.learn_one(feats, i % 3 == 0)
        model.learn_one({}, False)  # an empty context is a valid example
    assert 0.0 < model.predict_proba_one({}) < model.predict_proba_one(feats) < 1.0


def test_naive_bayes_part_and_blend() -> None:
    rows = [({"contract": "month_to_month", "monthly_100": 0.9}, True), ({"contract": "two_year"}, False)] * 30
    blended, linear = ChurnModel(), ChurnModel(nb_weight=0.0)
    for feats, y in rows:
        blended.learn_one(feats, y)
        linear.learn_one(feats, y)
    assert ("contract", "month_to_month") in blended.nb_items
    assert ("monthly_100", "18") in blended.nb_items  # floor(0.9 * 20 bins per unit)
    x = rows[0][0]
    assert blended.predict_proba_one(x) != linear.predict_proba_one(x)
    assert blended.predict_proba_one(x) > linear.predict_proba_one(x) > 0.7  # NB is the less shrunk part


def test_feature_cap_bounds_covariance() -> None:
    model = ChurnModel(max_features=8)
    for i in range(40):
        model.learn_one({"plan": f"p{i}", "x": float(i % 5)}, i % 2 == 0)
    assert len(model.names) == 8
    restored = ChurnModel.from_bytes(model.to_bytes())
    assert restored.to_bytes() == model.to_bytes()
    assert np.isfinite(restored.predict_proba_one({"plan": "p1", "x": 2.0}))


def test_old_snapshot_format_refused() -> None:
    old = dump_snapshot("cxstream.intel.ChurnModel", 3, {"params": {"lr": 0.05}}, {})
    with pytest.raises(SnapshotError):
        ChurnModel.from_bytes(old)
    bad = dump_snapshot(
        SNAPSHOT_KIND,
        1,
        {"params": {}, "names": ["a"], "nb_items": [], "n_learned": 1, "n_positive": 0},
        {"w": np.zeros(3), "P": np.zeros((2, 2)), "nb_counts": np.zeros((0, 2), dtype=np.int64)},
    )
    with pytest.raises(SnapshotError):
        ChurnModel.from_bytes(bad)


def test_reasons_are_exact_shares_of_the_log_odds(make_churn_rows: Any) -> None:
    """Base + shares is the blended log-odds: the reasons explain the score itself, not a surrogate of it."""
    m = ChurnModel()
    for feats, y in make_churn_rows(1500, 3):
        m.learn_one(feats, y)
    n1 = m.n_positive
    base = (1 - m.nb_weight) * float(m._w[0]) + m.nb_weight * float(np.log((n1 + 1.0) / (m.n_learned - n1 + 1.0)))
    for feats, _ in make_churn_rows(200, 4):
        p, shares = m.explain_one(feats)
        assert p == pytest.approx(m.predict_proba_one(feats), abs=1e-12)
        assert 1 / (1 + np.exp(-(base + sum(shares.values())))) == pytest.approx(p, abs=1e-9)
        assert set(shares) <= set(feats)


def test_reasons_name_what_the_stream_taught() -> None:
    """A month-to-month customer with complaints: those two are the reasons, largest share first."""
    from tests.unit.intel.conftest import churn_rows

    m = ChurnModel()
    for feats, y in churn_rows(3000, 5):
        m.learn_one(feats, y)
    # the synthetic stream's features (as churn_features would name them) and the inputs they stand for
    inputs = {"contract": "Month-to-month", "complaints": 2, "failed_payments": 0, "tenure_months": 3}
    feats = {"contract": "month_to_month", "complaints_log": 2.0, "failed_payments_log": 0.0, "tenure_years": 0.25}
    _, shares = m.explain_one(feats)
    reasons = churn_reasons(shares, inputs)
    assert sorted(r[0] for r in reasons) == ["complaints", "contract"], reasons
    assert [w for _, _, w in reasons] == sorted((w for _, _, w in reasons), reverse=True)
    assert dict((k, v) for k, v, _ in reasons) == {"contract": "Month-to-month", "complaints": "2"}
    assert all(w >= 0.05 for _, _, w in reasons)
    # a two-year customer without complaints has nothing that raises the risk much
    _, shares = m.explain_one({"contract": "two_year", "complaints_log": 0.0, "tenure_years": 5.0})
    assert churn_reasons(shares, {"contract": "Two year", "tenure_months": 60}) == []


def test_reasons_credit_crosses_to_both_keys_and_read_aliases() -> None:
    shares = {"contract_x_tenure": 0.6, "monthly_100": 0.3, "bias_context": 5.0, "product": 0.2, "n_products": -0.1}
    inputs = {"contract": "Month-to-month", "tenure_months": 2.0, "monthly_value": 99.5, "products": ["tv", "fiber"]}
    assert churn_reasons(shares, inputs, top=5) == [
        ("contract", "Month-to-month", 0.3), ("monthly_charges", "99.5", 0.3), ("tenure_months", "2", 0.3),
        ("products", "tv|fiber", 0.1),
    ]
    assert churn_reasons(shares, inputs, top=1) == [("contract", "Month-to-month", 0.3)]
