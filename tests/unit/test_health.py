"""The customer health score: its scale, factors, bands, the context fields and the Telco evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import msgspec

from cxstream.agents.scoring import health_inputs, with_health
from cxstream.cli import main as cli
from cxstream.context.model import ContactRecord, CustomerContext, decode_context, encode_context
from cxstream.intel.eval_health import evaluate_health, fit_points
from cxstream.intel.health import BASE, health_score


def test_every_factor_moves_the_score_in_the_direction_it_should() -> None:
    base, _ = health_score({})
    assert base == round(BASE)
    for inputs in ({"complaints": 1}, {"failed_payments": 1}, {"repeat_contacts": 1}, {"unresolved_contacts": 2},
                   {"csat": 1.5}, {"nps": 2}, {"negative_sentiment": 0.8}, {"sentiment_trend": -0.3},
                   {"contacts_30d": 9}, {"churn_risk": 0.9}, {"tenure_months": 1}, {"payment_method": "Electronic check"}):
        assert health_score(inputs)[0] < base, inputs
    for inputs in ({"csat": 5}, {"nps": 10}, {"sentiment_trend": 0.3}, {"churn_risk": 0.02}, {"contract": "Two year"},
                   {"tenure_months": 60}):
        assert health_score(inputs)[0] > base, inputs


def test_the_score_is_bounded_and_its_factors_add_up_to_it() -> None:
    worst = {"complaints": 5, "failed_payments": 4, "repeat_contacts": 5, "unresolved_contacts": 5, "csat": 1, "nps": 0,
             "negative_sentiment": 1.0, "churn_risk": 0.99, "tenure_months": 1, "payment_method": "Electronic check"}
    assert health_score(worst)[0] == 0
    best = {"contract": "Two year", "tenure_months": 70, "csat": 5, "nps": 10, "sentiment_trend": 0.5, "churn_risk": 0.01}
    assert health_score(best)[0] == 100
    score, top = health_score({"contract": "One year", "complaints": 1}, top=10)
    assert score == round(BASE + sum(f.points for f in top))
    assert [f.factor for f in top] == ["contract", "complaints"] and top[1].value == "1"


def test_the_context_carries_the_score_band_and_top_three_factors_and_old_contexts_still_decode() -> None:
    old = b'{"customer_id":"c","created_at":1.0,"updated_at":2.0,"churn_risk":0.4}'  # stored before health existed
    ctx = decode_context(old)
    assert ctx.health is None and ctx.health_factors == []
    ctx = msgspec.structs.replace(ctx, csat_avg=1.0, csat_count=3, nps_last=3.0, nps_count=1,
                                  contacts=[ContactRecord(contact_id="k", channel="chat", opened_at=1.0, resolved=False)])
    scored = with_health(ctx)
    assert scored.health is not None and scored.health < 50 and scored.health_band in ("at_risk", "critical")
    assert [f.factor for f in scored.health_factors] == ["csat", "nps", "unresolved_contacts"]
    assert decode_context(encode_context(scored)) == scored
    assert with_health(scored) is scored  # nothing changed: the same record


def test_health_inputs_count_only_unresolved_contacts_of_the_last_30_days() -> None:
    day = 86400.0
    ctx = CustomerContext(customer_id="c", created_at=0, updated_at=40 * day, contacts=[
        ContactRecord(contact_id="old", channel="chat", opened_at=1 * day, resolved=False),
        ContactRecord(contact_id="new", channel="chat", opened_at=35 * day, resolved=False),
        ContactRecord(contact_id="ok", channel="chat", opened_at=36 * day, resolved=True)])
    assert health_inputs(ctx)["unresolved_contacts"] == 1


def _telco(path: Path, n: int = 400) -> list[dict[str, str]]:
    """A Telco-shaped table where short-tenure month-to-month e-check customers churn most."""
    rows = []
    for i in range(n):
        risky = i % 3 == 0
        churn = (i % 4 != 0) if risky else (i % 9 == 0)
        rows.append({"customerID": f"c{i}", "tenure": "2" if risky else str(30 + i % 40),
                     "Contract": "Month-to-month" if risky else ("Two year" if i % 2 else "One year"),
                     "PaymentMethod": "Electronic check" if risky else "Credit card (automatic)",
                     "MonthlyCharges": "70.0", "TotalCharges": "140.0", "InternetService": "DSL",
                     "Churn": "Yes" if churn else "No"})
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def test_eval_health_relates_the_score_to_churn_on_a_held_out_half(tmp_path: Path) -> None:
    rows = _telco(tmp_path / "t.csv")
    res = evaluate_health(rows)
    assert res["n_tune"] + res["n_test"] == len(rows) and res["auc_unhealth"] > 0.8
    rates = {b["band"]: b["churn_rate"] for b in res["bands"] if b["n"]}
    assert rates["healthy"] < min(v for k, v in rates.items() if k != "healthy")
    fitted = fit_points(rows)
    assert fitted["points"]["contract"]["two_year"] > 0 > fitted["points"]["tenure_months"]["0-6"]


def test_cxstream_eval_health_writes_its_json_and_refuses_a_wrong_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _telco(tmp_path / "t.csv")
    out = tmp_path / "h.json"
    assert cli(["eval", "health", "--data", str(tmp_path / "t.csv"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["task"] == "health"
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert cli(["eval", "health", "--data", str(tmp_path / "bad.csv"), "--json", str(out)]) == 2
    assert "not the Telco churn table" in capsys.readouterr().err
