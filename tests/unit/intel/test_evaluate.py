"""The eval CLI on tiny CSVs written by the test."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from cxstream.intel.evaluate import main, read_labelled_csv, stratified_split


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "category"])
        w.writerows(rows)


def test_split_then_intent(tmp_path: Path, make_intent_rows: Any, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "all.csv"
    _write(src, make_intent_rows(200, seed=7))
    out = tmp_path / "split"
    assert main(["split", "--data", str(src), "--test-fraction", "0.25", "--seed", "3", "--out", str(out)]) == 0
    train, test = read_labelled_csv(out / "train.csv"), read_labelled_csv(out / "test.csv")
    assert len(train) + len(test) == 200
    assert not set(map(tuple, train)) >= set(map(tuple, test)) or len(test) > 0
    assert {c for _, c in test} == {c for _, c in train}
    capsys.readouterr()
    res_path = tmp_path / "res" / "intent.json"
    code = main(
        [
            "intent",
            "--train",
            str(out / "train.csv"),
            "--test",
            str(out / "test.csv"),
            "--json",
            str(res_path),
            "--seed",
            "1",
        ]
    )
    assert code == 0
    res = json.loads(res_path.read_text())
    assert json.loads(capsys.readouterr().out) == res
    for key in (
        "accuracy",
        "macro_f1",
        "n_train",
        "n_test",
        "learn_us_per_example",
        "predict_p99_ms",
        "predict_per_s",
        "ece_calibrated",
    ):
        assert key in res
    assert res["n_train"] == len(train) and res["n_test"] == len(test)
    assert res["accuracy"] >= 0.9


def test_stratified_split_is_stratified_and_seeded(make_intent_rows: Any) -> None:
    rows = make_intent_rows(400, seed=2)
    tr1, te1 = stratified_split(rows, 0.2, seed=42)
    tr2, te2 = stratified_split(rows, 0.2, seed=42)
    _, te3 = stratified_split(rows, 0.2, seed=43)
    assert te1 == te2 and tr1 == tr2 and te1 != te3
    for label in {c for _, c in rows}:
        n_all = sum(1 for _, c in rows if c == label)
        n_test = sum(1 for _, c in te1 if c == label)
        assert n_test == round(n_all * 0.2)


def test_churn_cli(tmp_path: Path) -> None:
    path = tmp_path / "telco.csv"
    cols = [
        "customerID",
        "tenure",
        "Contract",
        "MonthlyCharges",
        "TotalCharges",
        "InternetService",
        "PaymentMethod",
        "PaperlessBilling",
        "SeniorCitizen",
        "Churn",
    ]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for i in range(400):
            short = i % 3 == 0
            w.writerow(
                [
                    f"c{i}",
                    2 if short else 40,
                    "Month-to-month" if short else "Two year",
                    80,
                    160,
                    "Fiber optic",
                    "Electronic check",
                    "Yes",
                    "0",
                    "Yes" if short and i % 2 else "No",
                ]
            )
    out = tmp_path / "churn.json"
    assert main(["churn", "--data", str(path), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 400 and res["auc"] > 0.8
    assert {"auc", "log_loss", "accuracy"} <= set(res)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    assert main(["churn", "--data", str(tmp_path / "absent.csv")]) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["intent", "--train", str(bad), "--test", str(bad)]) == 2
