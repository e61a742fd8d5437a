"""``cxstream eval nba``: the next-best-action bandit evaluated off-policy on a real logged incident log.

Data: the ServiceNow incident-management event log (``itsm_servicenow``, 20,769 real incidents;
PROVENANCE.md).  One logged decision per incident:

* **context**: what was known when the incident was opened (its first event): category (the
  "intent"), subcategory, symptom, impact, urgency, priority, location, channel;
* **action**: what the desk did, from the incident's last event: ``escalate_tier`` when it was
  reassigned at least once (``reassignment_count`` > 0), else ``resolve_with_document`` when a
  knowledge article was used (``knowledge``), else ``resolve`` (first line, no document);
* **reward**: 1 when the incident was closed within its SLA (``made_sla``) and never reopened, else 0.

The logging policy (the company's people and rules) is unknown, so its **propensities are
estimated**: a multinomial logistic regression of the action on the opening context, fitted on
the tune part.  That assumes every factor that drove the action and also drives the reward is
in the opening context (no unmeasured confounding) and that every action had a chance in every
context (overlap; weights are reported, not clipped).  Neither can be checked from the data, and
the first is doubtful here: an incident is reassigned *because* first line could not solve it, so
the figures say what the estimators say under that assumption, not a causal effect.

Split by time: incidents opened in the first 70 % of the log are the tune part (the policy's
parameters are chosen there, on an inner time split), the last 30 % is touched once, at the end.

The other datasets cannot be used for this honestly (measured in :func:`callcentre_priority` and
stated in docs/INTEL.md): the bank call-centre's VIP handling (priority 2) is a fixed property of
the customer, so its propensity is 0 or 1 and no other policy can be evaluated on it; the Telco
table logs no action at all; every Twitter conversation ends with a document (one action).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from cxstream.datasets import shared_data_dir
from cxstream.intel.nba import NBAConfig, NBAPolicy, hashed
from cxstream.intel.ope import estimate

ITSM_FILE = "itsm_servicenow/incident_event_log.csv.gz"
CALLCENTRE_FILE = "callcenter_anonymous_bank/january_1999.txt"
ACTIONS = ("resolve", "resolve_with_document", "escalate_tier")
CONTEXT = ("subcategory", "u_symptom", "impact", "urgency", "priority", "location", "contact_type")
HASH_DIM = 512  # propensity and reward models' hashed one-hot dimension


@dataclass(frozen=True)
class Logged:
    """One logged decision."""

    number: str
    opened_at: float
    intent: str
    features: dict[str, str]
    action: int
    reward: float


def _time(s: str) -> float:
    return datetime.strptime(s, "%d/%m/%Y %H:%M").timestamp()


def read_itsm(path: str | Path) -> list[Logged]:
    """One decision per incident, ordered by opening time (ties: incident number)."""
    first: dict[str, dict[str, str]] = {}
    last: dict[str, dict[str, str]] = {}
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        assert isinstance(fh, io.TextIOBase)
        for row in csv.DictReader(fh):
            n = row["number"]
            first.setdefault(n, row)
            last[n] = row
    out = []
    for n, f in first.items():
        end = last[n]
        if end["incident_state"] != "Closed":  # the prefix's last incident may be cut off
            continue
        if int(end["reassignment_count"]) > 0:
            action = 2
        elif end["knowledge"] == "true":
            action = 1
        else:
            action = 0
        reward = float(end["made_sla"] == "true" and int(end["reopen_count"]) == 0)
        out.append(Logged(n, _time(f["opened_at"]), f["category"], {k: f[k] for k in CONTEXT}, action, reward))
    out.sort(key=lambda d: (d.opened_at, d.number))
    return out


def _design(rows: Sequence[Logged]) -> np.ndarray:
    return np.stack([hashed({"category": d.intent, **d.features}, HASH_DIM) for d in rows])


def fit_softmax(x: np.ndarray, y: np.ndarray, k: int, l2: float = 1.0, iters: int = 300) -> np.ndarray:
    """Multinomial logistic regression (L2, L-BFGS); returns the weights (d × k).

    >>> x = np.array([[1.0, 0.0], [1.0, 1.0]] * 20); y = np.array([0, 1] * 20)
    >>> w = fit_softmax(x, y, 2, l2=0.1); bool(predict_softmax(x[:2], w)[1, 1] > 0.9)
    True
    """
    from scipy.optimize import minimize

    n, d = x.shape
    onehot = np.eye(k)[y]

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(d, k)
        z = x @ w
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        p = np.exp(logp)
        value = -float((onehot * logp).sum()) / n + 0.5 * l2 * float((w[1:] ** 2).sum()) / n
        grad = x.T @ (p - onehot) / n
        grad[1:] += l2 * w[1:] / n
        return value, grad.ravel()

    res = minimize(loss, np.zeros(d * k), jac=True, method="L-BFGS-B", options={"maxiter": iters})
    return np.asarray(res.x).reshape(d, k)


def predict_softmax(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    z = x @ w
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@dataclass
class Models:
    """The nuisance models fitted on the tune part: logging propensities and the DR reward model."""

    propensity: np.ndarray  # d × K
    reward: list[np.ndarray]  # per action: d × 2

    @classmethod
    def fit(cls, rows: Sequence[Logged], l2: float = 10.0) -> Models:
        x = _design(rows)
        a = np.array([d.action for d in rows])
        r = np.array([int(d.reward) for d in rows])
        prop = fit_softmax(x, a, len(ACTIONS), l2)
        reward = [fit_softmax(x[a == k], r[a == k], 2, l2) for k in range(len(ACTIONS))]
        return cls(prop, reward)

    def propensities(self, x: np.ndarray) -> np.ndarray:
        return predict_softmax(x, self.propensity)

    def rewards(self, x: np.ndarray) -> np.ndarray:
        """Predicted reward of every action (n × K)."""
        return np.stack([predict_softmax(x, w)[:, 1] for w in self.reward], axis=1)


def train_policy(rows: Sequence[Logged], config: NBAConfig) -> NBAPolicy:
    """The bandit after learning the logged decisions in time order (what the learner would do on this log)."""
    policy = NBAPolicy(config)
    for d in rows:
        policy.learn(d.features, d.intent, ACTIONS[d.action], d.reward)
    return policy


def target_probabilities(policy: NBAPolicy, rows: Sequence[Logged], epsilon: float | None = None) -> np.ndarray:
    """The policy's probability of every action for each row (n × K), frozen (no learning meanwhile)."""
    eps = policy.config.epsilon if epsilon is None else epsilon
    out = np.zeros((len(rows), len(ACTIONS)))
    k = len(ACTIONS)
    for i, d in enumerate(rows):
        greedy = policy.rank(d.features, d.intent)[0][0]
        out[i, :] = eps / k
        out[i, ACTIONS.index(greedy)] += 1.0 - eps
    return out


@dataclass
class Nuisance:
    """Each row's estimated logging probabilities (n × K) and predicted rewards (n × K)."""

    propensities: np.ndarray
    rewards: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[Logged], models: Models) -> Nuisance:
        x = _design(rows)
        return cls(models.propensities(x), models.rewards(x))

    @classmethod
    def crossfit(cls, rows: Sequence[Logged], folds: int = 2) -> Nuisance:
        """Fitted on the other folds of the same part (rows interleaved into folds): the logging policy of
        *this* period, with no row predicted by a model that saw it."""
        x = _design(rows)
        k = len(ACTIONS)
        prop, rew = np.zeros((len(rows), k)), np.zeros((len(rows), k))
        fold = np.arange(len(rows)) % folds
        for f in range(folds):
            models = Models.fit([d for d, g in zip(rows, fold, strict=True) if g != f])
            prop[fold == f] = models.propensities(x[fold == f])
            rew[fold == f] = models.rewards(x[fold == f])
        return cls(prop, rew)


def evaluate(rows: Sequence[Logged], nuisance: Nuisance, probs: np.ndarray, *, bootstrap: int, seed: int) -> dict[str, Any]:
    """IPS / SNIPS / DR of a target policy given as its probabilities (n × K) on *rows*."""
    a = np.array([d.action for d in rows])
    r = np.array([d.reward for d in rows])
    idx = np.arange(len(rows))
    q = nuisance.rewards
    return estimate(r, nuisance.propensities[idx, a], probs[idx, a], q_logged=q[idx, a],
                    v_target=(probs * q).sum(axis=1), bootstrap=bootstrap, seed=seed)


GRID: list[dict[str, Any]] = [
    {"ridge": ridge, "dim": dim, "min_pulls": mp}
    for ridge in (1.0, 10.0, 100.0) for dim in (64, 256) for mp in (5, 50)
]


def tune(rows: Sequence[Logged], epsilon: float, seed: int,
         grid: Sequence[dict[str, Any]] = GRID) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pick ridge, dimension and min_pulls by the DR estimate on the last 30 % of the tune part."""
    cut = int(len(rows) * 0.7)
    fit_rows, val_rows = rows[:cut], rows[cut:]
    nuisance = Nuisance.crossfit(val_rows)
    results = []
    for params in grid:
        policy = train_policy(fit_rows, NBAConfig(epsilon=epsilon, alpha=0.0, actions=ACTIONS, **params))
        e = evaluate(val_rows, nuisance, target_probabilities(policy, val_rows), bootstrap=0, seed=seed)
        results.append({**params, "dr": e["dr"]["value"], "snips": e["snips"]["value"]})
    best = max(results, key=lambda res: res["dr"])
    return {k: best[k] for k in ("ridge", "dim", "min_pulls")}, results


def callcentre_priority(path: str | Path) -> dict[str, Any]:
    """Is VIP handling (priority 2) a decision with a propensity, or a fixed property of the customer?"""
    levels: dict[str, set[str]] = defaultdict(set)
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            cid = row["customer_id"].strip()
            if cid and cid != "0":
                levels[cid].add(row["priority"].strip())
    fixed = sum(1 for v in levels.values() if len(v) == 1)
    return {
        "identified_customers": len(levels),
        "customers_with_one_priority": fixed,
        "share_fixed": round(fixed / len(levels), 4) if levels else None,
    }


def run(itsm: str | Path, callcentre: str | Path | None, *, epsilon: float = 0.1, bootstrap: int = 1000,
        seed: int = 7, grid: Sequence[dict[str, Any]] = GRID) -> dict[str, Any]:
    started = time.time()
    rows = read_itsm(itsm)
    cut = int(len(rows) * 0.7)
    tune_rows, test_rows = rows[:cut], rows[cut:]
    best, tried = tune(tune_rows, epsilon, seed, grid)
    tune_models = Models.fit(tune_rows)
    policy = train_policy(tune_rows, NBAConfig(epsilon=epsilon, alpha=0.0, actions=ACTIONS, **best))
    k = len(ACTIONS)

    def report(part: Sequence[Logged]) -> dict[str, Any]:
        a = np.array([d.action for d in part])
        nuisance = Nuisance.crossfit(part)
        prop = nuisance.propensities
        learned = target_probabilities(policy, part)
        drifted = evaluate(part, Nuisance.of(part, tune_models), learned, bootstrap=0, seed=seed)
        return {
            "n": len(part),
            "opened": [datetime.fromtimestamp(part[0].opened_at).isoformat(), datetime.fromtimestamp(part[-1].opened_at).isoformat()],
            "logged_actions": {ACTIONS[i]: int(c) for i, c in sorted(Counter(a.tolist()).items())},
            "logged_reward_by_action": {ACTIONS[i]: round(float(np.mean([d.reward for d in part if d.action == i])), 4)
                                        for i in range(k) if any(d.action == i for d in part)},
            "propensity_of_logged_action": {
                "min": round(float(prop[np.arange(len(part)), a].min()), 5),
                "p05": round(float(np.percentile(prop[np.arange(len(part)), a], 5)), 5),
                "median": round(float(np.median(prop[np.arange(len(part)), a])), 5),
            },
            "policies": {
                f"learned_epsilon_{epsilon}": evaluate(part, nuisance, learned, bootstrap=bootstrap, seed=seed),
                "learned_greedy": evaluate(part, nuisance, target_probabilities(policy, part, 0.0), bootstrap=bootstrap, seed=seed),
                "uniform_random": evaluate(part, nuisance, np.full((len(part), k), 1.0 / k), bootstrap=bootstrap, seed=seed),
            },
            "with_propensities_fitted_on_the_tune_part": {
                "ips": drifted["ips"]["value"], "snips": drifted["snips"]["value"], "dr": drifted["dr"]["value"],
                "mean_weight": drifted["mean_weight"],
                "note": "the mean weight is about 1 when propensities describe the logging of this part; far from 1, they do not",
            },
            "learned_greedy_actions": dict(Counter(policy.rank(d.features, d.intent)[0][0] for d in part)),
        }

    out: dict[str, Any] = {
        "eval": "nba",
        "data": {"file": str(itsm), "decisions": len(rows), "unit": "one incident = one logged decision"},
        "actions": {
            "escalate_tier": "reassigned at least once (reassignment_count > 0)",
            "resolve_with_document": "not reassigned, a knowledge article was used (knowledge = true)",
            "resolve": "not reassigned, no knowledge article",
        },
        "reward": "1 if closed within SLA (made_sla) and never reopened (reopen_count = 0), else 0",
        "context": ["category (the intent: one arm per category and action)", *CONTEXT],
        "logging_propensities": (
            "estimated: multinomial logistic regression (L2 10, hashed one-hot context, dim "
            f"{HASH_DIM}), cross-fitted (2 interleaved folds) within each part, since the logging policy changed "
            "over time; assumes no unmeasured confounding and overlap; no weight clipping"
        ),
        "reward_model_for_dr": "logistic regression per action on the same features, cross-fitted the same way",
        "split": "by opening time: first 70 % tune, last 30 % test (untouched until the end)",
        "policy": {"kind": "ε-greedy over per-(intent, action) ridge arms (cxstream.intel.nba)", "epsilon": epsilon,
                   "alpha": 0.0, **best, "chosen_by": "highest DR value on the tune part's last 30 % (inner time split)"},
        "tuning_grid": tried,
        "tune": report(tune_rows),
        "test": report(test_rows),
        "not_evaluable": {
            "vip_desk (bank call-centre priority 2)": (
                "priority is a fixed property of the customer, so its logging propensity is 0 or 1 and "
                "no other policy can be evaluated on it"
            ),
            "offer_retention (Telco churn table)": "the table logs no action taken with the customer: nothing to evaluate",
            "call_back": "no dataset logs a callback decision with its outcome (the bank log's TT calls are the customer's request)",
            "document choice (Twitter care)": "every conversation ends with a document: a single action, no variation",
        },
        "seconds": None,
    }
    if callcentre is not None and Path(callcentre).exists():
        out["not_evaluable_measured"] = {"callcentre_priority": callcentre_priority(callcentre)}
    out["seconds"] = round(time.time() - started, 1)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxstream eval nba", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--data", default=None, help="shared datasets folder (default: CX_SHARED_DATA_DIR or ../shared/data)")
    p.add_argument("--epsilon", type=float, default=0.1, help="exploration rate of the evaluated policy (as live)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", default="bench/results/intel-nba.json", help="write the result here ('-': stdout only)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    base = Path(args.data) if args.data else shared_data_dir()
    itsm = base / ITSM_FILE
    if not itsm.exists():
        print(f"cxstream eval nba: error: no incident log at {itsm} (pass --data or set CX_SHARED_DATA_DIR)", file=sys.stderr)
        return 2
    try:
        result = run(itsm, base / CALLCENTRE_FILE, epsilon=args.epsilon, bootstrap=args.bootstrap, seed=args.seed)
    except (OSError, ValueError) as exc:
        print(f"cxstream eval nba: error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.json != "-":
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
