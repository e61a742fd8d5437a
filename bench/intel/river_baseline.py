"""Reference: River's one-pass BagOfWords -> MultinomialNB on the same split and order.

Also writes ``ratio_vs_river`` figures into ``bench/results/intel-intent.json`` when it
exists (accuracy and throughput relative to this baseline, measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from river import compose, feature_extraction, naive_bayes

from cxstream.intel.evaluate import read_labelled_csv


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    train, test = read_labelled_csv(args.train), read_labelled_csv(args.test)
    random.Random(args.seed).shuffle(train)
    model: Any = compose.Pipeline(feature_extraction.BagOfWords(lowercase=True), naive_bayes.MultinomialNB(alpha=0.1))
    t0 = time.perf_counter()
    for text, label in train:
        model.learn_one(text, label)
    learn = time.perf_counter() - t0
    lat = []
    correct = 0
    t1 = time.perf_counter()
    for text, label in test:
        t = time.perf_counter()
        pred = model.predict_one(text)
        lat.append(time.perf_counter() - t)
        correct += pred == label
    total = time.perf_counter() - t1
    res = {
        "task": "intent-baseline-river-mnb",
        "accuracy": round(correct / len(test), 4),
        "n_train": len(train),
        "n_test": len(test),
        "learn_us_per_example": round(learn / len(train) * 1e6, 2),
        "predict_p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 4),
        "predict_per_s": round(len(test) / total, 1),
    }
    Path(args.json).write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    ours = Path(args.json).with_name("intel-intent.json")
    if ours.exists():
        r = json.loads(ours.read_text())
        r["ratio_vs_river"] = {
            "accuracy": round(r["accuracy"] / res["accuracy"], 4),
            "predict_per_s": round(r["predict_per_s"] / res["predict_per_s"], 3),
            "river_mnb_accuracy": res["accuracy"],
        }
        ours.write_text(json.dumps(r, indent=2, sort_keys=True) + "\n")
    print(json.dumps(res, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
