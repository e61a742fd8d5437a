"""``cxstream eval health``: how the customer health score relates to churn on the IBM Telco table.

The table is split in two halves (seeded, stratified by churn): the *tuning* half is where the
account factors' points of :mod:`cxstream.intel.health` come from (a logistic regression of churn
on their levels, refitted here and shown beside the shipped points); the *test* half, which the
points never saw, measures:

* ``auc_unhealth``: AUC of ``100 - health`` for churn (0.5 = no relation);
* ``bands``: customers and churn rate per health band, and per decile of the score;
* against the churn model (:class:`cxstream.intel.churn.ChurnModel`, one online pass over the tuning
  half, then scoring the test half): both AUCs, their rank correlation, and the health score with the
  model's risk as a factor (as the engine computes it once the model has learned).

Telco has account facts only: the experience factors (CSAT, NPS, sentiment, contacts) are absent
from every row, so this measures the account part of the score and the churn-risk factor.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxstream.datasets import shared_data_dir
from cxstream.intel.churn import ChurnModel
from cxstream.intel.evaluate import emit
from cxstream.intel.features import churn_features, telco_context, telco_label
from cxstream.intel.health import (
    ACCOUNT_POINTS,
    BANDS,
    BASE,
    HEALTH_VERSION,
    POINTS_PER_LOGIT,
    account_levels,
    band,
    health_score,
)
from cxstream.intel.metrics import exact_auc

TELCO_FILE = "telco_churn/WA_Fn-UseC_-Telco-Customer-Churn.csv"
#: The reference level of each account factor (0 points): the intercept is the log-odds there.
REFERENCE = {"tenure_months": "12-24", "contract": "month_to_month", "payment_method": "mailed_check"}


def split_halves(rows: Sequence[dict[str, str]], seed: int = 22) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Tuning and test halves, stratified by churn (``random.Random(seed)``), each in file order.

    >>> rows = [{"Churn": "Yes" if i % 4 == 0 else "No", "i": str(i)} for i in range(8)]
    >>> tune, test = split_halves(rows)
    >>> len(tune), len(test), sum(r["Churn"] == "Yes" for r in test)
    (4, 4, 1)
    """
    rng = random.Random(seed)
    test: set[int] = set()
    for label in (True, False):
        idx = [i for i, r in enumerate(rows) if telco_label(r) is label]
        rng.shuffle(idx)
        test.update(idx[: len(idx) // 2])
    return [r for i, r in enumerate(rows) if i not in test], [r for i, r in enumerate(rows) if i in test]


def _design(rows: Sequence[dict[str, str]]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    columns = [(f, lvl) for f, levels in ACCOUNT_POINTS.items() for lvl in levels if lvl != REFERENCE[f]]
    x = np.zeros((len(rows), len(columns) + 1))
    x[:, 0] = 1.0
    where = {c: j + 1 for j, c in enumerate(columns)}
    for i, r in enumerate(rows):
        for f, (lvl, _) in account_levels(telco_context(r)).items():
            j = where.get((f, lvl))
            if j is not None:
                x[i, j] = 1.0
    return x, columns


def fit_points(rows: Sequence[dict[str, str]], l2: float = 1.0, iterations: int = 25) -> dict[str, Any]:
    """Logistic regression of *staying* on the account levels (Newton's method, L2 on the levels),
    as points: ``round(10 x coefficient)``; ``base`` = ``50 + 10 x intercept``."""
    x, columns = _design(rows)
    y = np.array([0.0 if telco_label(r) else 1.0 for r in rows])  # 1 = stayed
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (y - p) - penalty * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        w = w + np.linalg.solve(hess, grad)
    points: dict[str, dict[str, float]] = {f: {REFERENCE[f]: 0.0} for f in ACCOUNT_POINTS}
    for (f, lvl), coef in zip(columns, w[1:], strict=True):
        points[f][lvl] = float(round(POINTS_PER_LOGIT * coef))
    return {"base": round(50.0 + POINTS_PER_LOGIT * float(w[0]), 1), "points": points, "n": len(rows)}


def _bands(scores: Sequence[float], labels: Sequence[bool]) -> list[dict[str, Any]]:
    out = []
    for lower, name in BANDS:
        picked = [y for s, y in zip(scores, labels, strict=True) if band(s) == name]
        out.append({"band": name, "from": lower, "n": len(picked),
                    "churn_rate": round(sum(picked) / len(picked), 4) if picked else None})
    return out


def _deciles(scores: Sequence[float], labels: Sequence[bool]) -> list[dict[str, Any]]:
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    out = []
    for d in range(10):
        part = order[d * len(order) // 10 : (d + 1) * len(order) // 10]
        if part:
            out.append({"decile": d + 1, "health_min": scores[part[0]], "health_max": scores[part[-1]],
                        "churn_rate": round(sum(labels[i] for i in part) / len(part), 4)})
    return out


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    def ranks(v: Sequence[float]) -> np.ndarray:
        arr = np.asarray(v, dtype=float)
        order = arr.argsort(kind="mergesort")
        r = np.empty(len(arr))
        r[order] = np.arange(len(arr))
        # average ranks of ties
        _, inv, counts = np.unique(arr, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return np.asarray(sums[inv] / counts[inv])

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def evaluate_health(rows: Sequence[dict[str, str]], seed: int = 22) -> dict[str, Any]:
    """The figures above (see the module doc) for Telco-style *rows*."""
    tune, test = split_halves(rows, seed)
    fitted = fit_points(tune)
    labels = [telco_label(r) for r in test]
    contexts = [telco_context(r) for r in test]
    t0 = time.perf_counter()
    scored = [health_score(c) for c in contexts]
    health_s = time.perf_counter() - t0
    scores = [float(s) for s, _ in scored]
    model = ChurnModel()
    for r in tune:
        model.learn_one(churn_features(telco_context(r)), telco_label(r))
    risks = [model.predict_proba_one(churn_features(c)) for c in contexts]
    with_risk = [float(health_score({**c, "churn_risk": p})[0]) for c, p in zip(contexts, risks, strict=True)]
    top: dict[str, int] = {}
    for s, factors in scored:
        if s < 50 and factors:
            top[factors[0].factor] = top.get(factors[0].factor, 0) + 1
    n = len(test)
    return {
        "task": "health",
        "health_version": HEALTH_VERSION,
        "seed": seed,
        "n_tune": len(tune),
        "n_test": n,
        "churn_rate_test": round(sum(labels) / n, 4) if n else None,
        "auc_unhealth": round(exact_auc(labels, [100.0 - s for s in scores]), 4),
        "auc_unhealth_with_churn_risk": round(exact_auc(labels, [100.0 - s for s in with_risk]), 4),
        "auc_churn_model": round(exact_auc(labels, risks), 4),
        "spearman_health_vs_churn_risk": round(_spearman(scores, [-p for p in risks]), 4),
        "health_mean": round(float(np.mean(scores)), 2) if scores else None,
        "bands": _bands(scores, labels),
        "bands_with_churn_risk": _bands(with_risk, labels),
        "deciles": _deciles(scores, labels),
        "top_factor_below_50": dict(sorted(top.items(), key=lambda kv: -kv[1])),
        "us_per_score": round(health_s / max(1, n) * 1e6, 2),
        "shipped": {"base": BASE, "points": ACCOUNT_POINTS},
        "refitted_on_tuning_half": fitted,
        "weights_note": "account points = round(10 x logistic-regression coefficient) fitted on the tuning half; "
        "experience factors set by convention (absent from Telco); see docs/INTEL.md 'Customer health'",
    }


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    """``cxstream eval health [--data CSV] [--json OUT] [--seed N]``."""
    parser = argparse.ArgumentParser(prog="cxstream eval health", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help=f"Telco CSV (default $CX_SHARED_DATA_DIR/{TELCO_FILE})")
    parser.add_argument("--json", dest="out", default="bench/results/intel-health.json", help="write the result JSON here")
    parser.add_argument("--seed", type=int, default=22, help="seed of the tuning/test split")
    args = parser.parse_args(list(argv) if argv is not None else None)
    path = Path(args.data) if args.data else shared_data_dir() / TELCO_FILE
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "Churn" not in rows[0]:
            raise ValueError(f"{path}: not the Telco churn table (no 'Churn' column)")
    except (OSError, ValueError) as exc:
        print(f"cxstream eval health: error: {exc}", file=sys.stderr)
        return 2
    result = _finite(evaluate_health(rows, args.seed))
    result["data_file"] = str(path)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
