"""Online churn-risk classifier (River-style ``learn_one`` / ``predict_proba_one``).

A logistic regression learnt one example at a time with AdaGrad and L2, over the
features of :func:`cxstream.intel.features.churn_features`: numbers are used as given
(the feature map puts them on fixed scales), strings are one-hot encoded as
``name=value`` and all pairs of one-hot features can optionally be crossed
(``interactions``) so the linear model sees e.g. contract x tenure band x internet type.
Feature columns grow as new names appear; the state is plain arrays plus the list of
feature names, so snapshots need no pickle (River's own estimators only serialise
through pickle, which the engine refuses to load).

>>> m = ChurnModel()
>>> m.predict_proba_one({"contract": "month_to_month"})
0.5
>>> for _ in range(200):
...     m.learn_one({"contract": "month_to_month", "complaints_log": 1.0}, True)
...     m.learn_one({"contract": "two_year"}, False)
>>> m.predict_proba_one({"contract": "month_to_month", "complaints_log": 1.0}) > 0.8
True
>>> m.predict_proba_one({"contract": "two_year"}) < 0.3
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from cxstream.intel.drift import ErrorDriftMonitor
from cxstream.intel.snapshot import dump_snapshot, load_snapshot

SNAPSHOT_KIND = "cxstream.intel.ChurnModel"
FeatureValue = float | int | bool | str


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class ChurnModel:
    """Online logistic regression for P(churn | features).

    ``learn_one(features, churned)`` first scores the example (test-then-train) and feeds
    its 0/1 error to an ADWIN monitor: ``drift_detected`` tells whether that update
    signalled drift.  ``version`` increments on every learn and every :meth:`publish`.
    """

    def __init__(
        self,
        lr: float = 0.05,
        l2: float = 1e-4,
        interactions: bool = False,
        max_features: int = 1 << 16,
        threshold: float = 0.5,
    ) -> None:
        self.lr = lr
        self.l2 = l2
        self.interactions = interactions
        self.max_features = max_features
        self.threshold = threshold
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self._w = np.zeros(64, dtype=np.float64)
        self._g = np.zeros(64, dtype=np.float64)  # AdaGrad accumulators
        self.bias = 0.0
        self._gb = 0.0
        self.n_learned = 0
        self.n_positive = 0
        self.version = 0
        self.drift = ErrorDriftMonitor()
        self.drift_detected = False

    def _params(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "l2": self.l2,
            "interactions": self.interactions,
            "max_features": self.max_features,
            "threshold": self.threshold,
        }

    def clone(self) -> ChurnModel:
        """A new, untrained model with the same parameters."""
        return ChurnModel(**self._params())

    # ------------------------------------------------------------------ features
    def _expand(self, features: Mapping[str, FeatureValue]) -> dict[str, float]:
        out: dict[str, float] = {}
        cats: list[str] = []
        for key in sorted(features):
            value = features[key]
            if isinstance(value, str):
                name = f"{key}={value}"
                out[name] = 1.0
                cats.append(name)
            else:
                x = float(value)
                if math.isfinite(x) and x != 0.0:
                    out[key] = x
        if self.interactions:
            for i, a in enumerate(cats):
                for b in cats[i + 1 :]:
                    out[f"{a}&{b}"] = 1.0
        return out

    def _lookup(self, xs: dict[str, float], grow: bool) -> tuple[np.ndarray, np.ndarray]:
        idx: list[int] = []
        val: list[float] = []
        for name, x in xs.items():
            j = self._index.get(name)
            if j is None:
                if not grow or len(self.names) >= self.max_features:
                    continue
                j = len(self.names)
                self.names.append(name)
                self._index[name] = j
                if j >= self._w.size:
                    self._w = np.pad(self._w, (0, self._w.size))
                    self._g = np.pad(self._g, (0, self._g.size))
            idx.append(j)
            val.append(x)
        return np.asarray(idx, dtype=np.int64), np.asarray(val, dtype=np.float64)

    # ------------------------------------------------------------------ API
    def predict_proba_one(self, features: Mapping[str, FeatureValue]) -> float:
        """P(churn) in [0, 1]; 0.5 before any learning."""
        idx, val = self._lookup(self._expand(features), grow=False)
        return _sigmoid(self.bias + float(val @ self._w[idx]))

    def predict_one(self, features: Mapping[str, FeatureValue]) -> bool:
        """True when P(churn) >= ``threshold``."""
        return self.predict_proba_one(features) >= self.threshold

    def learn_one(self, features: Mapping[str, FeatureValue], churned: bool) -> None:
        """One AdaGrad step on the log loss (inputs are not mutated)."""
        y = 1.0 if churned else 0.0
        if self.n_learned:
            p0 = self.predict_proba_one(features)
            self.drift_detected = self.drift.update(0.0 if (p0 >= self.threshold) == bool(churned) else 1.0)
        else:
            self.drift_detected = False
        idx, val = self._lookup(self._expand(features), grow=True)
        p = _sigmoid(self.bias + float(val @ self._w[idx]))
        err = p - y
        grad = err * val + self.l2 * self._w[idx]
        self._g[idx] += grad * grad
        self._w[idx] -= self.lr * grad / (np.sqrt(self._g[idx]) + 1e-8)
        self._gb += err * err
        self.bias -= self.lr * err / (math.sqrt(self._gb) + 1e-8)
        self.n_learned += 1
        self.n_positive += int(churned)
        self.version += 1

    def publish(self) -> bytes:
        """Bump ``version`` and return the snapshot bytes to publish."""
        self.version += 1
        return self.to_bytes()

    def to_bytes(self) -> bytes:
        """Pickle-free snapshot (feature names, weights, AdaGrad state)."""
        n = len(self.names)
        meta = {
            "params": self._params(),
            "names": self.names,
            "bias": self.bias,
            "gb": self._gb,
            "n_learned": self.n_learned,
            "n_positive": self.n_positive,
        }
        return dump_snapshot(SNAPSHOT_KIND, self.version, meta, {"w": self._w[:n], "g": self._g[:n]})

    @classmethod
    def from_bytes(cls, data: bytes) -> ChurnModel:
        """Restore a snapshot written by :meth:`to_bytes`."""
        snap = load_snapshot(data, kind=SNAPSHOT_KIND)
        model = cls(**snap.meta["params"])
        names = [str(n) for n in snap.meta["names"]]
        w = np.asarray(snap.arrays["w"], dtype=np.float64)
        g = np.asarray(snap.arrays["g"], dtype=np.float64)
        if w.shape != (len(names),) or g.shape != (len(names),):
            raise ValueError("snapshot arrays do not match feature names")
        model.names = names
        model._index = {n: i for i, n in enumerate(names)}
        size = max(64, 1 << max(0, (len(names) - 1).bit_length()))
        model._w = np.zeros(size, dtype=np.float64)
        model._g = np.zeros(size, dtype=np.float64)
        model._w[: len(names)] = w
        model._g[: len(names)] = g
        model.bias = float(snap.meta["bias"])
        model._gb = float(snap.meta["gb"])
        model.n_learned = int(snap.meta["n_learned"])
        model.n_positive = int(snap.meta["n_positive"])
        model.version = snap.model_version
        return model
