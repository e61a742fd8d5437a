"""Online confidence calibration by histogram binning + isotonic smoothing.

The model observes its own *progressive* predictions (test-then-train: predict, then
learn the true label).  For each prediction it bins the raw top-class probability and
records whether it was right.  Counts decay geometrically (``decay`` per update) so the
map follows the model as it improves.  The calibrated confidence of a raw probability is
the isotonic (pool-adjacent-violators) fit of per-bin accuracies, shrunk towards the raw
value with a pseudo-count ``prior`` so empty bins fall back to the raw probability.

>>> cal = OnlineCalibrator(n_bins=10)
>>> for _ in range(200):
...     cal.update(0.95, False)  # an over-confident model
>>> cal.calibrate(0.95) < 0.2
True
>>> OnlineCalibrator().calibrate(0.42)
0.42
"""

from __future__ import annotations

import numpy as np


def pav(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted isotonic (non-decreasing) regression by pool-adjacent-violators.

    >>> pav(np.array([0.1, 0.5, 0.3, 0.9]), np.ones(4)).round(2).tolist()
    [0.1, 0.4, 0.4, 0.9]
    """
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, w in zip(values.tolist(), weights.tolist(), strict=False):
        blocks.append([v, w, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            wt = w1 + w2
            blocks.append([(m1 * w1 + m2 * w2) / wt if wt > 0 else (m1 + m2) / 2, wt, c1 + c2])
    out: list[float] = []
    for m, _, c in blocks:
        out.extend([m] * int(c))
    return np.asarray(out, dtype=np.float64)


class OnlineCalibrator:
    """Maps a raw top-class probability to an estimate of P(prediction is correct)."""

    def __init__(self, n_bins: int = 15, decay: float = 0.999, prior: float = 4.0) -> None:
        self.n_bins = n_bins
        self.decay = decay
        self.prior = prior
        self.hits = np.zeros(n_bins, dtype=np.float64)
        self.totals = np.zeros(n_bins, dtype=np.float64)
        self._fitted: list[float] | None = None  # the fitted map at the bins' mid-points

    def _bin(self, p: float) -> int:
        return min(self.n_bins - 1, max(0, int(p * self.n_bins)))

    def update(self, raw: float, correct: bool) -> None:
        """Record one progressive prediction with raw confidence ``raw``."""
        self.hits *= self.decay
        self.totals *= self.decay
        b = self._bin(raw)
        self.totals[b] += 1.0
        self.hits[b] += 1.0 if correct else 0.0
        self._fitted = None

    def _fit(self) -> np.ndarray:
        mids = (np.arange(self.n_bins) + 0.5) / self.n_bins
        acc = (self.hits + self.prior * mids) / (self.totals + self.prior)
        return pav(acc, self.totals + self.prior)

    def calibrate(self, raw: float) -> float:
        """Calibrated confidence for ``raw`` (the raw value until anything was observed).

        Linear interpolation between the bins' mid-points (``np.interp``, held flat beyond
        the first and last), in plain Python: this runs once per scored message."""
        fitted = self._fitted
        if fitted is None:
            if not self.totals.any():
                return float(raw)
            fitted = self._fitted = [float(v) for v in self._fit()]
        x = float(raw) * self.n_bins - 0.5  # position in units of bins, 0 = first mid-point
        if x <= 0.0:
            y = fitted[0]
        elif x >= self.n_bins - 1:
            y = fitted[-1]
        else:
            i = int(x)
            y = fitted[i] + (fitted[i + 1] - fitted[i]) * (x - i)
        return min(1.0, max(0.0, y))

    def state(self) -> dict[str, np.ndarray]:
        """Arrays for a snapshot."""
        return {"cal_hits": self.hits.copy(), "cal_totals": self.totals.copy()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`state` arrays."""
        self.hits = np.asarray(arrays["cal_hits"], dtype=np.float64).copy()
        self.totals = np.asarray(arrays["cal_totals"], dtype=np.float64).copy()
        self._fitted = None
