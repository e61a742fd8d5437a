"""Drift detection on a model's rolling error with ADWIN (``river.drift.ADWIN``).

>>> mon = ErrorDriftMonitor(seed=1)
>>> any(mon.update(0.0) for _ in range(500))
False
>>> any(mon.update(1.0) for _ in range(500))
True
>>> mon.n_detections >= 1
True
"""

from __future__ import annotations

from river import drift


class ErrorDriftMonitor:
    """Feed 0/1 errors (or losses in [0, 1]); ``update`` returns True when ADWIN detects drift.

    The detector is runtime state only: it is not part of a model snapshot, and a restored
    model starts with a fresh window (documented in docs/INTEL.md).
    """

    def __init__(self, delta: float = 0.002, clock: int = 32, seed: int | None = None) -> None:
        self.delta = delta
        self.clock = clock
        self.seed = seed
        self._adwin = drift.ADWIN(delta=delta, clock=clock)
        self.n_detections = 0
        self.detected = False
        self.n_seen = 0

    def update(self, error: float) -> bool:
        """Add one error value; return True if a drift is detected at this step."""
        self._adwin.update(float(error))
        self.n_seen += 1
        self.detected = bool(self._adwin.drift_detected)
        if self.detected:
            self.n_detections += 1
        return self.detected

    @property
    def error_rate(self) -> float:
        """ADWIN's current estimate of the mean error over its window."""
        return float(self._adwin.estimation)

    def clone(self) -> ErrorDriftMonitor:
        """A fresh monitor with the same parameters."""
        return ErrorDriftMonitor(self.delta, self.clock, self.seed)
