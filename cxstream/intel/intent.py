"""Online intent classifier over message text (pure, deterministic, no I/O).

Two one-pass learners share one set of hashed features (see :mod:`cxstream.intel.text`):

* an *averaged* multiclass passive-aggressive linear model (PA-I, Crammer et al. 2006:
  each update moves the true class up and the highest-scoring wrong class down by the
  smallest step that gives a margin of 1, capped at ``C``; predictions use the average of
  all weight vectors seen, which is far more stable after one pass), and
* a multinomial naive Bayes over the same features (order-independent counts).

Their softmax probabilities (temperatures ``pa_temperature`` / ``nb_temperature``) are
averaged.  An optional dense sentence encoder (any ``Callable[[str], np.ndarray]``, e.g.
:class:`cxstream.intel.encoder.MiniLMEncoder`) adds a third averaged-PA head over its
embedding.  The top probability is mapped to P(correct) by an online calibrator fed with
the model's own test-then-train predictions; below ``unknown_threshold`` the model
answers ``"unknown"``.

Label names are free-form and may appear at any time: class columns grow on demand.

>>> m = IntentModel(n_features=1 << 12)
>>> m.predict_one("where is my card")
('unknown', 0.0)
>>> for _ in range(3):
...     m.learn_one("where is my new card", "card_arrival")
...     m.learn_one("I want to close my account", "close_account")
>>> m.predict_one("my card has not arrived")[0]
'card_arrival'
>>> sorted(m.predict_proba_one("close account"))
['card_arrival', 'close_account']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Self

import numpy as np

from cxstream.intel.calibration import OnlineCalibrator
from cxstream.intel.drift import ErrorDriftMonitor
from cxstream.intel.snapshot import Snapshot, SnapshotError, SnapshotParts, Snapshotted, load_snapshot, owned
from cxstream.intel.text import hashed_features

UNKNOWN = "unknown"
SNAPSHOT_KIND = "cxstream.intel.IntentModel"

Encoder = Callable[[str], np.ndarray]


class IntentPrediction(NamedTuple):
    """``label`` is ``"unknown"`` below the threshold; ``top_label`` is always the argmax."""

    label: str
    top_label: str
    confidence: float
    raw_probability: float


def _softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = scores / temperature
    z = z - z.max()
    e = np.exp(z)
    return np.asarray(e / e.sum())


def _flat_index(mask: np.ndarray) -> np.ndarray:
    """The flat positions where *mask* is true: int32 when they fit, as they do for any model this size.

    >>> _flat_index(np.array([[0, 1], [1, 0]]) != 0).tolist()
    [1, 2]
    """
    at = np.flatnonzero(mask)
    return at.astype(np.int32) if mask.size < 2**31 else at


def _sparse_or_dense(gaps_name: str, blocks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Weight blocks of the same shape as a snapshot stores them: their non-zero entries when that is smaller.

    Sparse: *gaps_name*, the flat positions where any block is non-zero as the gaps between them
    (the first: its position; gaps are small numbers, which compress to a quarter of the
    positions' bytes), and each block's values there.  Dense: the blocks as they are (few
    classes: most entries are non-zero).

    >>> sparse = _sparse_or_dense("gaps", {"w": np.eye(4, dtype=np.float32)})
    >>> sorted(sparse), sparse["gaps"].tolist()
    (['gaps', 'w'], [0, 5, 5, 5])
    >>> _sparse_or_dense("gaps", {"w": np.ones((2, 2), dtype=np.float32)})["w"].shape
    (2, 2)
    """
    mask = np.zeros(next(iter(blocks.values())).shape, dtype=bool)
    for block in blocks.values():
        mask |= block != 0
    nnz, itemsize = int(np.count_nonzero(mask)), 4 if mask.size < 2**31 else 8
    if nnz * (itemsize + 4 * len(blocks)) >= mask.size * 4 * len(blocks):
        return blocks
    at = _flat_index(mask)
    return {gaps_name: np.diff(at, prepend=at.dtype.type(0)), **{name: block.ravel()[at] for name, block in blocks.items()}}


def _snapshot_rows(snap: Snapshot, n_features: int) -> np.ndarray:
    """The feature rows a snapshot holds, checked against the model's number of features."""
    rows = snap.arrays["rows"].astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n_features or np.any(np.diff(rows) <= 0)):
        raise SnapshotError("snapshot feature rows out of range or not increasing")
    return rows


def _weights_part(
    snap: Snapshot, gaps_name: str, names: tuple[str, ...], n_rows: int, k: int
) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """One part of a snapshot's weights, checked: (flat positions, the values there) when it is stored
    sparse, (None, the ``(n_rows, k)`` blocks) when dense.

    Since December 6, 2026 a snapshot holds the non-zero entries only when that is smaller
    (:func:`_sparse_or_dense`; ``wu_gaps``/``nb_gaps``: the gaps between flat positions in the
    ``(n_rows, k)`` block; ``w``, ``u``, ``nb``: the values there).  A model with Banking77's 77 classes has 83-91 % of
    them zero, and the dense blocks written before were most of what a worker decompressed at
    every publication (25 MB).  Dense blocks still load.
    """
    values = [snap.arrays[name] for name in names]
    if gaps_name not in snap.arrays:  # dense blocks: few classes, or written before December 6, 2026
        if any(v.shape != (n_rows, k) for v in values):
            raise SnapshotError(f"snapshot weights {names} are not {n_rows} rows of {k} classes")
        return None, values
    gaps = snap.arrays[gaps_name]
    if gaps.ndim != 1 or gaps.dtype.kind not in "iu" or (gaps.size and (gaps[0] < 0 or np.any(gaps[1:] <= 0))):
        raise SnapshotError(f"snapshot array {gaps_name!r} does not hold increasing positions")
    at = np.cumsum(gaps, dtype=np.int64)
    if at.size and at[-1] >= n_rows * k:
        raise SnapshotError(f"snapshot array {gaps_name!r} has positions out of range")
    if any(v.shape != at.shape for v in values):
        raise SnapshotError(f"snapshot arrays {names} do not match {gaps_name!r}")
    return at, values


def _compact_weights(snap: Snapshot, n_rows: int, k: int) -> dict[str, np.ndarray]:
    """``w``, ``u`` and ``nb`` of a snapshot as dense ``(n_rows, k)`` arrays, from either layout."""
    out = {}
    for gaps_name, names in (("wu_gaps", ("w", "u")), ("nb_gaps", ("nb",))):
        at, values = _weights_part(snap, gaps_name, names, n_rows, k)
        for name, v in zip(names, values, strict=True):
            if at is not None:
                block = np.zeros(n_rows * k, dtype=np.float32)
                block[at] = v
                v = block.reshape(n_rows, k)
            out[name] = v
    return out


class IntentModel(Snapshotted):
    """Online intent classifier: ``learn_one(text, label)``, ``predict_one(text)``.

    Parameters are part of the snapshot.  ``version`` increments on every ``learn_one``
    and every :meth:`publish`.
    """

    def __init__(
        self,
        n_features: int = 1 << 16,
        C: float = 0.5,
        alpha: float = 0.01,
        pa_temperature: float = 0.05,
        nb_temperature: float = 1.0,
        unknown_threshold: float = 0.5,
        char_min: int = 2,
        char_max: int = 5,
        encoder: Encoder | None = None,
        encoder_name: str | None = None,
        encoder_weight: float = 1.0,
        encoder_temperature: float = 0.1,
        knn_k: int = 10,
        knn_temperature: float = 0.05,
        knn_memory: int = 20000,
        knn_weight: float = 1.0,
        encoder_joint: float = 0.0,
        knn_candidates: int = 0,
    ) -> None:
        if n_features <= 0 or n_features & (n_features - 1):
            raise ValueError("n_features must be a power of two")
        self.n_features = n_features
        self.C = C
        self.alpha = alpha
        self.pa_temperature = pa_temperature
        self.nb_temperature = nb_temperature
        self.unknown_threshold = unknown_threshold
        self.char_min = char_min
        self.char_max = char_max
        self.encoder = encoder
        self.encoder_name = encoder_name or (type(encoder).__name__ if encoder is not None else None)
        self.encoder_weight = encoder_weight
        self.encoder_temperature = encoder_temperature
        self.knn_k = knn_k
        self.knn_temperature = knn_temperature
        self.knn_memory = knn_memory
        self.knn_weight = knn_weight
        self.encoder_joint = encoder_joint
        self.knn_candidates = knn_candidates
        self._mem: np.ndarray | None = None  # ring buffer of embeddings (encoder head only)
        self._mem_y = np.zeros(0, dtype=np.int32)
        self._mem_n = 0  # examples written so far (ring position = _mem_n % knn_memory)
        self.labels: list[str] = []
        self._index: dict[str, int] = {}
        cap = 0
        self._w = np.zeros((n_features, cap), dtype=np.float32)  # current PA weights
        self._u = np.zeros((n_features, cap), dtype=np.float32)  # sum of c * updates, for averaging
        self._nb = np.zeros((n_features, cap), dtype=np.float32)  # NB feature mass per class
        self._nb_tot = np.zeros(cap, dtype=np.float64)
        # log(nb + alpha), kept in step with _nb so a prediction gathers instead of taking logs
        self._nb_log = np.full((n_features, cap), np.log(alpha), dtype=np.float32)
        self._nb_denom: np.ndarray | None = None  # log(nb_tot + alpha * n_features), per class
        # the feature rows any example has touched: what a snapshot holds (finding them by scanning
        # the weights for non-zero rows took ~4 ms of the event loop per publication)
        self._touched = np.zeros(n_features, dtype=bool)
        # memory grouped by class (labels, class starts, embeddings), rebuilt after a learn
        self._knn_index: tuple[np.ndarray, list[int], np.ndarray] | None = None
        self._dw: np.ndarray | None = None  # dense (encoder) head, shape (dim, cap)
        self._du: np.ndarray | None = None
        self.n_learned = 0
        self.version = 0
        self.calibrator = OnlineCalibrator()
        self.drift = ErrorDriftMonitor()
        self.drift_detected = False

    # ------------------------------------------------------------------ helpers
    def _params(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "C": self.C,
            "alpha": self.alpha,
            "pa_temperature": self.pa_temperature,
            "nb_temperature": self.nb_temperature,
            "unknown_threshold": self.unknown_threshold,
            "char_min": self.char_min,
            "char_max": self.char_max,
            "encoder_name": self.encoder_name,
            "encoder_weight": self.encoder_weight,
            "encoder_temperature": self.encoder_temperature,
            "knn_k": self.knn_k,
            "knn_temperature": self.knn_temperature,
            "knn_memory": self.knn_memory,
            "knn_weight": self.knn_weight,
            "encoder_joint": self.encoder_joint,
            "knn_candidates": self.knn_candidates,
        }

    def clone(self) -> IntentModel:
        """A new, untrained model with the same parameters (and the same encoder object)."""
        return IntentModel(encoder=self.encoder, **self._params())

    def _features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        return hashed_features(text, self.n_features, self.char_min, self.char_max)

    def _embed(self, text: str) -> np.ndarray | None:
        if self.encoder is None:
            return None
        vec = np.asarray(self.encoder(text), dtype=np.float32).ravel()
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def _reserve(self, k: int) -> None:
        """Room for *k* classes in the per-class arrays (grown in steps of 8 columns, each at most once).

        A restore reserves all its classes at once: growing class by class copied every array
        three times for 24 classes, ~15 ms of a snapshot's load (with the GIL held)."""
        have = self._w.shape[1]
        if k <= have:
            return
        cap = max(8, (k + 7) // 8 * 8)

        def grown(a: np.ndarray, fill: float = 0.0) -> np.ndarray:
            out = np.full((a.shape[0], cap), fill, dtype=a.dtype) if fill else np.zeros((a.shape[0], cap), dtype=a.dtype)
            if have:
                out[:, :have] = a
            return out

        self._w, self._u, self._nb = grown(self._w), grown(self._u), grown(self._nb)
        self._nb_tot = np.pad(self._nb_tot, (0, cap - have))
        self._nb_log = grown(self._nb_log, float(np.float32(np.log(self.alpha))))
        if self._dw is not None and self._du is not None:
            self._dw, self._du = grown(self._dw), grown(self._du)

    def _add_label(self, label: str) -> int:
        k = len(self.labels)
        self._reserve(k + 1)
        self.labels.append(label)
        self._index[label] = k
        return k

    def _scores(
        self, idx: np.ndarray, val: np.ndarray, emb: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Raw per-class scores (PA averaged, NB log-lik, dense averaged).

        Rows are gathered whole with ``np.take`` and the product sliced to the known
        classes afterwards: faster than fancy-indexing ``[idx, :k]`` (a strided copy)."""
        k = len(self.labels)
        c = float(self.n_learned + 1)
        pa_cur = (val @ np.take(self._w, idx, axis=0))[:k]
        pa_avg = pa_cur - (val @ np.take(self._u, idx, axis=0))[:k] / c
        joint = self.encoder_joint > 0.0
        if joint and emb is not None and self._dw is not None and self._du is not None:
            # joint mode: the scaled embedding is part of the PA feature vector
            e = self.encoder_joint * emb
            d_cur = e @ self._dw[:, :k]
            pa_cur = pa_cur + d_cur
            pa_avg = pa_avg + d_cur - (e @ self._du[:, :k]) / c
        denom = self._nb_denom
        if denom is None or denom.shape[0] != k:  # reset by every learn_one
            denom = self._nb_denom = np.log(self._nb_tot[:k] + self.alpha * self.n_features)
        nb = (val @ np.take(self._nb_log, idx, axis=0))[:k].astype(np.float64) - float(val.sum()) * denom
        dense = None
        if not joint and emb is not None and self._dw is not None and self._du is not None:
            dense = emb @ self._dw[:, :k] - (emb @ self._du[:, :k]) / c
        return pa_avg, nb, dense

    def _proba(self, idx: np.ndarray, val: np.ndarray, emb: np.ndarray | None) -> np.ndarray:
        pa, nb, dense = self._scores(idx, val, emb)
        p = _softmax(pa, self.pa_temperature) + _softmax(nb, self.nb_temperature)
        total = 2.0
        if dense is not None:
            p = p + self.encoder_weight * _softmax(dense, self.encoder_temperature)
            total += self.encoder_weight
        if emb is not None and self.knn_weight > 0.0:
            cand = None
            if 0 < self.knn_candidates < len(self.labels):
                cand = np.argpartition(-p, self.knn_candidates - 1)[: self.knn_candidates]
            knn = self._knn(emb, len(self.labels), cand)
            if knn is not None:
                p = p + self.knn_weight * knn
                total += self.knn_weight
        return np.asarray(p / total)

    def _knn(self, emb: np.ndarray, k: int, candidates: np.ndarray | None = None) -> np.ndarray | None:
        """Similarity-weighted vote of the ``knn_k`` nearest remembered embeddings.

        With ``candidates`` (class indices) only memories of those classes are searched:
        the other heads' top classes, which keeps the search a few hundred rows instead
        of the whole memory (the scan is memory-bandwidth bound)."""
        n = min(self._mem_n, self.knn_memory)
        if self._mem is None or n == 0:
            return None
        mem_y = self._mem_y[:n]
        if candidates is not None:
            if self._knn_index is None or len(self._knn_index[1]) != k + 1:
                order = np.argsort(mem_y, kind="stable")
                sorted_y = mem_y[order]
                starts_list = np.searchsorted(sorted_y, np.arange(k + 1)).tolist()  # plain ints: read per candidate
                self._knn_index = (sorted_y, starts_list, self._mem[order])
            sorted_y, starts, grouped = self._knn_index
            spans = [(starts[c], starts[c + 1]) for c in candidates.tolist()]
            spans = [(a, b) for a, b in spans if b > a]
            if not spans:
                return None
            sims = np.concatenate([grouped[a:b] @ emb for a, b in spans])
            mem_y = np.concatenate([sorted_y[a:b] for a, b in spans])
        else:
            sims = self._mem[:n] @ emb
        m = sims.shape[0]
        top = np.argpartition(-sims, self.knn_k - 1)[: self.knn_k] if m > self.knn_k else np.arange(m)
        weights = np.exp((sims[top] - sims[top].max()) / self.knn_temperature)
        votes = np.bincount(mem_y[top], weights=weights, minlength=k)[:k]
        return np.asarray(votes / votes.sum())

    def _remember(self, emb: np.ndarray, y: int) -> None:
        if self._mem is None:
            self._mem = np.zeros((self.knn_memory, emb.shape[0]), dtype=np.float32)
            self._mem_y = np.zeros(self.knn_memory, dtype=np.int32)
        pos = self._mem_n % self.knn_memory
        self._mem[pos] = emb
        self._mem_y[pos] = y
        self._mem_n += 1
        self._knn_index = None

    # ------------------------------------------------------------------ API
    def predict_proba_one(self, text: str) -> dict[str, float]:
        """Probability of each known label (empty before the first ``learn_one``)."""
        if not self.labels:
            return {}
        idx, val = self._features(text)
        p = self._proba(idx, val, self._embed(text))
        return {label: float(p[i]) for i, label in enumerate(self.labels)}

    def predict_ranked(self, text: str, k: int = 3) -> list[tuple[str, float]]:
        """Top-``k`` labels with their (uncalibrated) probabilities, best first."""
        proba = self.predict_proba_one(text)
        return sorted(proba.items(), key=lambda kv: (-kv[1], kv[0]))[:k]

    def predict_detail(self, text: str) -> IntentPrediction:
        """Full prediction: answered label, best label, calibrated and raw confidence."""
        if not self.labels:
            return IntentPrediction(UNKNOWN, UNKNOWN, 0.0, 0.0)
        idx, val = self._features(text)
        return self._prediction(self._proba(idx, val, self._embed(text)))

    def _prediction(self, p: np.ndarray) -> IntentPrediction:
        best = int(np.argmax(p))
        raw = float(p[best])
        conf = self.calibrator.calibrate(raw)
        label = self.labels[best] if conf >= self.unknown_threshold else UNKNOWN
        return IntentPrediction(label, self.labels[best], conf, raw)

    def predict_one(self, text: str) -> tuple[str, float]:
        """``(label, confidence)``; ``("unknown", confidence)`` when the calibrated
        confidence is below ``unknown_threshold``.  Confidence is the calibrated
        probability that the best label is right."""
        pred = self.predict_detail(text)
        return pred.label, pred.confidence

    def learn_one(self, text: str, label: str) -> None:
        """One online update (test-then-train: the pre-update prediction feeds the
        calibrator and the ADWIN drift monitor; see ``drift_detected``)."""
        self._learn(text, label, predict=False)

    def test_then_learn(self, text: str, label: str) -> IntentPrediction:
        """``learn_one`` that also returns the pre-update prediction: the same as
        ``predict_detail(text)`` followed by ``learn_one(text, label)``, with the features
        and scores computed once instead of twice (the learner's progressive metrics)."""
        pred = self._learn(text, label, predict=True)
        assert pred is not None
        return pred

    def _learn(self, text: str, label: str, *, predict: bool) -> IntentPrediction | None:
        label = str(label)
        idx, val = self._features(text)
        emb = self._embed(text)
        if emb is not None and self._dw is None:
            shape = (emb.shape[0], self._w.shape[1])
            self._dw = np.zeros(shape, dtype=np.float32)
            self._du = np.zeros(shape, dtype=np.float32)
        pred = IntentPrediction(UNKNOWN, UNKNOWN, 0.0, 0.0) if predict else None
        if self.labels:
            p = self._proba(idx, val, emb)
            best = int(np.argmax(p))
            if predict:  # calibrated before the calibrator learns from this example
                pred = self._prediction(p)
            correct = self.labels[best] == label
            self.calibrator.update(float(p[best]), correct)
            self.drift_detected = self.drift.update(0.0 if correct else 1.0)
        else:
            self.drift_detected = False
        y = self._index.get(label)
        if y is None:
            y = self._add_label(label)
        k = len(self.labels)
        c = float(self.n_learned + 1)
        # averaged multiclass PA-I (true class vs. best-scoring wrong class)
        if k > 1 and self.encoder_joint > 0.0 and emb is not None and self._dw is not None and self._du is not None:
            self._joint_step(idx, val, self.encoder_joint * emb, y, c)
        elif k > 1:
            scores = val @ self._w[idx, :k]
            self._pa_step(idx, val, scores, y, self._w, self._u, c, float(np.dot(val, val)))
            if emb is not None and self._dw is not None and self._du is not None:
                dscores = emb @ self._dw[:, :k]
                dsl = slice(None)
                self._pa_step(dsl, emb, dscores, y, self._dw, self._du, c, float(np.dot(emb, emb)))
        if emb is not None and self.knn_weight > 0.0:
            self._remember(emb, y)
        # naive Bayes mass
        self._nb[idx, y] += val
        self._nb_log[idx, y] = np.log(self._nb[idx, y] + np.float32(self.alpha))
        self._touched[idx] = True
        self._nb_tot[y] += float(val.sum())
        self._nb_denom = None
        self.n_learned += 1
        self.version += 1
        return pred

    def _pa_step(
        self,
        idx: np.ndarray | slice,
        val: np.ndarray,
        scores: np.ndarray,
        y: int,
        w: np.ndarray,
        u: np.ndarray,
        c: float,
        sq: float,
    ) -> None:
        wrong = scores.copy()
        wrong[y] = -np.inf
        r = int(np.argmax(wrong))
        loss = 1.0 - float(scores[y]) + float(scores[r])
        if loss <= 0.0 or sq <= 0.0:
            return
        tau = min(self.C, loss / (2.0 * sq))
        step = (tau * val).astype(np.float32)
        w[idx, y] += step
        w[idx, r] -= step
        u[idx, y] += c * step
        u[idx, r] -= c * step

    def _joint_step(self, idx: np.ndarray, val: np.ndarray, e: np.ndarray, y: int, c: float) -> None:
        """PA-I step on the joint vector ``[hashed n-grams, scaled embedding]``."""
        assert self._dw is not None and self._du is not None
        k = len(self.labels)
        scores = val @ self._w[idx, :k] + e @ self._dw[:, :k]
        wrong = scores.copy()
        wrong[y] = -np.inf
        r = int(np.argmax(wrong))
        loss = 1.0 - float(scores[y]) + float(scores[r])
        sq = float(np.dot(val, val)) + float(np.dot(e, e))
        if loss <= 0.0 or sq <= 0.0:
            return
        tau = min(self.C, loss / (2.0 * sq))
        for w, u, rows, x in ((self._w, self._u, idx, val), (self._dw, self._du, slice(None), e)):
            step = (tau * x).astype(np.float32)
            w[rows, y] += step
            w[rows, r] -= step
            u[rows, y] += c * step
            u[rows, r] -= c * step

    def learn_many(self, rows: Iterable[tuple[str, str]]) -> int:
        """Learn ``(text, label)`` pairs in order (e.g. a warm start); returns the count."""
        n = 0
        for text, label in rows:
            self.learn_one(text, label)
            n += 1
        return n

    # ------------------------------------------------------------------ snapshots
    def snapshot_parts(self) -> SnapshotParts:
        """The snapshot's kind, version, metadata and arrays, copied (later learning does not change them)."""
        k = len(self.labels)
        rows = np.flatnonzero(self._touched)
        arrays: dict[str, np.ndarray] = {
            "rows": rows.astype(np.int64),
            **_sparse_or_dense("wu_gaps", {"w": self._w[rows, :k], "u": self._u[rows, :k]}),
            **_sparse_or_dense("nb_gaps", {"nb": self._nb[rows, :k]}),
            "nb_tot": self._nb_tot[:k],
            **self.calibrator.state(),
        }
        if self._dw is not None and self._du is not None:
            arrays["dw"] = self._dw[:, :k]
            arrays["du"] = self._du[:, :k]
        if self._mem is not None:
            n = min(self._mem_n, self.knn_memory)
            arrays["mem"] = self._mem[:n]
            arrays["mem_y"] = self._mem_y[:n]
        meta = {
            "params": self._params(),
            "labels": list(self.labels),
            "n_learned": self.n_learned,
            "mem_n": self._mem_n,
        }
        return SNAPSHOT_KIND, self.version, meta, owned(arrays)

    @classmethod
    def _opened(cls, data: bytes, encoder: Encoder | None) -> tuple[Self, Snapshot, bool]:
        """A snapshot read, an empty model of this class with its parameters, and whether it has the dense head
        (then built with *encoder*, which it needs: the one it was trained with)."""
        snap = load_snapshot(data, kind=SNAPSHOT_KIND)
        params = dict(snap.meta["params"])
        has_dense = "dw" in snap.arrays
        if has_dense and encoder is None:
            raise ValueError(f"snapshot was trained with encoder {params.get('encoder_name')!r}; pass encoder=")
        return cls(encoder=encoder if has_dense else None, **params), snap, has_dense

    @classmethod
    def from_bytes(cls, data: bytes, encoder: Encoder | None = None) -> IntentModel:
        """Restore a snapshot.  A model trained with an encoder needs the same ``encoder``."""
        model, snap, has_dense = cls._opened(data, encoder)
        model._reserve(len(snap.meta["labels"]))
        for label in snap.meta["labels"]:
            model._add_label(str(label))
        k = len(model.labels)
        rows = _snapshot_rows(snap, model.n_features)
        weights = _compact_weights(snap, rows.size, k)
        model._w[rows, :k] = weights["w"]
        model._u[rows, :k] = weights["u"]
        model._nb[rows, :k] = weights["nb"]
        model._nb_log[rows, :k] = np.log(model._nb[rows, :k] + np.float32(model.alpha))
        model._touched[rows] = True
        model._nb_tot[:k] = snap.arrays["nb_tot"]
        if has_dense:
            dw = snap.arrays["dw"].astype(np.float32)
            model._dw = np.zeros((dw.shape[0], model._w.shape[1]), dtype=np.float32)
            model._du = np.zeros_like(model._dw)
            model._dw[:, :k] = dw
            model._du[:, :k] = snap.arrays["du"]
        model._restore_rest(snap)
        return model

    def _restore_rest(self, snap: Snapshot) -> None:
        """What a restore reads besides the weights: the k-NN memory, the calibrator, counts and version."""
        if "mem" in snap.arrays:
            mem = snap.arrays["mem"].astype(np.float32)
            self._mem = np.zeros((self.knn_memory, mem.shape[1]), dtype=np.float32)
            self._mem_y = np.zeros(self.knn_memory, dtype=np.int32)
            self._mem[: mem.shape[0]] = mem
            self._mem_y[: mem.shape[0]] = snap.arrays["mem_y"]
            self._mem_n = int(snap.meta["mem_n"])
        self.calibrator.load_state(snap.arrays)
        self.n_learned = int(snap.meta["n_learned"])
        self.version = snap.model_version


class ScoringIntentModel(IntentModel):
    """A published intent model loaded to score only: what every worker's scorer holds.

    A worker loads each model the learner publishes (every ``CX_SNAPSHOT_MIN_INTERVAL_S`` while
    labels come in), in a thread that shares the worker's core with its event loop.
    :meth:`IntentModel.from_bytes` rebuilds a model that can learn on: four dense
    ``(n_features, classes)`` arrays, 84 MB for 77 classes, filled from the snapshot.  This one
    keeps what a prediction reads, for the snapshot's rows only:

    * ``_wa``: the averaged PA weights, ``w - u / c``, computed once instead of per prediction;
    * ``_nbl``: the naive Bayes log-masses ``log(nb + alpha)``, taken of the non-zero masses only;
    * ``_row_of``: each feature's row in those, or the last row (the model never saw the feature:
      no PA weight, NB mass 0);
    * the dense head the same way (``_dwa``), and the k-NN memory as it is.

    It predicts what the learning model predicts (up to float rounding: the PA average is
    folded before the sum instead of after).  It cannot learn or publish.

    >>> m = IntentModel(n_features=1 << 12)
    >>> for _ in range(3):
    ...     m.learn_one("where is my new card", "card_arrival")
    ...     m.learn_one("I want to close my account", "close_account")
    >>> s = ScoringIntentModel.from_bytes(m.to_bytes())
    >>> s.predict_one("my card has not arrived")[0], s.version == m.version
    ('card_arrival', True)
    """

    _row_of: np.ndarray
    _wa: np.ndarray
    _nbl: np.ndarray
    _nb_denom_k: np.ndarray
    _dwa: np.ndarray | None = None

    @classmethod
    def from_bytes(cls, data: bytes, encoder: Encoder | None = None) -> ScoringIntentModel:
        model, snap, has_dense = cls._opened(data, encoder)
        model.labels = [str(label) for label in snap.meta["labels"]]
        model._index = {label: i for i, label in enumerate(model.labels)}
        k = len(model.labels)
        rows = _snapshot_rows(snap, model.n_features)
        n = rows.size
        model._restore_rest(snap)
        c = np.float32(model.n_learned + 1)
        alpha = np.float32(model.alpha)
        size = (n + 1) * k  # the last row: the features the model never saw
        wa = np.zeros(size, dtype=np.float32)
        nbl = np.full(size, np.log(model.alpha), dtype=np.float32)  # as the learning model's untouched entries
        at, (w, u) = _weights_part(snap, "wu_gaps", ("w", "u"), n, k)
        if at is None:
            wa[: n * k] = (w - u / c).ravel()
        else:
            wa[at] = w - u / c
        at, (nb,) = _weights_part(snap, "nb_gaps", ("nb",), n, k)
        nb = nb.ravel()
        at = np.arange(n * k) if at is None else at
        nonzero = nb != 0
        nbl[at[nonzero]] = np.log(nb[nonzero] + alpha)
        model._wa, model._nbl = wa.reshape(n + 1, k), nbl.reshape(n + 1, k)
        model._row_of = np.full(model.n_features, n, dtype=np.int32)
        model._row_of[rows] = np.arange(n, dtype=np.int32)
        nb_tot = np.asarray(snap.arrays["nb_tot"], dtype=np.float64)
        if nb_tot.shape != (k,):
            raise SnapshotError(f"snapshot nb_tot is not {k} classes")
        model._nb_tot = nb_tot
        model._nb_denom_k = np.log(nb_tot + model.alpha * model.n_features)
        if has_dense:
            dw, du = snap.arrays["dw"].astype(np.float32), snap.arrays["du"].astype(np.float32)
            model._dwa = dw - du / c
        return model

    def _scores(
        self, idx: np.ndarray, val: np.ndarray, emb: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        rows = np.take(self._row_of, idx)
        pa = val @ np.take(self._wa, rows, axis=0)
        nb = (val @ np.take(self._nbl, rows, axis=0)).astype(np.float64) - float(val.sum()) * self._nb_denom_k
        dense = None
        if emb is not None and self._dwa is not None:
            if self.encoder_joint > 0.0:
                pa = pa + (self.encoder_joint * emb) @ self._dwa
            else:
                dense = emb @ self._dwa
        return pa, nb, dense

    def _learn(self, text: str, label: str, *, predict: bool) -> IntentPrediction | None:
        raise TypeError("a ScoringIntentModel scores only: learning happens in the learner's IntentModel")

    def snapshot_parts(self) -> SnapshotParts:
        raise TypeError("a ScoringIntentModel scores only: the learner's IntentModel publishes")
