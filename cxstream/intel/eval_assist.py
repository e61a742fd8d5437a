"""``cxstream eval assist`` and ``cxstream eval assist-split``: suggested knowledge on real conversations.

Data: the IBM Twitter customer-care conversations (``twitter_customer_care_ibm/*.json``,
see its PROVENANCE.md), each ending with the help document the real agent sent.  One
example per conversation: the customer's turns (``client*`` speakers) joined, and the
``agentURL.doc_id`` as the document.  Examples are taken in time order
(``dialogHeader.conversationDateTime``, file order among equal times).

* On ``--data``: prequential (test-then-train) top-1 / top-3 of :class:`KnowledgeModel`, in order.
* With ``--test``: after learning all of ``--data``, top-1 / top-3 on ``--test``, against a batch
  baseline fitted on the same ``--data`` in the same run: scikit-learn's ``TfidfVectorizer``
  (its defaults) and cosine nearest neighbours, documents ranked by their nearest example.

>>> conv = {"dialogHeader": {"conversationDateTime": "2020-01-01T00:00:00Z"}, "agentURL": {"doc_id": "7"},
...         "dialogContent": [{"client": "ann", "message": "help"}, {"agent": "Brand", "message": "DM us"}]}
>>> examples_of([conv])
[Example(text='help', document='7', at='2020-01-01T00:00:00Z')]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cxstream.datasets import shared_data_dir
from cxstream.intel.assist import KnowledgeModel
from cxstream.intel.evaluate import emit

TWITTER_DEV = "twitter_customer_care_ibm/dev.json"


class Example(NamedTuple):
    text: str
    document: str
    at: str


def examples_of(conversations: Sequence[dict[str, Any]]) -> list[Example]:
    """One example per conversation with a document, in time order (stable)."""
    out: list[tuple[str, int, Example]] = []
    for i, conv in enumerate(conversations):
        if not isinstance(conv, dict):
            raise ValueError(f"conversation {i}: expected an object, got {type(conv).__name__}")
        doc = (conv.get("agentURL") or {}).get("doc_id")
        turns = conv.get("dialogContent")
        if doc in (None, "") or not isinstance(turns, list):
            raise ValueError(f"conversation {i}: needs agentURL.doc_id and a dialogContent list")
        text = "\n".join(
            str(t.get("message") or "") for t in turns if isinstance(t, dict) and any(k.startswith("client") for k in t)
        )
        at = str((conv.get("dialogHeader") or {}).get("conversationDateTime") or "")
        out.append((at, i, Example(text, str(doc), at)))
    out.sort(key=lambda e: (e[0], e[1]))
    return [e for _, _, e in out]


def read_conversations(path: str | Path) -> list[dict[str, Any]]:
    """The JSON list of conversations in *path* (the dataset's format)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of conversations")
    return data


def _hits(ranked: list[str], truth: str) -> tuple[int, int]:
    return int(ranked[:1] == [truth]), int(truth in ranked[:3])


def prequential(model: KnowledgeModel, examples: Sequence[Example], clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Test-then-train over *examples* in order: rank (top 3), then learn.

    >>> ex = [Example("reset my password", "pw", ""), Example("password reset please", "pw", "")]
    >>> r = prequential(KnowledgeModel(n_features=1 << 12), ex)
    >>> r["top1"], r["n"], r["seen_before"]
    (0.5, 2, 0.5)
    """
    t1 = t3 = seen = 0
    known: set[str] = set()
    rank_s = learn_s = 0.0
    cpu0 = time.process_time()
    for ex in examples:
        t = clock()
        ranked = [d for d, _ in model.predict_ranked(ex.text, 3)]
        rank_s += clock() - t
        a, b = _hits(ranked, ex.document)
        t1, t3 = t1 + a, t3 + b
        seen += ex.document in known
        known.add(ex.document)
        t = clock()
        model.learn_one(ex.text, ex.document)
        learn_s += clock() - t
    cpu_s = time.process_time() - cpu0
    n = max(1, len(examples))
    return {
        "n": len(examples),
        "top1": round(t1 / n, 4),
        "top3": round(t3 / n, 4),
        # the ceiling: a document never used before cannot be suggested
        "seen_before": round(seen / n, 4),
        "rank_us": round(rank_s / n * 1e6, 1),
        "learn_us": round(learn_s / n * 1e6, 1),
        "cpu_us_per_example": round(cpu_s / n * 1e6, 1),  # rank + learn, this process's CPU time (the machine may be shared)
    }


def tfidf_baseline(train: Sequence[Example], test: Sequence[Example]) -> tuple[list[list[str]], float, float]:
    """Batch TF-IDF (scikit-learn defaults) + cosine nearest neighbours fitted on *train*: for each
    *test* example the documents of its nearest training examples, best first (up to 3).

    Returns (rankings, fit seconds, rank seconds)."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
    except ImportError as exc:  # a dev dependency
        raise RuntimeError("the baseline needs scikit-learn (pip install -e '.[dev]')") from exc
    t0 = time.perf_counter()
    vec = TfidfVectorizer()
    x = vec.fit_transform([e.text for e in train])
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sims = (vec.transform([e.text for e in test]) @ x.T).toarray()  # rows are L2-normalised: cosine
    out = []
    for row in sims:
        ranked: list[str] = []
        for j in np.lexsort((np.arange(row.shape[0]), -row)).tolist():  # most similar first, older first among ties
            if train[j].document not in ranked:
                ranked.append(train[j].document)
                if len(ranked) == 3:
                    break
        out.append(ranked)
    return out, fit_s, time.perf_counter() - t0


def evaluate_assist(
    data: Sequence[Example], test: Sequence[Example] | None = None, model: KnowledgeModel | None = None
) -> dict[str, Any]:
    """Prequential figures on *data*; with *test*, held-out figures against the TF-IDF baseline.

    >>> tr = [Example("reset my password", "pw", ""), Example("refund my order", "refund", "")]
    >>> r = evaluate_assist(tr, [Example("password reset", "pw", "")])
    >>> r["top1"], r["baseline_top1"], r["n_train"], r["n_test"]
    (1.0, 1.0, 2, 1)
    """
    model = model if model is not None else KnowledgeModel()
    result: dict[str, Any] = {"task": "assist", "params": model._params()}
    result["prequential"] = prequential(model, data)
    result["n_train"] = len(data)
    result["n_documents"] = len(model.documents)
    result["snapshot_bytes"] = len(model.to_bytes())
    if test is None:
        return result
    t1 = t3 = 0
    latencies = []
    cpu0 = time.process_time()
    for ex in test:
        t = time.perf_counter()
        ranked = [d for d, _ in model.predict_ranked(ex.text, 3)]
        latencies.append(time.perf_counter() - t)
        a, b = _hits(ranked, ex.document)
        t1, t3 = t1 + a, t3 + b
    cpu_s = time.process_time() - cpu0
    explain = []
    for ex in test:
        t = time.perf_counter()
        model.rank(ex.text, 3)
        explain.append(time.perf_counter() - t)
    base, fit_s, base_s = tfidf_baseline(data, test)
    b1 = sum(_hits(r, e.document)[0] for r, e in zip(base, test, strict=True))
    b3 = sum(_hits(r, e.document)[1] for r, e in zip(base, test, strict=True))
    n = max(1, len(test))
    known = {e.document for e in data}
    lat = np.asarray(latencies) * 1e6
    result.update({
        "n_test": len(test),
        "top1": round(t1 / n, 4),
        "top3": round(t3 / n, 4),
        "baseline": "sklearn TfidfVectorizer() + cosine nearest neighbours, fitted on --data",
        "baseline_top1": round(b1 / n, 4),
        "baseline_top3": round(b3 / n, 4),
        "test_seen_in_data": round(sum(e.document in known for e in test) / n, 4),
        "suggest_us_p50": round(float(np.percentile(lat, 50)), 1) if test else 0.0,
        "suggest_us_p99": round(float(np.percentile(lat, 99)), 1) if test else 0.0,
        "suggest_cpu_us_mean": round(cpu_s / n * 1e6, 1),
        "suggest_with_why_us_mean": round(float(np.mean(explain)) * 1e6, 1) if test else 0.0,
        "baseline_fit_s": round(fit_s, 4),
        "baseline_rank_us_mean": round(base_s / n * 1e6, 1),
    })
    return result


def split_examples(conversations: list[dict[str, Any]], fraction: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The first *fraction* of the conversations in time order, and the rest (both in time order).

    >>> convs = [{"dialogHeader": {"conversationDateTime": t}} for t in ("2020-03", "2020-01", "2020-02")]
    >>> [[c["dialogHeader"]["conversationDateTime"] for c in part] for part in split_examples(convs, 0.67)]
    [['2020-01', '2020-02'], ['2020-03']]
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError("the fraction must be in (0, 1)")
    order = sorted(range(len(conversations)), key=lambda i: (str(conversations[i].get("dialogHeader", {}).get("conversationDateTime", "")), i))
    cut = round(len(order) * fraction)
    return [conversations[i] for i in order[:cut]], [conversations[i] for i in order[cut:]]


def build_parser(command: str) -> argparse.ArgumentParser:
    if command == "assist-split":
        p = argparse.ArgumentParser(prog="cxstream eval assist-split", description="Split conversations in time order.")
        p.add_argument("--data", default=None, help=f"JSON conversations (default $CX_SHARED_DATA_DIR/{TWITTER_DEV})")
        p.add_argument("--fraction", type=float, default=0.7, help="the first part's share (default 0.7)")
        p.add_argument("--out", required=True, help="output folder: first.json and rest.json")
        return p
    p = argparse.ArgumentParser(prog="cxstream eval assist", description="Suggested knowledge: online ranking vs a TF-IDF baseline.")
    p.add_argument("--data", default=None, help=f"JSON conversations (default $CX_SHARED_DATA_DIR/{TWITTER_DEV})")
    p.add_argument("--test", default=None, help="JSON conversations scored after learning --data")
    p.add_argument("--json", dest="out", help="write the result JSON here")
    return p


def main(argv: Sequence[str]) -> int:
    """``main(["assist", ...])`` or ``main(["assist-split", ...])``; returns a process exit code."""
    command, *rest = list(argv) or ["assist"]
    args = build_parser(command).parse_args(rest)
    path = args.data or str(shared_data_dir() / TWITTER_DEV)
    try:
        if command == "assist-split":
            first, rest_part = split_examples(read_conversations(path), args.fraction)
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "first.json").write_text(json.dumps(first), encoding="utf-8")
            (out / "rest.json").write_text(json.dumps(rest_part), encoding="utf-8")
            emit({"first": str(out / "first.json"), "rest": str(out / "rest.json"), "n_first": len(first),
                   "n_rest": len(rest_part), "fraction": args.fraction, "source": str(path)}, None)
            return 0
        data = examples_of(read_conversations(path))
        test = examples_of(read_conversations(args.test)) if args.test else None
        result = evaluate_assist(data, test)
        result["data_file"] = str(path)
        if args.test:
            result["test_file"] = str(args.test)
        emit(result, args.out)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"cxstream eval {command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
