"""Evaluation entry points: ``cxstream eval intent|churn|split`` (also ``python -m cxstream.intel.evaluate``).

The evaluation functions are pure (rows in, figures out); :func:`main` does the file I/O.
Datasets are read from their paths, never copied: defaults resolve under ``CX_SHARED_DATA_DIR``
(or ``../shared/data`` beside the repository).

>>> rows = [(f"text {i}", "ab"[i % 2]) for i in range(10)]
>>> train, test = stratified_split(rows, 0.2, seed=42)
>>> len(train), len(test), sorted(c for _, c in test)
(8, 2, ['a', 'b'])
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxstream.datasets import shared_data_dir
from cxstream.intel.churn import ChurnModel
from cxstream.intel.features import (
    FEATURE_INPUTS,
    churn_features,
    churn_reasons,
    telco_context,
    telco_features,
    telco_label,
)
from cxstream.intel.intent import IntentModel
from cxstream.intel.metrics import (
    ProgressiveAUC,
    exact_auc,
    expected_calibration_error,
    macro_f1,
    reliability,
)

Row = tuple[str, str]
TELCO_FILE = "telco_churn/WA_Fn-UseC_-Telco-Customer-Churn.csv"
BANKING77_FILE = "banking77/train.csv"


def data_dir() -> Path:
    """The shared datasets folder (:func:`cxstream.datasets.shared_data_dir`)."""
    return shared_data_dir()


def read_labelled_csv(path: str | os.PathLike[str], text_col: str = "text", label_col: str = "category") -> list[Row]:
    """Read ``text,category`` rows (any label set) from a CSV file with a header."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or text_col not in reader.fieldnames or label_col not in reader.fieldnames:
            raise ValueError(f"{path}: expected columns {text_col!r} and {label_col!r}, got {reader.fieldnames}")
        return [(r[text_col], r[label_col]) for r in reader]


def write_labelled_csv(path: str | os.PathLike[str], rows: Sequence[Row]) -> None:
    """Write ``text,category`` rows with a header."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        writer.writerows(rows)


def stratified_split(rows: Sequence[Row], test_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Per-label shuffle (``random.Random(seed)``, labels in sorted order) and take
    ``round(n * test_fraction)`` of each label for test; both parts keep file order."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, (_, label) in enumerate(rows):
        by_label[label].append(i)
    rng = random.Random(seed)
    test: set[int] = set()
    for label in sorted(by_label):
        idx = list(by_label[label])
        rng.shuffle(idx)
        test.update(idx[: round(len(idx) * test_fraction)])
    return [r for i, r in enumerate(rows) if i not in test], [r for i, r in enumerate(rows) if i in test]


def _percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples), q)) * 1e3, 4) if samples else 0.0


def evaluate_intent(
    train: Sequence[Row],
    test: Sequence[Row],
    seed: int = 42,
    model: IntentModel | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """One online pass over ``train`` (shuffled with ``seed``), then score ``test``.

    >>> tr = [("card not arrived", "card"), ("close my account", "close")] * 5
    >>> res = evaluate_intent(tr, [("my card has not arrived", "card")], seed=1)
    >>> res["accuracy"], res["n_train"], res["n_test"]
    (1.0, 10, 1)
    """
    model = model if model is not None else IntentModel()
    order = list(train)
    random.Random(seed).shuffle(order)
    t0 = clock()
    for text, label in order:
        model.learn_one(text, label)
    learn_s = clock() - t0
    top: list[str] = []
    answered: list[str] = []
    conf: list[float] = []
    raw: list[float] = []
    for text, _ in test:
        pred = model.predict_detail(text)
        top.append(pred.top_label)
        answered.append(pred.label)
        conf.append(pred.confidence)
        raw.append(pred.raw_probability)
    latencies: list[float] = []
    t_all = clock()
    for text, _ in test:
        t = clock()
        model.predict_one(text)
        latencies.append(clock() - t)
    predict_s = clock() - t_all
    truth = [label for _, label in test]
    correct = [p == t for p, t in zip(top, truth, strict=False)]
    n_ans = sum(1 for a in answered if a != "unknown")
    ans_correct = sum(1 for a, t in zip(answered, truth, strict=False) if a == t)
    n = len(test)
    return {
        "task": "intent",
        "accuracy": round(sum(correct) / n, 4) if n else 0.0,
        "macro_f1": macro_f1(truth, top),
        "n_train": len(order),
        "n_test": n,
        "n_labels": len(model.labels),
        "seed": seed,
        "unknown_threshold": model.unknown_threshold,
        "coverage": round(n_ans / n, 4) if n else 0.0,
        "accuracy_answered": round(ans_correct / n_ans, 4) if n_ans else 0.0,
        "ece_calibrated": expected_calibration_error(conf, correct),
        "ece_raw": expected_calibration_error(raw, correct),
        "reliability_calibrated": reliability(conf, correct),
        "learn_us_per_example": round(learn_s / max(1, len(order)) * 1e6, 2),
        "predict_p50_ms": _percentile_ms(latencies, 50),
        "predict_p99_ms": _percentile_ms(latencies, 99),
        "predict_per_s": round(n / predict_s, 1) if predict_s > 0 else 0.0,
        "encoder": model.encoder_name,
        "model_version": model.version,
        "snapshot_bytes": len(model.to_bytes()),
    }


def evaluate_churn(
    rows: Sequence[dict[str, str]], model: ChurnModel | None = None, threshold: float = 0.5
) -> dict[str, Any]:
    """Progressive (test-then-train) evaluation over Telco-style rows in file order."""
    model = model if model is not None else ChurnModel()
    probs: list[float] = []
    labels: list[bool] = []
    hist = ProgressiveAUC()
    n_drifts = 0
    t0 = time.perf_counter()
    for row in rows:
        feats = telco_features(row)
        y = telco_label(row)
        p = model.predict_proba_one(feats)
        probs.append(p)
        labels.append(y)
        hist.update(y, p)
        model.learn_one(feats, y)
        n_drifts += int(model.drift_detected)
    elapsed = time.perf_counter() - t0
    p_arr = np.clip(np.asarray(probs), 1e-15, 1 - 1e-15)
    y_arr = np.asarray(labels, dtype=bool)
    log_loss = float(-np.mean(np.where(y_arr, np.log(p_arr), np.log(1 - p_arr)))) if probs else 0.0
    n = len(probs)
    tail = n // 2
    return {
        "task": "churn",
        "auc": round(exact_auc(labels, probs), 4),
        "auc_histogram": round(hist.get(), 4),
        "auc_second_half": round(exact_auc(labels[tail:], probs[tail:]), 4),
        "log_loss": round(log_loss, 4),
        "accuracy": round(float(np.mean((p_arr >= threshold) == y_arr)), 4) if n else 0.0,
        "n": n,
        "churn_rate": round(float(y_arr.mean()), 4) if n else 0.0,
        "n_drifts": n_drifts,
        "us_per_example": round(elapsed / max(1, n) * 1e6, 2),
        "n_features": len(model.names),
        "model_version": model.version,
        "explanations": explain_churn(rows[tail:], model, threshold),
    }


def explain_churn(rows: Sequence[dict[str, str]], model: ChurnModel, threshold: float = 0.5) -> dict[str, Any]:
    """What the trained model's reasons say on *rows*, and what they cost.

    * ``predict_us`` / ``explain_us``: :meth:`ChurnModel.predict_proba_one` against
      :meth:`ChurnModel.explain_one` plus :func:`churn_reasons` (what the engine runs), per row;
    * ``top_reason``: how often each context key is the first reason of a predicted churner;
    * ``deletion``: for predicted churners, the mean risk with the first reason's inputs taken out
      of the context, against taking out one other input the customer has (chosen at random, seed 0).
      Reasons that explain the score lower it more.
    """
    contexts = [telco_context(r) for r in rows]
    feats = [churn_features(c) for c in contexts]
    t0 = time.perf_counter()
    for f in feats:
        model.predict_proba_one(f)
    predict_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    explained = []
    for c, f in zip(contexts, feats, strict=True):
        p, shares = model.explain_one(f)
        explained.append((p, churn_reasons(shares, c)))
    explain_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    top: dict[str, int] = {}
    base: list[float] = []
    without_top: list[float] = []
    without_other: list[float] = []
    for c, (p, reasons) in zip(contexts, explained, strict=True):
        if p < threshold or not reasons:
            continue
        first = reasons[0][0]
        top[first] = top.get(first, 0) + 1
        others = sorted({k for f in churn_features(c) for k in FEATURE_INPUTS.get(f.split("=", 1)[0], ())} - {first})
        if not others:
            continue
        other = others[int(rng.integers(len(others)))]
        base.append(p)
        without_top.append(model.predict_proba_one(churn_features({k: v for k, v in c.items() if k != first})))
        without_other.append(model.predict_proba_one(churn_features({k: v for k, v in c.items() if k != other})))
    n = max(1, len(rows))
    return {
        "n": len(rows),
        "predict_us": round(predict_s / n * 1e6, 2),
        "explain_us": round(explain_s / n * 1e6, 2),
        "explain_cost_ratio": round(explain_s / predict_s, 3) if predict_s > 0 else None,
        "reasons_per_row": round(sum(len(r) for _, r in explained) / n, 3),
        "top_reason": dict(sorted(top.items(), key=lambda kv: -kv[1])),
        "deletion": {
            "n": len(base),
            "risk": round(float(np.mean(base)), 4) if base else None,
            "without_first_reason": round(float(np.mean(without_top)), 4) if base else None,
            "without_other_input": round(float(np.mean(without_other)), 4) if base else None,
        },
    }


def _read_dict_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def emit(result: dict[str, Any], out: str | None, *, ensure_ascii: bool = True) -> None:
    """Print an evaluation's JSON, and write it to *out* (its folder made) when given: every ``cxstream eval``."""
    text = json.dumps(result, indent=2, sort_keys=True, ensure_ascii=ensure_ascii)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n", encoding="utf-8")
    print(text)


def _make_encoder(name: str | None) -> tuple[Any, str | None]:
    if not name or name == "none":
        return None, None
    from cxstream.intel.encoder import load_encoder

    return load_encoder(name), name


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for ``eval intent|churn|split``."""
    parser = argparse.ArgumentParser(prog="cxstream eval", description="Evaluate the online models.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_int = sub.add_parser("intent", help="one online pass over --train, then score --test")
    p_int.add_argument("--train", required=True, help="CSV with columns text,category")
    p_int.add_argument("--test", required=True, help="CSV with columns text,category")
    p_int.add_argument("--json", dest="out", help="write the result JSON here")
    p_int.add_argument("--seed", type=int, default=42, help="shuffle seed for the training order")
    p_int.add_argument("--encoder", default="none", help="optional sentence encoder: none | wordllama | use | minilm")
    p_int.add_argument("--unknown-threshold", type=float, default=0.5)
    p_ch = sub.add_parser("churn", help="progressive test-then-train over the Telco churn table")
    p_ch.add_argument("--data", default=None, help=f"CSV (default $CX_SHARED_DATA_DIR/{TELCO_FILE})")
    p_ch.add_argument("--json", dest="out", help="write the result JSON here")
    p_sp = sub.add_parser("split", help="write a stratified train/test split of a text,category CSV")
    p_sp.add_argument("--data", default=None, help=f"CSV (default $CX_SHARED_DATA_DIR/{BANKING77_FILE})")
    p_sp.add_argument("--test-fraction", type=float, default=0.2)
    p_sp.add_argument("--seed", type=int, default=42)
    p_sp.add_argument("--out", required=True, help="output directory (train.csv, test.csv)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns a process exit code."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        if args.command == "intent":
            encoder, name = _make_encoder(args.encoder)
            extra: dict[str, Any] = {}
            if name:
                from cxstream.intel.encoder import ENCODER_PARAMS

                extra = dict(ENCODER_PARAMS.get(name, {}))
            model = IntentModel(encoder=encoder, encoder_name=name, unknown_threshold=args.unknown_threshold, **extra)
            result = evaluate_intent(read_labelled_csv(args.train), read_labelled_csv(args.test), args.seed, model)
            result["train_file"] = str(args.train)
            result["test_file"] = str(args.test)
            emit(result, args.out)
        elif args.command == "churn":
            path = args.data or str(data_dir() / TELCO_FILE)
            result = evaluate_churn(_read_dict_rows(path))
            result["data_file"] = str(path)
            emit(result, args.out)
        else:
            path = args.data or str(data_dir() / BANKING77_FILE)
            train, test = stratified_split(read_labelled_csv(path), args.test_fraction, args.seed)
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            write_labelled_csv(out / "train.csv", train)
            write_labelled_csv(out / "test.csv", test)
            emit(
                {
                    "train": str(out / "train.csv"),
                    "test": str(out / "test.csv"),
                    "n_train": len(train),
                    "n_test": len(test),
                    "seed": args.seed,
                    "test_fraction": args.test_fraction,
                    "source": str(path),
                },
                None,
            )
    except (OSError, ValueError) as exc:
        print(f"cxstream eval: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
