"""IntentModel behaviour on small synthetic fixtures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cxstream.bench.snapshots import dense_layout
from cxstream.intel.calibration import OnlineCalibrator
from cxstream.intel.drift import ErrorDriftMonitor
from cxstream.intel.intent import UNKNOWN, IntentModel
from cxstream.intel.snapshot import SnapshotError, snapshot_body


def _accuracy(model: IntentModel, rows: list[tuple[str, str]]) -> float:
    return sum(model.predict_detail(t).top_label == y for t, y in rows) / len(rows)


def test_learns_held_out_messages(make_intent_rows: Any) -> None:
    train, test = make_intent_rows(160, seed=1), make_intent_rows(80, seed=2)
    model = IntentModel(n_features=1 << 14)
    assert _accuracy(model, test) < 0.5  # untrained: nothing to predict yet
    model.learn_many(train)
    assert _accuracy(model, test) >= 0.95
    label, conf = model.predict_one("my visa card has not arrived yet")
    assert label == "card_arrival"
    assert 0.5 <= conf <= 1.0


def test_new_label_can_appear_any_time(make_intent_rows: Any) -> None:
    model = IntentModel(n_features=1 << 14)
    model.learn_many(make_intent_rows(120, seed=1, labels=["card_arrival", "refund"]))
    assert "close_account" not in model.predict_proba_one("close my account")
    late = make_intent_rows(60, seed=4, labels=["close_account", "card_arrival", "refund"])
    model.learn_many(late)
    assert model.predict_detail("please close my joint account").top_label == "close_account"
    proba = model.predict_proba_one("please close my joint account")
    assert set(proba) == {"card_arrival", "refund", "close_account"}
    assert abs(sum(proba.values()) - 1.0) < 1e-6


def test_many_labels_grow_capacity() -> None:
    words = [
        "apple",
        "bridge",
        "cactus",
        "dolphin",
        "engine",
        "falcon",
        "guitar",
        "harbor",
        "igloo",
        "jungle",
        "kettle",
        "lemon",
        "magnet",
        "nectar",
        "orbit",
        "pepper",
        "quartz",
        "rocket",
        "saddle",
        "tunnel",
    ]
    model = IntentModel(n_features=1 << 14)
    for _ in range(2):
        for i, word in enumerate(words):  # beyond the first capacity block of 8 columns
            model.learn_one(f"question about the {word}", f"label_{i}")
    assert len(model.labels) == 20
    assert model.predict_detail("the rocket question").top_label == "label_17"


def test_unknown_when_unsure(make_intent_rows: Any) -> None:
    model = IntentModel(n_features=1 << 14, unknown_threshold=0.99)
    model.learn_many(make_intent_rows(40, seed=1))
    label, conf = model.predict_one("zzqx vrbl plonk")
    assert label == UNKNOWN
    assert 0.0 <= conf < 0.99
    assert model.predict_detail("zzqx vrbl plonk").top_label != UNKNOWN


def test_calibration_learns_from_own_mistakes() -> None:
    # labels are random w.r.t. text: the model cannot be right more than ~1/4 of the time,
    # so the calibrated confidence must fall well below the raw top probability.
    rng = np.random.default_rng(0)
    model = IntentModel(n_features=1 << 10)
    labels = ["a", "b", "c", "d"]
    for i in range(800):
        model.learn_one(f"same words every time {i % 3}", labels[int(rng.integers(4))])
    detail = model.predict_detail("same words every time 1")
    assert detail.confidence < 0.45
    assert model.predict_one("same words every time 1")[0] == UNKNOWN


def test_drift_flag_raised_when_labels_change(make_intent_rows: Any) -> None:
    model = IntentModel(n_features=1 << 12)
    rows = make_intent_rows(400, seed=5)
    seen = []
    for text, label in rows:
        model.learn_one(text, label)
        seen.append(model.drift_detected)
    assert not any(seen[200:])  # stable concept: no drift at the end
    swap = {
        "card_arrival": "refund",
        "refund": "card_arrival",
        "close_account": "password_reset",
        "password_reset": "close_account",
    }
    flagged = False
    for text, label in rows[:300]:
        model.learn_one(text, swap[label])
        flagged = flagged or model.drift_detected
    assert flagged
    assert model.drift.n_detections >= 1


def test_snapshot_contains_no_training_text(make_intent_rows: Any) -> None:
    secret = "zanzibarquokka"  # a rare token with no reason to appear otherwise
    rows = [*make_intent_rows(80, seed=1), (f"my {secret} card never arrived", "card_arrival")]
    model = IntentModel(n_features=1 << 12)
    model.learn_many(rows)
    blob = model.to_bytes()
    body = snapshot_body(blob)  # look inside the compressed payload, not just the wrapper
    assert b"card_arrival" in body  # sanity: the decompressed body is readable
    for text, _ in rows:
        assert text.encode() not in body
        for word in text.split():
            if len(word) > 5 and word not in "|".join(model.labels):
                assert word.encode() not in body, word
    assert secret.encode() not in body


def test_from_bytes_rejects_other_kinds_and_garbage() -> None:
    import pickle

    with pytest.raises(SnapshotError):
        IntentModel.from_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(SnapshotError):
        IntentModel.from_bytes(b"CXSNAP\x01not zlib")
    from cxstream.intel.churn import ChurnModel

    with pytest.raises(SnapshotError):
        IntentModel.from_bytes(ChurnModel().to_bytes())


def test_encoder_head_used_and_required_on_restore(make_intent_rows: Any) -> None:
    def toy_encoder(text: str) -> np.ndarray:
        vec = np.zeros(8, dtype=np.float32)
        for word in text.split():
            vec[sum(map(ord, word)) % 8] += 1.0
        return vec

    model = IntentModel(n_features=1 << 12, encoder=toy_encoder, encoder_name="toy")
    model.learn_many(make_intent_rows(80, seed=1))
    blob = model.to_bytes()
    with pytest.raises(ValueError, match="encoder"):
        IntentModel.from_bytes(blob)
    restored = IntentModel.from_bytes(blob, encoder=toy_encoder)
    text = "reset the old password"
    assert restored.predict_one(text) == model.predict_one(text)
    plain = IntentModel(n_features=1 << 12)
    plain.learn_many(make_intent_rows(80, seed=1))
    assert plain.predict_proba_one(text) != model.predict_proba_one(text)


def test_rejects_bad_n_features() -> None:
    with pytest.raises(ValueError):
        IntentModel(n_features=1000)


def _toy_encoder(text: str) -> np.ndarray:
    vec = np.zeros(16, dtype=np.float32)
    for word in text.split():
        vec[sum(map(ord, word)) % 16] += 1.0
    return vec


def test_joint_encoder_mode_with_candidate_knn(make_intent_rows: Any) -> None:
    # the WordLlama configuration: embedding joined into the PA features, kNN over the
    # other heads' top candidate classes only
    model = IntentModel(
        n_features=1 << 12,
        encoder=_toy_encoder,
        encoder_name="toy",
        encoder_joint=1.0,
        knn_weight=1.5,
        knn_candidates=2,
    )
    model.learn_many(make_intent_rows(160, seed=1))
    assert _accuracy(model, make_intent_rows(60, seed=2)) >= 0.95
    text = "reset the old password"
    full = model.clone()
    assert full.knn_candidates == 2 and full.encoder_joint == 1.0
    restored = IntentModel.from_bytes(model.to_bytes(), encoder=_toy_encoder)
    assert restored.predict_proba_one(text) == model.predict_proba_one(text)
    assert restored.predict_one(text) == model.predict_one(text)
    # candidate-restricted kNN agrees with the full scan on the candidates' memories
    emb = model._embed(text)
    assert emb is not None
    k = len(model.labels)
    all_classes = np.arange(k)
    np.testing.assert_allclose(model._knn(emb, k, all_classes), model._knn(emb, k), rtol=1e-5)  # type: ignore[arg-type]


def test_nb_log_cache_matches_counts(make_intent_rows: Any) -> None:
    model = IntentModel(n_features=1 << 10)
    model.learn_many(make_intent_rows(50, seed=3))
    k = len(model.labels)
    np.testing.assert_allclose(model._nb_log[:, :k], np.log(model._nb[:, :k] + np.float32(model.alpha)), rtol=1e-6)
    restored = IntentModel.from_bytes(model.to_bytes())
    np.testing.assert_allclose(restored._nb_log[:, :k], model._nb_log[:, :k], rtol=1e-6)


@pytest.mark.parametrize("encoded", [False, True])
def test_test_then_learn_is_predict_then_learn(make_intent_rows: Any, encoded: bool) -> None:
    # the learner's one-pass test-then-train gives the prediction predict_detail gave before
    # the update, and leaves the model exactly as learn_one does
    extra: dict[str, Any] = {"encoder": _toy_encoder, "encoder_name": "toy", "knn_weight": 1.5} if encoded else {}
    two_calls, one_call = IntentModel(n_features=1 << 11, **extra), IntentModel(n_features=1 << 11, **extra)
    calibrator, drift = OnlineCalibrator(), ErrorDriftMonitor()  # fed independently, from the answers
    right = 0
    for text, label in make_intent_rows(120, seed=4):
        before = two_calls.predict_detail(text)
        two_calls.learn_one(text, label)
        got = one_call.test_then_learn(text, label)
        assert got == before
        assert one_call.drift_detected == two_calls.drift_detected
        if got.top_label != UNKNOWN:  # the first label has nothing to be compared with
            correct = got.top_label == label
            calibrator.update(got.raw_probability, correct)
            assert one_call.drift_detected == drift.update(0.0 if correct else 1.0)
            right += correct
    assert right > 60  # it did learn: most pre-update predictions were right
    assert one_call.to_bytes() == two_calls.to_bytes()
    for name, array in calibrator.state().items():
        np.testing.assert_array_equal(one_call.calibrator.state()[name], array)
    assert one_call.drift.error_rate == drift.error_rate


def test_a_format_1_snapshot_still_loads(make_intent_rows: Any) -> None:
    """Snapshots written before December 5, 2026 (zlib, format 1) restore the same model as the zstd ones written now."""
    import zlib

    from cxstream.intel.snapshot import FORMAT_ZLIB, MAGIC

    model = IntentModel(n_features=1 << 12)
    model.learn_many(make_intent_rows(80, seed=3))
    blob = model.to_bytes()
    old = MAGIC + bytes([FORMAT_ZLIB]) + zlib.compress(snapshot_body(blob), 6)
    texts = [text for text, _ in make_intent_rows(20, seed=4)]
    restored, from_old = IntentModel.from_bytes(blob), IntentModel.from_bytes(old)
    assert [restored.predict_one(t) for t in texts] == [from_old.predict_one(t) for t in texts] == [model.predict_one(t) for t in texts]
    assert from_old.labels == model.labels and from_old.n_learned == model.n_learned


def test_a_snapshot_holds_exactly_the_rows_learning_touched(make_intent_rows: Any) -> None:
    """The rows are tracked as the model learns instead of scanned for; they are the non-zero rows, and survive a restore."""
    import numpy as np

    model = IntentModel(n_features=1 << 12)
    model.learn_many(make_intent_rows(80, seed=5))
    k = len(model.labels)
    nonzero = np.flatnonzero(np.any(model._nb[:, :k] != 0, axis=1) | np.any(model._u[:, :k] != 0, axis=1))
    _, _, _, arrays = model.snapshot_parts()
    assert arrays["rows"].tolist() == nonzero.tolist()
    restored = IntentModel.from_bytes(model.to_bytes())
    assert restored.snapshot_parts()[3]["rows"].tolist() == nonzero.tolist()
    restored.learn_one("a brand new sentence about zanzibar", model.labels[0])
    assert len(restored.snapshot_parts()[3]["rows"]) > len(nonzero)


_HEADS: dict[str, dict[str, Any]] = {
    "hashed": {},
    "encoder": {"encoder": _toy_encoder, "encoder_name": "toy", "knn_weight": 1.5},
    "joint": {"encoder": _toy_encoder, "encoder_name": "toy", "encoder_joint": 1.0, "knn_weight": 1.5, "knn_candidates": 2},
}


def _many_label_rows(n: int, seed: int, labels: int = 40) -> list[tuple[str, str]]:
    """Rows of *labels* classes, each with words of its own (so most weights stay zero, as with Banking77)."""
    import random
    import string

    words = random.Random(0)
    vocab = [["".join(words.choices(string.ascii_lowercase, k=7)) for _ in range(4)] for _ in range(labels)]
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        i = rng.randrange(labels)
        rows.append((" ".join(rng.sample(vocab[i], 2)), f"label_{i}"))
    return rows


#: how the snapshot stores the weights: what the model writes for few classes (dense blocks) and
#: for many (their non-zero entries), and the dense blocks of many classes written before December 6
_LAYOUTS = ["few classes", "many classes", "before December 6"]


def _trained(make_intent_rows: Any, layout: str, **extra: Any) -> tuple[IntentModel, bytes, list[str]]:
    model = IntentModel(n_features=1 << 12, **extra)
    few = layout == "few classes"
    model.learn_many(make_intent_rows(160, seed=1) if few else _many_label_rows(400, seed=1))
    blob = dense_layout(model) if layout == "before December 6" else model.to_bytes()
    texts = [text for text, _ in (make_intent_rows(60, seed=2) if few else _many_label_rows(60, seed=2))]
    return model, blob, [*texts, "zanzibar quokka", "", "card"]


@pytest.mark.parametrize("heads", sorted(_HEADS))
@pytest.mark.parametrize("layout", _LAYOUTS)
def test_a_scoring_model_predicts_what_the_learning_model_predicts(make_intent_rows: Any, heads: str, layout: str) -> None:
    """The workers' scoring-only load gives the learner's predictions, from every snapshot layout."""
    from cxstream.intel.intent import ScoringIntentModel

    extra = _HEADS[heads]
    model, blob, texts = _trained(make_intent_rows, layout, **extra)
    encoder = extra.get("encoder")
    scoring = ScoringIntentModel.from_bytes(blob, encoder=encoder)
    assert scoring.labels == model.labels and scoring.version == model.version and scoring.n_learned == model.n_learned
    for text in texts:
        want, got = model.predict_detail(text), scoring.predict_detail(text)
        assert got.top_label == want.top_label and got.label == want.label, text
        assert got.raw_probability == pytest.approx(want.raw_probability, rel=1e-5, abs=1e-7)
        assert got.confidence == pytest.approx(want.confidence, rel=1e-5, abs=1e-7)
        p, q = model.predict_proba_one(text), scoring.predict_proba_one(text)
        assert list(p) == list(q)
        np.testing.assert_allclose(list(q.values()), list(p.values()), rtol=1e-4, atol=1e-7)
    # the learning restore of the same bytes is the model itself
    assert IntentModel.from_bytes(blob, encoder=encoder).to_bytes() == model.to_bytes()


@pytest.mark.parametrize("layout", ["few classes", "many classes"])
def test_a_snapshot_holds_the_weights_in_the_smaller_layout(make_intent_rows: Any, layout: str) -> None:
    """Since December 6 the weights of many classes are stored sparse: a fraction of the bytes a worker decompresses."""
    model, blob, _ = _trained(make_intent_rows, layout)
    _, _, _, arrays = model.snapshot_parts()
    k, rows = len(model.labels), arrays["rows"]
    w, u, nb = model._w[rows, :k], model._u[rows, :k], model._nb[rows, :k]
    if layout == "few classes":  # PA moves two of four classes per example: most weights are not zero
        assert "wu_gaps" not in arrays
        np.testing.assert_array_equal(arrays["w"], w)
        assert len(snapshot_body(blob)) <= len(snapshot_body(dense_layout(model)))
        return
    wu_at = np.cumsum(arrays["wu_gaps"])
    np.testing.assert_array_equal(wu_at, np.flatnonzero((w != 0) | (u != 0)))
    np.testing.assert_array_equal(arrays["w"], w.ravel()[wu_at])
    np.testing.assert_array_equal(np.cumsum(arrays["nb_gaps"]), np.flatnonzero(nb))
    np.testing.assert_array_equal(arrays["nb"], nb.ravel()[nb.ravel() != 0])
    assert len(snapshot_body(blob)) < 0.5 * len(snapshot_body(dense_layout(model)))


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("wu_gaps", lambda a: a * 1000),  # positions past the block
        ("wu_gaps", lambda a: a - 1),  # positions repeated
        ("nb_gaps", lambda a: a[:-1]),  # fewer positions than values
        ("nb_gaps", lambda a: a.astype(np.float32)),  # not positions
        ("rows", lambda a: a[::-1]),  # rows out of order
        ("nb_tot", lambda a: a[:-1]),  # a class short
    ],
)
def test_a_corrupt_sparse_snapshot_is_refused(make_intent_rows: Any, name: str, bad: Any) -> None:
    from cxstream.intel.intent import ScoringIntentModel
    from cxstream.intel.snapshot import dump_snapshot

    model = IntentModel(n_features=1 << 12)
    model.learn_many(_many_label_rows(200, seed=1))
    kind, version, meta, arrays = model.snapshot_parts()
    arrays[name] = bad(arrays[name])
    blob = dump_snapshot(kind, version, meta, arrays)
    with pytest.raises(ValueError):
        ScoringIntentModel.from_bytes(blob)
    if name != "nb_tot":  # the learning restore reads nb_tot into its own array, which refuses a short one too
        with pytest.raises(SnapshotError):
            IntentModel.from_bytes(blob)


def test_a_scoring_model_refuses_to_learn_or_publish(make_intent_rows: Any) -> None:
    from cxstream.intel.intent import ScoringIntentModel

    model = IntentModel(n_features=1 << 12)
    model.learn_many(make_intent_rows(40, seed=1))
    scoring = ScoringIntentModel.from_bytes(model.to_bytes())
    with pytest.raises(TypeError, match="scores only"):
        scoring.learn_one("where is my card", "card_arrival")
    with pytest.raises(TypeError, match="scores only"):
        scoring.publish()
