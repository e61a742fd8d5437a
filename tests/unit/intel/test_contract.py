"""River-style contract checks, run on every model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from cxstream.intel.assist import KnowledgeModel
from cxstream.intel.churn import ChurnModel
from cxstream.intel.intent import IntentModel
from cxstream.intel.nba import ACTIONS, NBAConfig, NBAPolicy
from cxstream.intel.snapshot import dump_snapshot


@dataclass
class Case:
    name: str
    factory: Callable[[], Any]
    rows: list[tuple[Any, Any]]
    predict: Callable[[Any, Any], Any]
    from_bytes: Callable[[bytes], Any]


def _nba_rows(n: int, seed: int) -> list[tuple[Any, Any]]:
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        features = {"churn_risk": round(rng.random(), 2), "channel": rng.choice(["chat", "voice"])}
        action = rng.choice(ACTIONS)
        rows.append(((features, rng.choice(["card", "refund", None]), action), float(rng.random() < 0.5)))
    return rows


@pytest.fixture(params=["intent", "churn", "assist", "nba"])
def case(request: pytest.FixtureRequest, make_intent_rows: Any, make_churn_rows: Any) -> Case:
    if request.param == "intent":
        return Case(
            "intent",
            lambda: IntentModel(n_features=1 << 12),
            make_intent_rows(120, seed=3),
            lambda m, x: (m.predict_one(x), m.predict_proba_one(x)),
            IntentModel.from_bytes,
        )
    if request.param == "assist":  # the documents that resolved similar contacts (intent rows: label = document)
        return Case(
            "assist",
            lambda: KnowledgeModel(n_features=1 << 12),
            make_intent_rows(120, seed=3),
            lambda m, x: m.rank(x),
            KnowledgeModel.from_bytes,
        )
    if request.param == "nba":
        return Case(
            "nba",
            lambda: NBAPolicy(NBAConfig(dim=16, min_pulls=3)),
            _nba_rows(120, 3),
            lambda m, x: m.rank(x[0], x[1]),
            NBAPolicy.from_bytes,
        )
    return Case(
        "churn",
        ChurnModel,
        make_churn_rows(300, 3),
        lambda m, x: m.predict_proba_one(x),
        ChurnModel.from_bytes,
    )


def _train(model: Any, rows: list[tuple[Any, Any]]) -> None:
    for x, y in rows:
        model.learn_one(x, y)


def test_predict_before_learn(case: Case) -> None:
    model = case.factory()
    x = case.rows[0][0]
    out = case.predict(model, x)
    assert out is not None
    assert model.version == 0


def test_learn_does_not_mutate_input(case: Case) -> None:
    model = case.factory()
    for x, y in case.rows[:50]:
        before = copy.deepcopy((x, y))
        model.learn_one(x, y)
        assert (x, y) == before


def test_learning_changes_predictions(case: Case) -> None:
    model = case.factory()
    x = case.rows[0][0]
    before = case.predict(model, x)
    _train(model, case.rows)
    assert case.predict(model, x) != before
    assert model.version == len(case.rows)


def test_snapshot_round_trip_identical_predictions(case: Case) -> None:
    model = case.factory()
    _train(model, case.rows)
    blob = model.to_bytes()
    restored = case.from_bytes(blob)
    assert restored.version == model.version
    for x, _ in case.rows[:40]:
        assert case.predict(restored, x) == case.predict(model, x)
    assert restored.to_bytes() == blob
    # the restored model keeps learning exactly like the original
    more = case.rows[:20]
    _train(model, more)
    _train(restored, more)
    assert restored.to_bytes() == model.to_bytes()


def test_snapshot_has_no_pickle(case: Case) -> None:
    model = case.factory()
    _train(model, case.rows)
    blob = model.to_bytes()
    assert blob.startswith(b"CXSNAP")
    assert b"\x80\x04\x95" not in blob[:16]  # not a pickle stream


def test_clone_starts_untrained(case: Case) -> None:
    model = case.factory()
    _train(model, case.rows)
    fresh = case.factory()
    clone = model.clone()
    assert clone.version == 0
    assert clone.to_bytes() == fresh.to_bytes()
    for x, _ in case.rows[:10]:
        assert case.predict(clone, x) == case.predict(fresh, x)
    _train(clone, case.rows[:5])  # learning on the clone leaves the original alone
    assert model.version == len(case.rows)


def test_publish_bumps_version(case: Case) -> None:
    model = case.factory()
    _train(model, case.rows[:10])
    blob = model.publish()
    assert model.version == 11
    assert case.from_bytes(blob).version == 11


def test_published_parts_are_a_copy_that_later_learning_does_not_change(case: Case) -> None:
    """The learner serialises publish_parts() in a thread while the model goes on learning."""
    model = case.factory()
    _train(model, case.rows[:40])
    parts = model.publish_parts()
    expected = model.to_bytes()  # the state at publication
    _train(model, case.rows[40:])  # new labels (and, for intent, new label columns) meanwhile
    blob = dump_snapshot(*parts)
    assert blob == expected and blob != model.to_bytes()
    restored = case.from_bytes(blob)
    assert restored.version == 41
    for x, _ in case.rows[:10]:
        assert case.predict(restored, x) == case.predict(case.from_bytes(expected), x)


def test_deterministic(case: Case) -> None:
    a, b = case.factory(), case.factory()
    _train(a, case.rows)
    _train(b, case.rows)
    assert a.to_bytes() == b.to_bytes()
