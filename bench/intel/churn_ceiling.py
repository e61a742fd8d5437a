"""How high can churn AUC go on the Telco table? Batch references, measured.

The issue's target is a *progressive* (test-then-train) AUC of 0.85.  This script measures
what strong batch learners reach on the same table, two ways:

* ``cv``: stratified 5-fold cross-validation, repeated with 3 seeds (each model trains on
  5,634 rows and is scored on the 1,409 it did not see): logistic regression over one-hot
  categories and standardised numbers (plus log tenure, log total and fine tenure bands),
  LightGBM, and a rank blend of the two;
* ``prequential``: the stream in file order, as ``cxstream eval churn`` reads it, with each
  batch model refitted on *every row seen so far* every ``--refit-every`` rows and scoring the
  next ones (0.5 before the first fit); its blend averages the two probabilities.  This is the batch learners' best case for the
  figure the target is about; it is what an online model that matched batch fits would get.

It does not import the engine: it needs scikit-learn, LightGBM and pandas, which the engine
does not depend on, so it runs in a venv of its own::

    python3 -m venv /tmp/ceiling && /tmp/ceiling/bin/pip install scikit-learn lightgbm pandas
    /tmp/ceiling/bin/python bench/intel/churn_ceiling.py --json bench/results/intel-churn-ceiling.json

When ``bench/results/intel-churn.json`` exists, its progressive AUC (the engine's model)
is copied into the output beside the references.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from cxstream.datasets import shared_data_dir  # noqa: E402  (stdlib-only module)

# the file cxstream.intel.evaluate.TELCO_FILE names (that module imports River, which this venv lacks)
TELCO_FILE = "telco_churn/WA_Fn-UseC_-Telco-Customer-Churn.csv"
TENURE_BANDS = [-1, 0, 1, 2, 5, 11, 23, 35, 47, 59, 100]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--data", default=None, help="Telco CSV (default: the shared data folder's copy)")
    ap.add_argument("--json", required=True)
    ap.add_argument("--refit-every", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import lightgbm as lgb
    import pandas as pd
    from scipy.stats import rankdata
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    path = Path(args.data) if args.data else shared_data_dir() / TELCO_FILE
    df = pd.read_csv(path)
    df["TotalCharges"] = pd.to_numeric(df["TotalCharges"].astype(str).str.strip().replace("", np.nan)).fillna(0.0)
    y = (df["Churn"] == "Yes").astype(int).to_numpy()
    X = df.drop(columns=["customerID", "Churn"])
    cats = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    nums = ["tenure", "MonthlyCharges", "TotalCharges", "SeniorCitizen"]
    Xl = X.copy()
    Xl["log_tenure"] = np.log1p(Xl["tenure"])
    Xl["log_total"] = np.log1p(Xl["TotalCharges"])
    Xl["tenure_band"] = pd.cut(Xl["tenure"], TENURE_BANDS).astype(str)
    Xg = X.copy()
    for c in cats:
        Xg[c] = Xg[c].astype("category")

    def fit_lr(rows: np.ndarray) -> Any:
        pre = ColumnTransformer(
            [
                ("c", OneHotEncoder(handle_unknown="ignore"), [*cats, "tenure_band"]),
                ("n", StandardScaler(), [*nums, "log_tenure", "log_total"]),
            ]
        )
        return make_pipeline(pre, LogisticRegression(C=0.1, max_iter=2000)).fit(Xl.iloc[rows], y[rows])

    def fit_gbm(rows: np.ndarray) -> Any:
        return lgb.LGBMClassifier(
            num_leaves=4,
            n_estimators=300,
            learning_rate=0.02,
            min_child_samples=min(40, max(5, len(rows) // 20)),
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            verbose=-1,
        ).fit(Xg.iloc[rows], y[rows])

    def scores(rows: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lr = fit_lr(rows).predict_proba(Xl.iloc[test])[:, 1]
        gbm = fit_gbm(rows).predict_proba(Xg.iloc[test])[:, 1]
        return lr, gbm

    t0 = time.perf_counter()
    cv: dict[str, list[float]] = {"logistic_regression": [], "lightgbm": [], "blend": []}
    for rep in range(args.repeats):
        oof_lr, oof_gbm = np.zeros(len(y)), np.zeros(len(y))
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=rep).split(X, y):
            oof_lr[te], oof_gbm[te] = scores(tr, te)
        cv["logistic_regression"].append(roc_auc_score(y, oof_lr))
        cv["lightgbm"].append(roc_auc_score(y, oof_gbm))
        cv["blend"].append(roc_auc_score(y, rankdata(oof_lr) + rankdata(oof_gbm)))
    k = args.refit_every
    p_lr, p_gbm = np.full(len(y), 0.5), np.full(len(y), 0.5)
    for start in range(k, len(y), k):
        seen, nxt = np.arange(start), np.arange(start, min(start + k, len(y)))
        p_lr[nxt], p_gbm[nxt] = scores(seen, nxt)
    result: dict[str, Any] = {
        "task": "churn_ceiling",
        "data": str(path),
        "rows": len(y),
        "cv_pooled_auc": {name: round(float(np.mean(v)), 4) for name, v in cv.items()},
        "cv_repeats": args.repeats,
        "prequential_refit_every": k,
        "prequential_auc": {
            "logistic_regression": round(float(roc_auc_score(y, p_lr)), 4),
            "lightgbm": round(float(roc_auc_score(y, p_gbm)), 4),
            "blend": round(float(roc_auc_score(y, (p_lr + p_gbm) / 2)), 4),
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    ours = ROOT / "bench" / "results" / "intel-churn.json"
    if ours.exists():
        result["engine_progressive_auc"] = json.loads(ours.read_text()).get("auc")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
