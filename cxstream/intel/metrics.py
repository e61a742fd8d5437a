"""Progressive (test-then-train) metrics with bounded memory, plus calibration metrics.

The learner agent calls ``update(y_true, y_pred_or_proba)`` *before* learning each label
and exports the returned numbers (metric declaration lives in ``cxstream.streams``).

>>> acc = ProgressiveAccuracy()
>>> acc.update("a", "a"); acc.update("b", "a")
>>> acc.get()
0.5
>>> auc = ProgressiveAUC()
>>> for p, y in [(0.9, True), (0.8, True), (0.3, False), (0.85, False)]:
...     auc.update(y, p)
>>> round(auc.get(), 3)
0.75
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class ProgressiveAccuracy:
    """Running accuracy."""

    def __init__(self) -> None:
        self.n = 0
        self.correct = 0

    def update(self, y_true: object, y_pred: object) -> None:
        """Count one prediction."""
        self.n += 1
        self.correct += int(y_true == y_pred)

    def get(self) -> float:
        """Accuracy so far (0.0 before any update)."""
        return self.correct / self.n if self.n else 0.0


class ProgressiveLogLoss:
    """Running binary log loss, probabilities clipped to [eps, 1 - eps].

    >>> ll = ProgressiveLogLoss(); ll.update(True, 0.5); round(ll.get(), 4)
    0.6931
    """

    def __init__(self, eps: float = 1e-15) -> None:
        self.eps = eps
        self.n = 0
        self.total = 0.0

    def update(self, y_true: bool, p_true: float) -> None:
        """Add one probability of the positive class."""
        p = min(1.0 - self.eps, max(self.eps, float(p_true)))
        self.total += -math.log(p if y_true else 1.0 - p)
        self.n += 1

    def get(self) -> float:
        """Mean log loss so far."""
        return self.total / self.n if self.n else 0.0


class ProgressiveAUC:
    """ROC AUC from two score histograms (``n_bins`` over [0, 1]; ties within a bin count half).

    Memory is O(n_bins) whatever the stream length; with 1,000 bins the error against the
    exact AUC is below 1e-3 on smooth score distributions.
    """

    def __init__(self, n_bins: int = 1000) -> None:
        self.n_bins = n_bins
        self.pos = np.zeros(n_bins, dtype=np.int64)
        self.neg = np.zeros(n_bins, dtype=np.int64)

    def update(self, y_true: bool, p_true: float) -> None:
        """Add one scored example."""
        b = min(self.n_bins - 1, max(0, int(float(p_true) * self.n_bins)))
        if y_true:
            self.pos[b] += 1
        else:
            self.neg[b] += 1

    def get(self) -> float:
        """AUC so far (0.5 until both classes were seen)."""
        n_pos, n_neg = int(self.pos.sum()), int(self.neg.sum())
        if not n_pos or not n_neg:
            return 0.5
        neg_below = np.cumsum(self.neg) - self.neg
        wins = float((self.pos * neg_below).sum()) + 0.5 * float((self.pos * self.neg).sum())
        return wins / (n_pos * n_neg)


def exact_auc(y_true: Sequence[bool], scores: Sequence[float]) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties).

    >>> exact_auc([True, False, True, False], [0.9, 0.1, 0.4, 0.4])
    0.875
    """
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if not n_pos or not n_neg:
        return 0.5
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Macro-averaged F1 over the labels present in ``y_true`` (predictions like ``unknown``
    count as wrong).

    >>> macro_f1(["a", "a", "b"], ["a", "b", "b"])
    0.6667
    """
    labels = sorted(set(y_true))
    scores = []
    for label in labels:
        tp = sum(1 for t, p in zip(y_true, y_pred, strict=False) if t == label and p == label)
        fp = sum(1 for t, p in zip(y_true, y_pred, strict=False) if t != label and p == label)
        fn = sum(1 for t, p in zip(y_true, y_pred, strict=False) if t == label and p != label)
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return round(float(np.mean(scores)), 4) if scores else 0.0


def reliability(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> list[dict[str, float]]:
    """Reliability table: per confidence bin, count, mean confidence and accuracy.

    >>> reliability([0.95, 0.95, 0.15], [True, False, False], n_bins=2)[1]
    {'lo': 0.5, 'hi': 1.0, 'count': 2, 'confidence': 0.95, 'accuracy': 0.5}
    """
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = bins == b
        n = int(sel.sum())
        rows.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "count": n,
                "confidence": round(float(conf[sel].mean()), 4) if n else 0.0,
                "accuracy": round(float(ok[sel].mean()), 4) if n else 0.0,
            }
        )
    return rows


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """ECE: count-weighted mean |accuracy - confidence| over equal-width bins.

    >>> expected_calibration_error([0.9, 0.9, 0.9, 0.9], [True, True, True, False])
    0.15
    """
    table = reliability(confidences, correct, n_bins)
    total = sum(r["count"] for r in table)
    if not total:
        return 0.0
    ece = sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in table) / total
    return round(float(ece), 4)
