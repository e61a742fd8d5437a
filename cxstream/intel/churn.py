"""Online churn-risk classifier (River-style ``learn_one`` / ``predict_proba_one``).

Two one-pass learners over the features of :func:`cxstream.intel.features.churn_features`,
blended in log-odds space:

1. **Online Bayesian logistic regression** (Laplace approximation updated one example at
   a time, i.e. an extended Kalman filter): a weight mean and a full covariance matrix,
   Gaussian prior N(0, ``prior_var``) per weight.  Each update is one Newton step with a
   rank-one covariance downdate, so after n examples the weights are close to the batch
   ridge-regularised fit on those n examples (AdaGrad SGD reaches that only slowly on a
   few thousand rows).  ``forget`` pulls the covariance back towards the prior by that
   fraction per update, so the model keeps adapting on a long live stream.
2. **Naive Bayes** over categorical features (counts with Laplace smoothing ``nb_alpha``):
   the string features except the crosses, the ``product=`` indicators and a few numbers
   cut into fixed bins (:data:`NB_BINS`).  It is low-variance early in the stream and its
   errors differ from the regression's.

``P(churn) = sigmoid((1 - nb_weight) * logit_LR + nb_weight * logit_NB)``.  Numbers are used
as given (the feature map puts them on fixed scales), strings are one-hot encoded as
``name=value``.  Columns grow as new names appear, up to ``max_features`` (the covariance
is ``(max_features + 1)^2`` floats, ~2 MB at 512; later new names are ignored).  The state
is plain arrays plus the lists of feature names, so snapshots need no pickle (River's own
estimators only serialise through pickle, which the engine refuses to load).

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
from cxstream.intel.snapshot import SnapshotError, SnapshotParts, Snapshotted, load_snapshot, owned

SNAPSHOT_KIND = "cxstream.intel.ChurnModel/2"
FeatureValue = float | int | bool | str

#: numeric features the naive Bayes part uses, with bins per unit (``floor(x * bins)``)
NB_BINS: dict[str, float] = {
    "monthly_100": 20.0,  # 5 currency units
    "total_log": 10.0,  # one unit of log1p(total)
    "paperless_billing": 1.0,
    "contacts_30d_log": 2.0,
    "repeat_contacts_log": 2.0,
    "failed_payments_log": 2.0,
    "complaints_log": 2.0,
    "negative_sentiment": 5.0,
    "sentiment_trend": 5.0,
    "recency_log": 5.0,
}
#: string features the naive Bayes part leaves out (coarser copies and crosses of others)
NB_SKIP = frozenset({"tenure_bucket", "contract_x_tenure", "contract_x_plan"})
#: one-hot indicator prefixes the naive Bayes part uses (present ones only)
NB_INDICATORS = ("product=",)
_LOGIT_CLIP = math.log(1e6)
_LLR_CACHE_MAX = 4096  # naive Bayes items whose log-likelihood ratio a model keeps (values are bins and categories)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _clip(z: float) -> float:
    return min(_LOGIT_CLIP, max(-_LOGIT_CLIP, z))


class ChurnModel(Snapshotted):
    """Online Bayesian logistic regression + naive Bayes for P(churn | features).

    ``learn_one(features, churned)`` first scores the example (test-then-train) and feeds
    its 0/1 error to an ADWIN monitor: ``drift_detected`` tells whether that update
    signalled drift.  ``version`` increments on every learn and every :meth:`publish`.
    """

    def __init__(
        self,
        prior_var: float = 0.1,
        bias_var: float = 4.0,
        forget: float = 1e-5,
        nb_weight: float = 0.15,
        nb_alpha: float = 1.0,
        max_features: int = 512,
        threshold: float = 0.5,
    ) -> None:
        if prior_var <= 0 or bias_var <= 0 or nb_alpha <= 0:
            raise ValueError("prior_var, bias_var and nb_alpha must be > 0")
        if not 0.0 <= forget < 1.0 or not 0.0 <= nb_weight <= 1.0:
            raise ValueError("forget must be in [0, 1) and nb_weight in [0, 1]")
        self.prior_var = prior_var
        self.bias_var = bias_var
        self.forget = forget
        self.nb_weight = nb_weight
        self.nb_alpha = nb_alpha
        self.max_features = max_features
        self.threshold = threshold
        # regression: index 0 of _w / _P is the bias, feature j is index j + 1
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self._w = np.zeros(64, dtype=np.float64)
        self._P = np.zeros((64, 64), dtype=np.float64)
        self._P[0, 0] = bias_var
        # naive Bayes: (attribute, value) items, per-item class counts, values per attribute
        self.nb_items: list[tuple[str, str]] = []
        self._nb_index: dict[tuple[str, str], int] = {}
        self._nb_counts = np.zeros((64, 2), dtype=np.int64)
        self._nb_values: dict[str, int] = {}
        self.n_learned = 0
        self.n_positive = 0
        self.version = 0
        self.drift = ErrorDriftMonitor()
        self.drift_detected = False
        # what a prediction recomputed from the same numbers every time, until the model learns again:
        # each naive Bayes item's log-likelihood ratio (None: attribute never seen), at version _llr_version,
        # and each regression column's feature name before "=" (columns only ever grow)
        self._llr: dict[tuple[str, str], float | None] = {}
        self._llr_version = -1
        self._keys: list[str] = []

    def _params(self) -> dict[str, Any]:
        return {
            "prior_var": self.prior_var,
            "bias_var": self.bias_var,
            "forget": self.forget,
            "nb_weight": self.nb_weight,
            "nb_alpha": self.nb_alpha,
            "max_features": self.max_features,
            "threshold": self.threshold,
        }

    def clone(self) -> ChurnModel:
        """A new, untrained model with the same parameters."""
        return ChurnModel(**self._params())

    # ------------------------------------------------------------------ features
    @staticmethod
    def _expand(features: Mapping[str, FeatureValue]) -> tuple[dict[str, float], list[tuple[str, str]]]:
        """Regression inputs (one-hot strings) and naive Bayes items of one example."""
        out: dict[str, float] = {}
        items: list[tuple[str, str]] = []
        for key in sorted(features):
            value = features[key]
            if isinstance(value, str):
                out[f"{key}={value}"] = 1.0
                if key not in NB_SKIP:
                    items.append((key, value))
                continue
            x = float(value)
            if not math.isfinite(x):
                continue
            if x != 0.0:
                out[key] = x
            bins = NB_BINS.get(key)
            if bins is not None:
                items.append((key, str(math.floor(x * bins))))
            elif x != 0.0 and key.startswith(NB_INDICATORS):
                items.append((key, "1"))
        return out, items

    def _lookup(self, xs: dict[str, float], grow: bool) -> tuple[np.ndarray, np.ndarray]:
        idx: list[int] = [0]
        val: list[float] = [1.0]
        for name, x in xs.items():
            j = self._index.get(name)
            if j is None:
                if not grow or len(self.names) >= self.max_features:
                    continue
                j = len(self.names) + 1
                self.names.append(name)
                self._index[name] = j
                if j >= self._w.size:
                    size = 2 * self._w.size
                    self._w = np.pad(self._w, (0, size - self._w.size))
                    P = np.zeros((size, size), dtype=np.float64)
                    P[: self._P.shape[0], : self._P.shape[1]] = self._P
                    self._P = P
                self._P[j, j] = self.prior_var
            idx.append(j)
            val.append(x)
        return np.asarray(idx, dtype=np.int64), np.asarray(val, dtype=np.float64)

    def _nb_llrs(self, items: list[tuple[str, str]]) -> list[tuple[str, float]]:
        """Each item's log-likelihood ratio (churned vs not), attributes never seen in training left out."""
        if self._llr_version != self.version or len(self._llr) > _LLR_CACHE_MAX:  # learned since: counts changed
            self._llr, self._llr_version = {}, self.version
        known = self._llr
        out: list[tuple[str, float]] = []
        for item in items:
            if item not in known:
                known[item] = self._nb_llr(item)
            llr = known[item]
            if llr is not None:  # None: attribute never seen in training, no evidence
                out.append((item[0], llr))
        return out

    def _nb_llr(self, item: tuple[str, str]) -> float | None:
        nv = self._nb_values.get(item[0])
        if nv is None:
            return None
        n1 = self.n_positive
        n0 = self.n_learned - n1
        a = self.nb_alpha
        j = self._nb_index.get(item)
        c0, c1 = (0, 0) if j is None else (int(self._nb_counts[j, 0]), int(self._nb_counts[j, 1]))
        return math.log((c1 + a) / (n1 + a * nv)) - math.log((c0 + a) / (n0 + a * nv))

    def _nb_logit(self, items: list[tuple[str, str]]) -> float:
        n1 = self.n_positive
        z = math.log((n1 + 1.0) / (self.n_learned - n1 + 1.0))
        for _, llr in self._nb_llrs(items):
            z += llr
        return z

    def _nb_learn(self, items: list[tuple[str, str]], y: int) -> None:
        for item in items:
            j = self._nb_index.get(item)
            if j is None:
                if len(self.nb_items) >= 8 * self.max_features:
                    continue
                j = len(self.nb_items)
                self.nb_items.append(item)
                self._nb_index[item] = j
                self._nb_values[item[0]] = self._nb_values.get(item[0], 0) + 1
                if j >= self._nb_counts.shape[0]:
                    self._nb_counts = np.pad(self._nb_counts, ((0, self._nb_counts.shape[0]), (0, 0)))
            self._nb_counts[j, y] += 1

    def _score(self, items: list[tuple[str, str]], idx: np.ndarray, val: np.ndarray) -> float:
        z_lr = float(val @ self._w[idx])
        if self.nb_weight == 0.0:
            return _sigmoid(z_lr)
        z_nb = self._nb_logit(items)
        return _sigmoid((1.0 - self.nb_weight) * _clip(z_lr) + self.nb_weight * _clip(z_nb))

    # ------------------------------------------------------------------ API
    def predict_proba_one(self, features: Mapping[str, FeatureValue]) -> float:
        """P(churn) in [0, 1]; 0.5 before any learning."""
        xs, items = self._expand(features)
        idx, val = self._lookup(xs, grow=False)
        return self._score(items, idx, val)

    def explain_one(self, features: Mapping[str, FeatureValue]) -> tuple[float, dict[str, float]]:
        """P(churn) and each feature's share of its log-odds, by the feature's name.

        The blended log-odds is a sum over features (the regression's ``w_j * x_j``, a one-hot
        ``name=value`` counted under ``name``; naive Bayes' log-likelihood ratio of each item),
        plus a base (the bias and the prior odds) that is left out.  A share > 0 raises the risk
        against a customer without that feature; a clipped log-odds scales its shares by the clip.
        The probability is :meth:`predict_proba_one`'s (to rounding).

        >>> m = ChurnModel()
        >>> for _ in range(100):
        ...     m.learn_one({"contract": "monthly", "complaints_log": 1.0}, True)
        ...     m.learn_one({"contract": "two_year"}, False)
        >>> p, why = m.explain_one({"contract": "monthly", "complaints_log": 1.0})
        >>> abs(p - m.predict_proba_one({"contract": "monthly", "complaints_log": 1.0})) < 1e-12, sorted(why)
        (True, ['complaints_log', 'contract'])
        >>> why["contract"] > 0 and why["complaints_log"] > 0
        True
        """
        xs, items = self._expand(features)
        idx, val = self._lookup(xs, grow=False)
        terms = (val * self._w[idx]).tolist()
        z_lr = math.fsum(terms)  # the same sum as _score's dot product up to rounding
        out: dict[str, float] = {}
        if self.nb_weight == 0.0:
            p, lr_scale = _sigmoid(z_lr), 1.0
        else:
            llrs = self._nb_llrs(items)
            n1 = self.n_positive
            z_nb = math.log((n1 + 1.0) / (self.n_learned - n1 + 1.0)) + sum(v for _, v in llrs)
            p = _sigmoid((1.0 - self.nb_weight) * _clip(z_lr) + self.nb_weight * _clip(z_nb))
            lr_scale = (1.0 - self.nb_weight) * (_clip(z_lr) / z_lr if z_lr != _clip(z_lr) else 1.0)
            nb_scale = self.nb_weight * (_clip(z_nb) / z_nb if z_nb != _clip(z_nb) else 1.0)
            for name, llr in llrs:
                key = name.split("=", 1)[0]
                out[key] = out.get(key, 0.0) + nb_scale * llr
        keys = self._keys
        if len(keys) != len(self.names):
            keys = self._keys = [name.split("=", 1)[0] for name in self.names]
        for j, term in zip(idx[1:].tolist(), terms[1:], strict=True):
            key = keys[j - 1]
            out[key] = out.get(key, 0.0) + lr_scale * term
        return p, out

    def predict_one(self, features: Mapping[str, FeatureValue]) -> bool:
        """True when P(churn) >= ``threshold``."""
        return self.predict_proba_one(features) >= self.threshold

    def learn_one(self, features: Mapping[str, FeatureValue], churned: bool) -> None:
        """One Laplace/EKF step of the regression and one count update of the naive
        Bayes part (inputs are not mutated)."""
        y = 1.0 if churned else 0.0
        xs, items = self._expand(features)
        if self.n_learned:
            p0 = self._score(items, *self._lookup(xs, grow=False))
            self.drift_detected = self.drift.update(0.0 if (p0 >= self.threshold) == bool(churned) else 1.0)
        else:
            self.drift_detected = False
        idx, val = self._lookup(xs, grow=True)
        d = len(self.names) + 1
        P = self._P[:d, :d]
        Px = P[:, idx] @ val
        p = _sigmoid(float(val @ self._w[idx]))
        h = max(p * (1.0 - p), 1e-6)
        k = Px / (1.0 / h + float(val @ Px[idx]))
        self._w[:d] += k * ((y - p) / h)
        P -= np.outer(k, Px)
        if self.forget:
            P *= 1.0 - self.forget
            P[np.diag_indices(d)] += self.forget * self.prior_var
        self._nb_learn(items, int(y))
        self.n_learned += 1
        self.n_positive += int(churned)
        self.version += 1

    def snapshot_parts(self) -> SnapshotParts:
        """The snapshot's kind, version, metadata and arrays, copied (later learning does not change them)."""
        d = len(self.names) + 1
        m = len(self.nb_items)
        meta = {
            "params": self._params(),
            "names": list(self.names),
            "nb_items": [list(item) for item in self.nb_items],
            "n_learned": self.n_learned,
            "n_positive": self.n_positive,
        }
        arrays = {"w": self._w[:d], "P": self._P[:d, :d], "nb_counts": self._nb_counts[:m]}
        return SNAPSHOT_KIND, self.version, meta, owned(arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> ChurnModel:
        """Restore a snapshot written by :meth:`to_bytes` (earlier formats are refused)."""
        snap = load_snapshot(data, kind=SNAPSHOT_KIND)
        model = cls(**snap.meta["params"])
        names = [str(n) for n in snap.meta["names"]]
        items = [(str(a), str(v)) for a, v in snap.meta["nb_items"]]
        d, m = len(names) + 1, len(items)
        w = np.asarray(snap.arrays["w"], dtype=np.float64)
        P = np.asarray(snap.arrays["P"], dtype=np.float64)
        counts = np.asarray(snap.arrays["nb_counts"], dtype=np.int64)
        if w.shape != (d,) or P.shape != (d, d) or counts.shape != (m, 2):
            raise SnapshotError("snapshot arrays do not match feature names")
        model.names = names
        model._index = {n: i + 1 for i, n in enumerate(names)}
        size = max(64, 1 << max(0, (d - 1).bit_length()))
        model._w = np.zeros(size, dtype=np.float64)
        model._P = np.zeros((size, size), dtype=np.float64)
        model._w[:d] = w
        model._P[:d, :d] = P
        model.nb_items = items
        model._nb_index = {item: j for j, item in enumerate(items)}
        model._nb_values = {}
        for attr, _ in items:
            model._nb_values[attr] = model._nb_values.get(attr, 0) + 1
        model._nb_counts = np.zeros((max(64, 1 << max(0, (m - 1).bit_length())), 2), dtype=np.int64)
        model._nb_counts[:m] = counts
        model.n_learned = int(snap.meta["n_learned"])
        model.n_positive = int(snap.meta["n_positive"])
        model.version = snap.model_version
        return model
