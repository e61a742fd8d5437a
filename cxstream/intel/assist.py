"""Suggested knowledge: which documents / response templates resolved contacts like this one (pure, no I/O).

:class:`KnowledgeModel` learns one completed contact at a time -- the customer's words, the
document (or template) the advisor used, the contact's intent if known, and whether it was
resolved -- and ranks documents for an open contact:

* each learned contact is kept as a sparse vector of hashed features (words, bigrams, char
  n-grams; :mod:`cxstream.intel.text`), never as text;
* similarity is the cosine of TF-IDF vectors whose IDF is learned online (document
  frequency of each feature over the remembered contacts, smoothed as scikit-learn does);
* a document's score is a soft vote of the ``k`` most similar remembered contacts that used
  it, each weighing ``exp((cosine - 1) / temperature)``, times ``unresolved_weight`` when that
  contact was not resolved, times ``1 + intent_boost`` when its intent is the open contact's;
* every suggestion says why: how many of the nearest contacts used it, the words of this
  contact found in theirs, the intents they had, and how often the document resolved a contact.

The memory is bounded (``memory`` contacts, oldest forgotten first, document frequencies
with them).

>>> m = KnowledgeModel(n_features=1 << 14)
>>> m.rank("my channel was suspended")
[]
>>> m.learn_one("my channel got suspended, please restore it", "appeal-guide", intent="account")
>>> m.learn_one("how do I reset my password", "password-reset", intent="login")
>>> m.learn_one("I forgot my password and cannot log in", "password-reset", intent="login")
>>> [s.document for s in m.rank("cannot log in, password forgotten")]
['password-reset', 'appeal-guide']
>>> best = m.rank("suspended channel", k=1)[0]
>>> best.document, best.uses, best.resolved, "suspended" in best.words
('appeal-guide', 1, 1, True)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple
from zlib import crc32

import numpy as np

from cxstream.intel.snapshot import SnapshotParts, Snapshotted, load_snapshot, owned
from cxstream.intel.text import feature_counts, tokenize

SNAPSHOT_KIND = "cxstream.intel.KnowledgeModel"
#: Words never offered as a reason (they match everything).
_STOP = frozenset(
    "a an and are as at be but by can do does for from get got has have how i i'm im in is it it's its me my "
    "no not of on or our please so that the their them then there this to was we were what when where which "
    "who why will with you your".split()
)


class Suggestion(NamedTuple):
    """One ranked document and why it is suggested.

    ``score`` is the document's share of the votes (the suggestions' scores sum to at most 1);
    ``similar`` how many of the ``k`` nearest remembered contacts used it and ``similarity``
    the best cosine among them; ``words`` this contact's words found in those contacts (most
    specific first); ``intents`` their intents; ``uses`` / ``resolved`` how often the document
    was used at all and how often it resolved the contact."""

    document: str
    score: float
    similar: int
    similarity: float
    words: list[str]
    intents: list[str]
    uses: int
    resolved: int


def _word_hash(word: str, mask: int) -> int:
    """The bucket of a word unigram, as :func:`cxstream.intel.text.feature_counts` hashes it."""
    return crc32(("w:" + word).encode("utf-8")) & mask


class KnowledgeModel(Snapshotted):
    """Online document ranking: ``learn_one(text, document, intent=, resolved=)``, ``rank(text)``.

    Parameters are part of the snapshot.  ``version`` increments on every ``learn_one`` and
    every :meth:`publish_parts`.
    """

    def __init__(
        self,
        n_features: int = 1 << 18,
        k: int = 10,
        temperature: float = 0.2,
        char_min: int = 2,
        char_max: int = 5,
        memory: int = 20000,
        unresolved_weight: float = 0.25,
        intent_boost: float = 1.0,
        norm_refresh: float = 0.01,
    ) -> None:
        if n_features <= 0 or n_features & (n_features - 1):
            raise ValueError("n_features must be a power of two")
        if k < 1 or memory < 1 or temperature <= 0:
            raise ValueError("k and memory must be >= 1 and temperature > 0")
        self.n_features = n_features
        self.k = k
        self.temperature = temperature
        self.char_min = char_min
        self.char_max = char_max
        self.memory = memory
        self.unresolved_weight = unresolved_weight
        self.intent_boost = intent_boost
        self.norm_refresh = norm_refresh
        self.documents: list[str] = []
        self._doc_index: dict[str, int] = {}
        self.intents: list[str] = []
        self._intent_index: dict[str, int] = {}
        self._uses = np.zeros(0, dtype=np.int64)  # per document, over every contact learned
        self._resolved = np.zeros(0, dtype=np.int64)
        self._df = np.zeros(n_features, dtype=np.int32)  # remembered contacts having each feature
        # the remembered contacts, CSR-like: features and 1 + log(tf) of row r at _ptr[r]:_ptr[r + 1]
        self._cols = np.zeros(0, dtype=np.int32)
        self._tf = np.zeros(0, dtype=np.float32)
        self._ptr = np.zeros(1, dtype=np.int64)
        self._row_doc = np.zeros(0, dtype=np.int32)
        self._row_intent = np.zeros(0, dtype=np.int32)  # -1: none
        self._row_ok = np.zeros(0, dtype=bool)
        self._n_rows = 0
        self._nnz = 0
        self._norms = np.zeros(0, dtype=np.float64)  # row norms under the IDF of _norms_at rows
        self._norms_at = -1
        # inverted index of the oldest _indexed rows: (feature -> start in the postings, rows, 1 + log tf)
        self._postings: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._indexed = 0
        self.n_learned = 0
        self.version = 0

    # ------------------------------------------------------------------ helpers
    def _params(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features, "k": self.k, "temperature": self.temperature,
            "char_min": self.char_min, "char_max": self.char_max, "memory": self.memory,
            "unresolved_weight": self.unresolved_weight, "intent_boost": self.intent_boost,
            "norm_refresh": self.norm_refresh,
        }

    def clone(self) -> KnowledgeModel:
        """A new, untrained model with the same parameters."""
        return KnowledgeModel(**self._params())

    def _features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        counts = feature_counts(text, self.n_features, self.char_min, self.char_max)
        cols = np.fromiter(counts.keys(), dtype=np.int32, count=len(counts))
        tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float32, count=len(counts)))
        return cols, tf.astype(np.float32)

    def _idf(self, cols: np.ndarray) -> np.ndarray:
        n = self._n_rows
        return np.log((1.0 + n) / (1.0 + self._df[cols].astype(np.float64))) + 1.0

    def _row_norms(self) -> np.ndarray:
        """Norms of the remembered rows' TF-IDF vectors; recomputed (one pass over the memory) once
        the memory grew by ``norm_refresh`` since the last time, else only for the new rows."""
        n = self._n_rows
        if self._norms_at < 0 or n < self._norms_at or n - self._norms_at > self.norm_refresh * max(1, self._norms_at):
            start = 0
        else:
            start = int(self._norms.shape[0])
        if start == n:
            return self._norms
        lo = int(self._ptr[start])
        cols, tf = self._cols[lo : self._nnz], self._tf[lo : self._nnz]
        w = (tf * self._idf(cols)) ** 2
        rows = np.repeat(np.arange(start, n), np.diff(self._ptr[start : n + 1]))
        fresh = np.sqrt(np.bincount(rows - start, weights=w, minlength=n - start))
        self._norms = fresh if start == 0 else np.concatenate([self._norms[:start], fresh])
        if start == 0:
            self._norms_at = n
        return self._norms

    def _similarities(self, cols: np.ndarray, tf: np.ndarray) -> np.ndarray:
        """Cosine of the query with every remembered contact (TF-IDF, current IDF).

        The older rows are read through an inverted index (feature -> rows; a query touches
        only the postings of its own features, ~20 % of the memory's entries on the Twitter
        data), the rows learned since it was built by one pass over them; the index is rebuilt
        once those are more than ``max(256, 10 %)`` of the memory."""
        n = self._n_rows
        if n == 0 or cols.size == 0:
            return np.zeros(n)
        idf = self._idf(cols)
        q = tf * idf
        qn = float(np.sqrt(np.dot(q, q)))
        if qn == 0.0:
            return np.zeros(n)
        weight = (q * idf / qn).astype(np.float32)  # the query's weight times the memory side's IDF
        indexed = self._index_rows()
        dots = np.zeros(n, dtype=np.float64)
        if indexed:
            assert self._postings is not None
            ptr, rows, vals = self._postings
            starts, ends = ptr[cols], ptr[cols + 1]
            lengths = ends - starts
            total = int(lengths.sum())
            if total:
                # the positions of every posting of the query's features, and each one's query weight
                offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
                dots[:indexed] = np.bincount(rows[offsets], weights=vals[offsets] * np.repeat(weight, lengths), minlength=indexed)
        if indexed < n:
            lo = int(self._ptr[indexed])
            dense = np.zeros(self.n_features, dtype=np.float32)
            dense[cols] = weight
            contrib = np.empty(self._nnz - lo + 1, dtype=np.float32)
            np.multiply(self._tf[lo : self._nnz], dense[self._cols[lo : self._nnz]], out=contrib[:-1])
            contrib[-1] = 0.0
            starts = self._ptr[indexed:-1] - lo
            tail = np.add.reduceat(contrib, starts).astype(np.float64)
            tail[starts == self._ptr[indexed + 1 :] - lo] = 0.0  # a contact with no features (reduceat gives the next row's first entry)
            dots[indexed:] = tail
        norms = self._row_norms()
        with np.errstate(divide="ignore", invalid="ignore"):
            sims = np.where(norms > 0, dots / norms, 0.0)
        return np.asarray(sims)

    def _index_rows(self) -> int:
        """How many of the oldest rows the inverted index covers (rebuilding it when it lags too far)."""
        n = self._n_rows
        if n - self._indexed > max(256, n // 10) or self._indexed > n:
            order = np.argsort(self._cols[: self._nnz], kind="stable")
            rows = np.repeat(np.arange(n, dtype=np.int32), np.diff(self._ptr))
            counts = np.bincount(self._cols[: self._nnz], minlength=self.n_features)
            ptr = np.zeros(self.n_features + 1, dtype=np.int64)
            np.cumsum(counts, out=ptr[1:])
            self._postings = (ptr, rows[order], self._tf[: self._nnz][order])
            self._indexed = n
        return self._indexed

    def _votes(self, text: str, intent: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(query features, similarities, nearest rows, their vote weights)."""
        cols, tf = self._features(text)
        sims = self._similarities(cols, tf)
        n = sims.shape[0]
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return cols, sims, empty, np.zeros(0)
        order = np.lexsort((np.arange(n), -sims))  # most similar first, older first among ties
        near = order[: self.k]
        near = near[sims[near] > 0.0]
        weight = np.exp((sims[near] - 1.0) / self.temperature)
        weight = np.where(self._row_ok[near], weight, weight * self.unresolved_weight)
        q_intent = self._intent_index.get(intent) if intent else None
        if q_intent is not None and self.intent_boost:
            weight = np.where(self._row_intent[near] == q_intent, weight * (1.0 + self.intent_boost), weight)
        return cols, sims, near, weight

    def _doc_scores(self, near: np.ndarray, weight: np.ndarray) -> dict[int, float]:
        scores: dict[int, float] = {}
        for r, w in zip(near.tolist(), weight.tolist(), strict=True):
            d = int(self._row_doc[r])
            scores[d] = scores.get(d, 0.0) + w
        return scores

    @staticmethod
    def _top(scores: dict[int, float], k: int) -> list[int]:
        return [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]

    # ------------------------------------------------------------------ API
    def predict_ranked(self, text: str, k: int = 3, intent: str | None = None) -> list[tuple[str, float]]:
        """Top-``k`` documents with their vote shares, best first (``[]`` before any learning)."""
        _, _, near, weight = self._votes(text, intent)
        scores = self._doc_scores(near, weight)
        total = sum(scores.values()) or 1.0
        return [(self.documents[d], scores[d] / total) for d in self._top(scores, k)]

    def rank(self, text: str, k: int = 3, intent: str | None = None, n_words: int = 5) -> list[Suggestion]:
        """Top-``k`` documents for an open contact, each with why (:class:`Suggestion`)."""
        _, sims, near, weight = self._votes(text, intent)
        scores = self._doc_scores(near, weight)
        total = sum(scores.values()) or 1.0
        mask = self.n_features - 1
        words: dict[int, str] = {}
        for tok in tokenize(text):
            if tok not in _STOP and len(tok) > 1 and tok.strip("0"):  # no stop words, letters, numbers
                words.setdefault(_word_hash(tok, mask), tok)
        buckets = np.fromiter(words, dtype=np.int32, count=len(words))
        idf = self._idf(buckets) if buckets.size else np.zeros(0)
        specificity = dict(zip(buckets.tolist(), idf.tolist(), strict=True))
        out = []
        for d in self._top(scores, k):
            rows = near[self._row_doc[near] == d]
            found: set[int] = set()
            for r in rows.tolist():
                found.update(np.intersect1d(self._cols[self._ptr[r] : self._ptr[r + 1]], buckets).tolist())
            shown = sorted(found, key=lambda b: (-specificity[b], words[b]))[:n_words]
            intents = sorted({self.intents[i] for i in self._row_intent[rows].tolist() if i >= 0})
            out.append(Suggestion(
                document=self.documents[d], score=round(scores[d] / total, 4), similar=int(rows.size),
                similarity=round(float(sims[rows].max()), 4), words=[words[b] for b in shown], intents=intents,
                uses=int(self._uses[d]), resolved=int(self._resolved[d]),
            ))
        return out

    def learn_one(self, text: str, document: str, intent: str | None = None, resolved: bool = True) -> None:
        """Remember one completed contact: its words, the document used, its intent, its outcome."""
        document = str(document)
        if not document:
            raise ValueError("document must be a non-empty string")
        d = self._doc_index.get(document)
        if d is None:
            d = len(self.documents)
            self.documents.append(document)
            self._doc_index[document] = d
            self._uses = np.append(self._uses, 0)
            self._resolved = np.append(self._resolved, 0)
        self._uses[d] += 1
        self._resolved[d] += int(bool(resolved))
        i = -1
        if intent:
            i = self._intent_index.get(intent, -1)
            if i < 0:
                i = len(self.intents)
                self.intents.append(intent)
                self._intent_index[intent] = i
        cols, tf = self._features(text)
        if self._n_rows >= self.memory:
            self._forget(max(1, self.memory // 10))
        self._append(cols, tf, d, i, bool(resolved))
        self.n_learned += 1
        self.version += 1

    def test_then_learn(self, text: str, document: str, intent: str | None = None, resolved: bool = True, k: int = 3) -> list[str]:
        """The top-``k`` documents before learning this contact, then ``learn_one`` (progressive metrics)."""
        ranked = [doc for doc, _ in self.predict_ranked(text, k, intent)]
        self.learn_one(text, document, intent, resolved)
        return ranked

    def _append(self, cols: np.ndarray, tf: np.ndarray, d: int, i: int, ok: bool) -> None:
        need = self._nnz + cols.size
        if need > self._cols.shape[0]:
            cap = max(need, 2 * self._cols.shape[0], 4096)
            self._cols = np.resize(self._cols, cap)
            self._tf = np.resize(self._tf, cap)
        self._cols[self._nnz : need] = cols
        self._tf[self._nnz : need] = tf
        self._nnz = need
        self._ptr = np.append(self._ptr, need)
        self._row_doc = np.append(self._row_doc, np.int32(d))
        self._row_intent = np.append(self._row_intent, np.int32(i))
        self._row_ok = np.append(self._row_ok, ok)
        self._n_rows += 1
        self._df[cols] += 1  # cols are distinct (one entry per feature)

    def _forget(self, n: int) -> None:
        """Drop the ``n`` oldest remembered contacts (their document frequencies too)."""
        cut = int(self._ptr[n])
        np.subtract.at(self._df, self._cols[:cut], 1)
        self._cols = self._cols[cut : self._nnz].copy()
        self._tf = self._tf[cut : self._nnz].copy()
        self._nnz -= cut
        self._ptr = self._ptr[n:] - cut
        self._row_doc = self._row_doc[n:]
        self._row_intent = self._row_intent[n:]
        self._row_ok = self._row_ok[n:]
        self._n_rows -= n
        self._norms_at = -1
        self._postings, self._indexed = None, 0

    # ------------------------------------------------------------------ snapshots
    def snapshot_parts(self) -> SnapshotParts:
        """The snapshot's kind, version, metadata and arrays, copied."""
        arrays = {
            "cols": self._cols[: self._nnz], "tf": self._tf[: self._nnz], "ptr": self._ptr,
            "row_doc": self._row_doc, "row_intent": self._row_intent, "row_ok": self._row_ok,
            "uses": self._uses, "resolved": self._resolved,
        }
        meta = {
            "params": self._params(), "documents": list(self.documents), "intents": list(self.intents),
            "n_learned": self.n_learned,
        }
        return SNAPSHOT_KIND, self.version, meta, owned({k: np.array(v, copy=True) for k, v in arrays.items()})

    @classmethod
    def from_bytes(cls, data: bytes) -> KnowledgeModel:
        """Restore a snapshot written by :meth:`to_bytes` / :meth:`publish` (refuses anything else)."""
        snap = load_snapshot(data, kind=SNAPSHOT_KIND)
        model = cls(**dict(snap.meta["params"]))
        a = snap.arrays
        model.documents = [str(x) for x in snap.meta["documents"]]
        model._doc_index = {x: j for j, x in enumerate(model.documents)}
        model.intents = [str(x) for x in snap.meta["intents"]]
        model._intent_index = {x: j for j, x in enumerate(model.intents)}
        cols = a["cols"].astype(np.int32)
        ptr = a["ptr"].astype(np.int64)
        n_rows = ptr.shape[0] - 1
        if (cols.size and (cols.min() < 0 or cols.max() >= model.n_features)) or n_rows < 0 or int(ptr[-1]) != cols.size:
            raise ValueError("snapshot memory out of range")
        row_doc = a["row_doc"].astype(np.int32)
        if row_doc.size != n_rows or (row_doc.size and (row_doc.min() < 0 or row_doc.max() >= len(model.documents))):
            raise ValueError("snapshot rows name unknown documents")
        model._cols, model._tf, model._ptr, model._nnz, model._n_rows = cols, a["tf"].astype(np.float32), ptr, cols.size, n_rows
        model._row_doc = row_doc
        model._row_intent = a["row_intent"].astype(np.int32)
        model._row_ok = a["row_ok"].astype(bool)
        model._uses = a["uses"].astype(np.int64)
        model._resolved = a["resolved"].astype(np.int64)
        np.add.at(model._df, cols, 1)
        model.n_learned = int(snap.meta["n_learned"])
        model.version = snap.model_version
        return model


def resolution_rate(s: Suggestion) -> float:
    """How often the suggested document resolved the contacts it was used on.

    >>> resolution_rate(Suggestion("d", 1.0, 1, 0.9, [], [], uses=4, resolved=3))
    0.75
    """
    return s.resolved / s.uses if s.uses else math.nan
