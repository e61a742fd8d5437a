"""Next-best action: the bandit policy, its bounded exploration and propensities, and the off-policy estimators."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from cxstream.intel.nba import ACTIONS, MAX_EPSILON, NBAConfig, NBAPolicy
from cxstream.intel.ope import estimate
from cxstream.intel.snapshot import SnapshotError


def trained(epsilon: float = 0.1) -> NBAPolicy:
    """Retention works for risky customers, resolving works for calm ones (same intent)."""
    p = NBAPolicy(NBAConfig(epsilon=epsilon, dim=16, min_pulls=3))
    for _ in range(30):
        p.learn({"churn_risk": 1.0}, "cancel", "offer_retention", 1.0)
        p.learn({"churn_risk": 1.0}, "cancel", "resolve", 0.0)
        p.learn({"churn_risk": 0.0}, "cancel", "offer_retention", 0.0)
        p.learn({"churn_risk": 0.0}, "cancel", "resolve", 1.0)
    return p


def test_the_ranking_follows_the_context() -> None:
    p = trained()
    risky = p.rank({"churn_risk": 1.0}, "cancel")
    calm = p.rank({"churn_risk": 0.0}, "cancel")
    assert risky[0][0] == "offer_retention" and risky[0][4] == "intent"
    assert calm[0][0] == "resolve"
    assert risky[0][2] > 0.8 and calm[0][2] > 0.8


def test_an_untrained_policy_ranks_every_action_and_decides() -> None:
    d = NBAPolicy().decide({}, None, "d-0")
    assert sorted(r.action for r in d.ranked) == sorted(ACTIONS)
    assert d.propensity > 0 and d.intent == "-"


def test_a_new_intent_starts_from_the_actions_shared_model() -> None:
    p = trained()
    ranked = p.rank({"churn_risk": 1.0}, "never_seen")
    assert ranked[0][0] == "offer_retention" and ranked[0][4] == "shared"


def test_propensities_sum_to_one_and_match_the_choice_frequencies() -> None:
    p = trained(epsilon=0.3)
    counts: collections.Counter[str] = collections.Counter()
    n = 6000
    for i in range(n):
        d = p.decide({"churn_risk": 1.0}, "cancel", f"d-{i}")
        probs = {r.action: r.probability for r in d.ranked}
        assert sum(probs.values()) == pytest.approx(1.0)
        assert d.propensity == pytest.approx(probs[d.chosen])
        assert d.ranked[0].action == d.chosen
        assert d.explored == (d.chosen != d.greedy)
        counts[d.chosen] += 1
    for action, prob in probs.items():
        assert counts[action] / n == pytest.approx(prob, abs=0.02)


def test_exploration_is_bounded() -> None:
    with pytest.raises(ValueError):
        NBAConfig(epsilon=MAX_EPSILON + 0.01)
    p = NBAPolicy(NBAConfig(epsilon=MAX_EPSILON))
    probs = p.probabilities(list(ACTIONS))
    assert max(v for a, v in probs.items() if a != ACTIONS[0]) <= MAX_EPSILON / len(ACTIONS) + 1e-12
    greedy = NBAPolicy(NBAConfig(epsilon=0.0))
    assert all(greedy.decide({"x": 1.0}, "i", f"d{i}").propensity == 1.0 for i in range(50))


def test_decisions_are_deterministic_for_a_decision_id() -> None:
    p = trained(epsilon=0.5)
    assert [p.decide({"churn_risk": 1.0}, "cancel", f"d{i}").chosen for i in range(40)] == \
        [p.decide({"churn_risk": 1.0}, "cancel", f"d{i}").chosen for i in range(40)]


def test_the_best_document_of_an_intent_is_named_with_resolve() -> None:
    p = NBAPolicy(NBAConfig(dim=8))
    p.learn({}, "lost_card", "resolve", 0.0, document_id="kb-1")
    p.learn({}, "lost_card", "resolve", 1.0, document_id="kb-2")
    d = p.decide({}, "lost_card", "x")
    assert next(r for r in d.ranked if r.action == "resolve").document_id == "kb-2"
    assert all(r.document_id is None for r in d.ranked if r.action != "resolve")


def test_bad_input_is_refused() -> None:
    p = NBAPolicy()
    with pytest.raises(ValueError, match="unknown action"):
        p.learn({}, "i", "teleport", 1.0)
    with pytest.raises(ValueError, match="reward"):
        p.learn({}, "i", "resolve", 3.0)
    with pytest.raises(ValueError, match="no eligible"):
        p.rank({}, "i", [])


def test_snapshot_round_trip_and_clone() -> None:
    p = trained()
    p.learn({}, "cancel", "resolve", 1.0, document_id="kb-9")
    q = NBAPolicy.from_bytes(p.to_bytes())
    assert q.rank({"churn_risk": 1.0}, "cancel") == p.rank({"churn_risk": 1.0}, "cancel")
    assert q.documents == p.documents and q.n_learned == p.n_learned
    assert not p.clone().arms
    explore = NBAPolicy.from_bytes(p.to_bytes(), NBAConfig(epsilon=0.0))
    assert explore.config.epsilon == 0.0 and explore.config.dim == 16
    with pytest.raises(SnapshotError):
        NBAPolicy.from_bytes(b"not a snapshot")


def simulated(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """A logged bandit with a known answer: 3 actions, a binary context, Bernoulli rewards.

    Logging policy: P(a | x) known; target policy: deterministic "a = x + 1".
    """
    rng = np.random.default_rng(seed)
    mu = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.8]])  # mean reward by [x, a]
    logging = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])
    x = rng.integers(0, 2, n)
    a = np.array([rng.choice(3, p=logging[xi]) for xi in x])
    r = (rng.random(n) < mu[x, a]).astype(float)
    target = np.zeros((n, 3))
    target[np.arange(n), x + 1] = 1.0
    true_value = 0.5 * mu[0, 1] + 0.5 * mu[1, 2]  # 0.65
    return x, a, r, logging[x, a], target[np.arange(n), a], target, mu, np.float64(true_value)


def test_estimators_recover_a_known_policy_value() -> None:
    x, a, r, p, pi, target, mu, truth = simulated(20000, seed=1)
    wrong = np.full_like(mu, 0.5)  # a useless reward model: DR must still be right through the propensities
    for q in (mu, wrong):
        e = estimate(r, p, pi, q_logged=q[x, a], v_target=(target * q[x]).sum(axis=1), bootstrap=200, seed=3)
        for name in ("ips", "snips", "dr"):
            lo, hi = e[name]["ci"]
            assert lo <= truth <= hi, (name, e[name])
            assert e[name]["value"] == pytest.approx(truth, abs=0.03)
    assert e["logged_mean_reward"] == pytest.approx(float((np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]]) * mu).sum(1).mean()), abs=0.02)


def test_wrong_propensities_bias_ips_but_not_dr_with_a_right_reward_model() -> None:
    x, a, r, p, pi, target, mu, truth = simulated(20000, seed=2)
    bad_p = np.full_like(p, 1 / 3)  # pretending the logging was uniform
    ips = estimate(r, bad_p, pi, bootstrap=0)["ips"]["value"]
    dr = estimate(r, bad_p, pi, q_logged=mu[x, a], v_target=(target * mu[x]).sum(axis=1), bootstrap=0)["dr"]["value"]
    assert abs(ips - truth) > 0.1
    assert dr == pytest.approx(truth, abs=0.03)


def test_the_estimator_refuses_impossible_propensities() -> None:
    with pytest.raises(ValueError):
        estimate(np.ones(2), np.array([0.0, 0.5]), np.ones(2))
    with pytest.raises(ValueError):
        estimate(np.ones(2), np.ones(3), np.ones(2))


def test_eval_nba_on_a_small_incident_log_it_writes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The offline evaluation end to end on a log made here: escalating never pays, so the learned policy
    (trained on the tune part only) must beat the logging policy on the test part by every estimator."""
    import csv
    import gzip
    import random

    from cxstream.intel import nba_eval

    rng = random.Random(5)
    path = tmp_path / "incidents.csv.gz"
    cols = ["number", "incident_state", "reassignment_count", "reopen_count", "made_sla", "opened_at", "knowledge",
            "category", *nba_eval.CONTEXT]
    with gzip.open(path, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for i in range(600):
            cat = f"Category {rng.randint(1, 3)}"
            escalate = rng.random() < 0.5
            doc = not escalate and rng.random() < 0.3
            sla = rng.random() < (0.2 if escalate else 0.9)
            ctx = [f"Sub {rng.randint(1, 4)}", "Symptom 1", "2 - Medium", "2 - Medium", "3 - Moderate", "Location 1", "Phone"]
            opened = f"{1 + i // 48}/3/2016 {i % 24:02d}:{i % 60:02d}"
            base = [f"INC{i:07d}", "New", "0", "0", "true", opened, "false", cat, *ctx]
            end = [f"INC{i:07d}", "Closed", str(int(escalate)), "0", str(sla).lower(), opened, str(doc).lower(), cat, *ctx]
            w.writerow(base)
            w.writerow(end)
    out = nba_eval.run(path, None, epsilon=0.1, bootstrap=50, grid=[{"ridge": 1.0, "dim": 64, "min_pulls": 5}])
    test = out["test"]
    assert test["n"] == 180 and out["tune"]["n"] == 420
    learned = test["policies"]["learned_epsilon_0.1"]
    for name in ("ips", "snips", "dr"):
        assert learned[name]["value"] > learned["logged_mean_reward"] + 0.1, (name, learned)
    assert out["policy"]["ridge"] == 1.0 and "escalate_tier" not in {k for k, v in test["learned_greedy_actions"].items() if v > 90}
    assert nba_eval.main(["--data", str(tmp_path / "nowhere")]) == 2
