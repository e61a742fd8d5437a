"""KnowledgeModel (suggested knowledge) and its evaluation: behaviour on small fixtures the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxstream.intel.assist import KnowledgeModel
from cxstream.intel.eval_assist import (
    Example,
    evaluate_assist,
    examples_of,
    main,
    prequential,
    split_examples,
    tfidf_baseline,
)
from cxstream.intel.snapshot import SnapshotError, dump_snapshot


def _model(**kw: object) -> KnowledgeModel:
    return KnowledgeModel(n_features=1 << 14, **kw)  # type: ignore[arg-type]


def test_ranks_the_document_of_similar_contacts_first() -> None:
    m = _model()
    m.learn_one("my video was blocked for copyright, it is fair use", "fair-use")
    m.learn_one("copyright claim on my video but it is my own music", "fair-use")
    m.learn_one("refund for the game I bought twice", "refunds")
    m.learn_one("charged twice for the same game, want my money back", "refunds")
    assert [s.document for s in m.rank("a copyright claim blocked my video")][:1] == ["fair-use"]
    assert [s.document for s in m.rank("I was charged twice, refund please")][:1] == ["refunds"]
    ranked = m.predict_ranked("copyright on my video", k=3)
    assert [d for d, _ in ranked] == ["fair-use", "refunds"]
    assert abs(sum(p for _, p in ranked) - 1.0) < 1e-9 and ranked[0][1] > ranked[1][1]


def test_why_names_this_contacts_words_the_uses_and_the_outcomes() -> None:
    m = _model()
    m.learn_one("the app crashes when I upload a video", "upload-help", intent="app_crash")
    m.learn_one("upload keeps failing and the app crashes", "upload-help", intent="app_crash", resolved=False)
    m.learn_one("how do I change my billing address", "billing")
    best = m.rank("the app crashes on every upload", k=1)[0]
    assert best.document == "upload-help"
    assert best.similar == 2 and best.uses == 2 and best.resolved == 1
    assert best.intents == ["app_crash"]
    assert {"crashes", "upload", "app"} <= set(best.words)
    assert not {"the", "on"} & set(best.words)  # stop words are no reason
    assert 0.0 < best.similarity <= 1.0 + 1e-9 and 0.0 < best.score <= 1.0


def test_a_document_that_did_not_resolve_ranks_below_one_that_did() -> None:
    m = _model()
    m.learn_one("cannot sign in to my account", "old-faq", resolved=False)
    m.learn_one("cannot sign in to my account", "new-guide", resolved=True)
    assert [s.document for s in m.rank("I cannot sign in")] == ["new-guide", "old-faq"]
    m2 = _model(unresolved_weight=1.0)  # without the outcome, the older one comes first (a tie)
    m2.learn_one("cannot sign in to my account", "old-faq", resolved=False)
    m2.learn_one("cannot sign in to my account", "new-guide", resolved=True)
    assert [s.document for s in m2.rank("I cannot sign in")] == ["old-faq", "new-guide"]


def test_the_open_contacts_intent_lifts_documents_of_that_intent() -> None:
    m = _model()
    m.learn_one("problem with my order", "late-delivery", intent="delivery")
    m.learn_one("problem with my order", "return-policy", intent="returns")
    assert m.rank("a problem with my order", intent="returns", k=1)[0].document == "return-policy"
    assert m.rank("a problem with my order", intent="delivery", k=1)[0].document == "late-delivery"
    assert m.rank("a problem with my order", intent="never-seen", k=1)[0].document == "late-delivery"


def test_an_identical_contact_has_cosine_one_and_unknown_words_rank_nothing() -> None:
    m = _model(norm_refresh=0.0)  # norms always exact
    texts = ["reset password link expired", "where is my parcel", "cancel subscription now", "parcel arrived damaged"]
    for i, t in enumerate(texts):
        m.learn_one(t, f"d{i}")
    for i, t in enumerate(texts):
        top = m.rank(t, k=1)[0]
        assert top.document == f"d{i}" and top.similarity == pytest.approx(1.0, abs=1e-4)
    assert m.rank("zzzz qqqq") == [] and m.rank("") == []


def test_memory_is_bounded_and_forgetting_takes_document_frequencies_along() -> None:
    m = _model(memory=20)
    texts = [f"message number {i} about topic {i % 7} and word{i}" for i in range(55)]
    for i, t in enumerate(texts):
        m.learn_one(t, f"doc{i % 5}")
    assert m._n_rows <= 20 and m.n_learned == 55
    fresh = _model(memory=10**6)
    kept = m._n_rows
    for i, t in enumerate(texts[-kept:]):
        fresh.learn_one(t, f"doc{(55 - kept + i) % 5}")
    assert np.array_equal(m._df, fresh._df)  # as if only the remembered contacts had been learned
    assert int(m._uses.sum()) == 55  # usage counts cover every contact learned


def test_snapshot_refuses_other_kinds_and_bad_rows() -> None:
    with pytest.raises(SnapshotError):
        KnowledgeModel.from_bytes(dump_snapshot("cxstream.intel.IntentModel", 1, {}, {}))
    m = _model()
    m.learn_one("hello there", "greeting")
    kind, version, meta, arrays = m.snapshot_parts()
    arrays["row_doc"] = np.array([5], dtype=np.int32)  # names a document the snapshot does not have
    with pytest.raises(ValueError, match="unknown documents"):
        KnowledgeModel.from_bytes(dump_snapshot(kind, version, meta, arrays))


def test_bad_parameters_and_documents_are_refused() -> None:
    with pytest.raises(ValueError):
        KnowledgeModel(n_features=1000)
    with pytest.raises(ValueError):
        KnowledgeModel(temperature=0)
    with pytest.raises(ValueError):
        _model().learn_one("text", "")


# ------------------------------------------------------------------ evaluation
def _conv(at: str, doc: str, *turns: tuple[str, str]) -> dict[str, object]:
    return {
        "dialogHeader": {"conversationDateTime": at, "company": "Brand"},
        "agentURL": {"doc_id": doc},
        "dialogContent": [{who: "x", "message": text} for who, text in turns],
    }


def test_examples_are_the_customers_turns_in_time_order() -> None:
    convs = [
        _conv("2020-02-01T00:00:00Z", "2", ("client", "second"), ("agent", "DM us"), ("client1", "me too")),
        _conv("2020-01-01T00:00:00Z", "1", ("client", "first")),
    ]
    assert examples_of(convs) == [
        Example("first", "1", "2020-01-01T00:00:00Z"),
        Example("second\nme too", "2", "2020-02-01T00:00:00Z"),
    ]
    with pytest.raises(ValueError, match="conversation 0"):
        examples_of([{"dialogContent": []}])
    first, rest = split_examples(convs, 0.5)
    assert [c["agentURL"]["doc_id"] for c in first + rest] == ["1", "2"]  # type: ignore[index]


def test_prequential_scores_before_learning() -> None:
    ex = [Example("reset password", "pw", ""), Example("refund order", "rf", ""), Example("password reset", "pw", ""),
          Example("order refund", "rf", "")]
    r = prequential(_model(), ex)
    assert (r["n"], r["top1"], r["top3"], r["seen_before"]) == (4, 0.5, 0.5, 0.5)


def test_baseline_ranks_documents_by_their_nearest_training_example() -> None:
    train = [Example("blue car", "a", ""), Example("red car", "b", ""), Example("blue sky", "c", ""), Example("blue car", "a", "")]
    ranked, _, _ = tfidf_baseline(train, [Example("blue car", "a", ""), Example("green", "z", "")])
    assert ranked[0][0] == "a" and len(ranked[0]) == 3 and len(set(ranked[0])) == 3
    assert ranked[1] == ["a", "b", "c"]  # no word in common: all ties, training order


def test_evaluate_reports_held_out_figures_against_the_baseline() -> None:
    data = [Example(f"{w} problem number {i}", w, "") for i in range(6) for w in ("login", "refund", "delivery")]
    test = [Example("a refund problem", "refund", ""), Example("login problem again", "login", ""), Example("new", "other", "")]
    r = evaluate_assist(data, test, _model())
    assert (r["n_train"], r["n_test"]) == (18, 3)
    assert r["top1"] == pytest.approx(2 / 3, abs=1e-4) and r["top3"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["test_seen_in_data"] == pytest.approx(2 / 3, abs=1e-4)
    for key in ("baseline_top1", "baseline_top3", "suggest_us_p50", "suggest_cpu_us_mean", "prequential"):
        assert key in r


def test_cli_writes_the_json_and_refuses_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    convs = [_conv(f"2020-01-{d:02d}T00:00:00Z", doc, ("client", text)) for d, (doc, text) in enumerate(
        [("pw", "reset my password"), ("rf", "refund my order"), ("pw", "password reset link"), ("rf", "order refund please")], start=1)]
    (tmp_path / "dev.json").write_text(json.dumps(convs))
    assert main(["assist-split", "--data", str(tmp_path / "dev.json"), "--fraction", "0.5", "--out", str(tmp_path / "s")]) == 0
    out = tmp_path / "r.json"
    assert main(["assist", "--data", str(tmp_path / "s/first.json"), "--test", str(tmp_path / "s/rest.json"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["n_train"], r["n_test"], r["top1"], r["top3"]) == (2, 2, 1.0, 1.0)
    assert {"baseline_top1", "baseline_top3"} <= set(r)
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    capsys.readouterr()
    assert main(["assist", "--data", str(tmp_path / "bad.json")]) == 2
    assert "expected a JSON list" in capsys.readouterr().err


def test_the_inverted_index_gives_the_same_similarities_as_a_scan() -> None:
    """Past 256 contacts the older rows are read through the inverted index, the newer ones by a scan."""
    m = _model(norm_refresh=0.0, memory=700)
    words = ["card", "refund", "parcel", "password", "video", "copyright", "bill", "charged", "twice", "account", "late", "app"]
    for i in range(900):  # past the memory: rows forgotten, the index rebuilt
        m.learn_one(" ".join(words[(i * j) % len(words)] for j in range(1, 2 + i % 5)) + f" n{i}", f"doc{i % 13}")
    query = "charged twice on my bill, refund the card"
    cols, tf = m._features(query)
    indexed = m._similarities(cols, tf)
    assert 0 < m._indexed <= m._n_rows <= 700
    scan = _model(norm_refresh=0.0, memory=700)
    scan._index_rows = lambda: 0  # type: ignore[method-assign]  # every row by the scan
    for i in range(900):
        scan.learn_one(" ".join(words[(i * j) % len(words)] for j in range(1, 2 + i % 5)) + f" n{i}", f"doc{i % 13}")
    assert np.allclose(indexed, scan._similarities(cols, tf), atol=1e-5)
    a, b = m.predict_ranked(query), scan.predict_ranked(query)
    assert [d for d, _ in a] == [d for d, _ in b] and [p for _, p in a] == pytest.approx([p for _, p in b])
