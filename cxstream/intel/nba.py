"""Next-best action: a contextual bandit with per-intent arms and bounded, logged exploration.

The policy ranks a fixed set of action kinds (:data:`ACTIONS`) for one decision (an open
contact, an outreach) from the decision's context features.  Each arm is an
(intent, action) pair with its own ridge regression of the reward on the hashed context
(disjoint linear arms, as in LinUCB, updated with Sherman-Morrison in O(d²)); an arm that
has learned fewer than ``min_pulls`` outcomes answers with the action's shared model
(learned from every intent), so a new intent starts from what the action does elsewhere.

Choosing is ε-greedy over that ranking, seeded by the decision id (a replay takes the same
decisions): the greedy action with probability ``1 - ε + ε/K``, every other eligible action
with ``ε/K``.  ``ε`` is bounded by :data:`MAX_EPSILON`, so no non-greedy action ever has a
probability above ``MAX_EPSILON / K``.  Every decision carries the **propensity** of the
action it chose (and the probability of each ranked action), which is what off-policy
evaluation (:mod:`cxstream.intel.ope`) needs.

Pure: no I/O, no clock, deterministic for a given input.

>>> p = NBAPolicy(NBAConfig(epsilon=0.1, dim=16))
>>> for _ in range(20):
...     p.learn({"churn_risk": 0.9}, "cancel", "offer_retention", 1.0)
...     p.learn({"churn_risk": 0.9}, "cancel", "call_back", 0.0)
>>> d = p.decide({"churn_risk": 0.9}, "cancel", "decision-1")
>>> d.ranked[0].action, round(d.ranked[0].probability, 3)
('offer_retention', 0.92)
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cxstream.intel.snapshot import SnapshotError, SnapshotParts, Snapshotted, load_snapshot, owned

SNAPSHOT_KIND = "cxstream.nba.v1"

#: The action kinds the policy ranks.  ``resolve`` means "resolve the contact's intent",
#: naming a knowledge document when the policy knows one that resolved this intent before.
ACTIONS: tuple[str, ...] = ("resolve", "offer_retention", "call_back", "escalate_tier", "vip_desk")

#: The hard cap on ε (a setting can lower it, never raise it past this).
MAX_EPSILON = 0.5

#: The intent of a decision whose intent is not known.
NO_INTENT = "-"

FeatureValue = float | int | bool | str | None


@dataclass(frozen=True)
class NBAConfig:
    """The policy's parameters.

    *epsilon*: exploration rate (0 = always greedy), at most :data:`MAX_EPSILON`;
    *alpha*: weight of the LinUCB confidence bonus in the ranking (0 = ranked by the mean estimate);
    *ridge*: the prior precision of each arm's weights; *dim*: hashed feature dimension;
    *min_pulls*: outcomes an (intent, action) arm needs before it answers instead of the action's shared model;
    *actions*: the action kinds (the engine's are :data:`ACTIONS`; an offline evaluation may name its own).
    """

    epsilon: float = 0.1
    alpha: float = 0.0
    ridge: float = 1.0
    dim: int = 32
    min_pulls: int = 5
    actions: tuple[str, ...] = ACTIONS

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= MAX_EPSILON:
            raise ValueError(f"epsilon must be within [0, {MAX_EPSILON}], got {self.epsilon}")
        if self.alpha < 0 or self.ridge <= 0 or self.dim < 2 or self.min_pulls < 0:
            raise ValueError("alpha >= 0, ridge > 0, dim >= 2 and min_pulls >= 0 are required")
        if not self.actions or len(set(self.actions)) != len(self.actions):
            raise ValueError("actions must be distinct and not empty")


@dataclass(frozen=True)
class RankedAction:
    """One action of a decision's ranking, with why it stands there."""

    action: str
    score: float  # the ranking score: estimated reward (+ alpha × confidence bonus)
    estimate: float  # estimated reward, 0..1
    probability: float  # the probability the policy gave this action in this decision
    pulls: int  # outcomes learned by the model that answered
    source: str  # "intent" (this intent's arm) | "shared" (the action's model over all intents)
    document_id: str | None = None


@dataclass(frozen=True)
class Decision:
    """One decision: the ranking (chosen action first), the chosen action and its propensity."""

    decision_id: str
    intent: str
    ranked: tuple[RankedAction, ...]
    chosen: str
    propensity: float
    greedy: str
    explored: bool
    epsilon: float


def hashed(features: Mapping[str, FeatureValue], dim: int) -> np.ndarray:
    """The features as a vector of *dim*: a bias at 0, numbers by name, strings by ``name=value`` (crc32 buckets).

    >>> float(hashed({"a": 2.0, "b": "x"}, 8).sum())
    4.0
    """
    x = np.zeros(dim, dtype=np.float64)
    x[0] = 1.0
    for name, value in features.items():
        if value is None:
            continue
        if isinstance(value, str):
            token, v = f"{name}={value}", 1.0
        else:
            token, v = name, float(value)
            if not math.isfinite(v):
                continue
        x[1 + zlib.crc32(token.encode()) % (dim - 1)] += v
    return x


@dataclass
class _Arm:
    a_inv: np.ndarray
    b: np.ndarray
    pulls: int = 0
    reward_sum: float = 0.0

    @classmethod
    def fresh(cls, dim: int, ridge: float) -> _Arm:
        return cls(np.eye(dim) / ridge, np.zeros(dim))

    def learn(self, x: np.ndarray, reward: float) -> None:
        ax = self.a_inv @ x
        self.a_inv -= np.outer(ax, ax) / (1.0 + float(x @ ax))
        self.b += reward * x
        self.pulls += 1
        self.reward_sum += reward

    def estimate(self, x: np.ndarray) -> tuple[float, float]:
        """(mean estimate, confidence width) at *x*."""
        ax = self.a_inv @ x
        return float(ax @ self.b), math.sqrt(max(0.0, float(x @ ax)))


@dataclass
class NBAPolicy(Snapshotted):
    """The bandit: per-(intent, action) arms, per-action shared arms, best documents per intent."""

    config: NBAConfig = field(default_factory=NBAConfig)
    arms: dict[str, _Arm] = field(default_factory=dict)  # "intent|action" and "*|action"
    documents: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # intent -> doc id -> [uses, reward sum]
    version: int = 0  # +1 per learned outcome and per publication, like the other models
    n_learned: int = 0

    def clone(self) -> NBAPolicy:
        """An untrained policy with the same parameters."""
        return NBAPolicy(self.config)

    def _arm(self, key: str) -> _Arm | None:
        return self.arms.get(key)

    def _answer(self, intent: str, action: str, x: np.ndarray) -> tuple[float, float, int, str]:
        own = self._arm(f"{intent}|{action}")
        if own is not None and own.pulls >= self.config.min_pulls:
            mean, width = own.estimate(x)
            return mean, width, own.pulls, "intent"
        shared = self._arm(f"*|{action}")
        if shared is None:
            return 0.0, math.sqrt(float(x @ x) / self.config.ridge), 0, "shared"
        mean, width = shared.estimate(x)
        return mean, width, shared.pulls, "shared"

    def best_document(self, intent: str) -> str | None:
        """The document that resolved this intent best (mean reward, then uses), if any was reported."""
        docs = self.documents.get(intent)
        if not docs:
            return None
        return max(sorted(docs), key=lambda d: (docs[d][1] / docs[d][0], docs[d][0]))

    def rank(self, features: Mapping[str, FeatureValue], intent: str | None,
             eligible: Sequence[str] | None = None) -> list[tuple[str, float, float, int, str]]:
        """(action, score, estimate, pulls, source) for each eligible action, best first (ties: the configured order)."""
        actions = self.config.actions
        eligible = actions if eligible is None else eligible
        if not eligible:
            raise ValueError("no eligible action")
        x = hashed(features, self.config.dim)
        key = intent or NO_INTENT
        out = []
        for action in eligible:
            if action not in actions:
                raise ValueError(f"unknown action {action!r}; one of {', '.join(actions)}")
            mean, width, pulls, source = self._answer(key, action, x)
            estimate = min(1.0, max(0.0, mean))
            out.append((action, mean + self.config.alpha * width, estimate, pulls, source))
        order = {a: i for i, a in enumerate(actions)}
        out.sort(key=lambda r: (-r[1], order[r[0]]))
        return out

    def probabilities(self, ranked_actions: Sequence[str]) -> dict[str, float]:
        """The policy's probability of each action, given its ranking (the first is greedy).

        >>> NBAPolicy(NBAConfig(epsilon=0.2)).probabilities(["a", "b"])
        {'a': 0.9, 'b': 0.1}
        """
        k = len(ranked_actions)
        eps = self.config.epsilon
        return {a: (1.0 - eps + eps / k) if i == 0 else eps / k for i, a in enumerate(ranked_actions)}

    def decide(self, features: Mapping[str, FeatureValue], intent: str | None, decision_id: str,
               eligible: Sequence[str] | None = None) -> Decision:
        """Rank, then choose ε-greedily with a generator seeded by *decision_id*."""
        ranked = self.rank(features, intent, eligible)
        names = [r[0] for r in ranked]
        probs = self.probabilities(names)
        rng = random.Random(zlib.crc32(decision_id.encode()))
        explored = rng.random() < self.config.epsilon
        chosen = names[rng.randrange(len(names))] if explored else names[0]
        key = intent or NO_INTENT
        doc = self.best_document(key)
        items = [
            RankedAction(action=a, score=round(s, 4), estimate=round(e, 4), probability=round(probs[a], 6),
                         pulls=n, source=src, document_id=doc if a == "resolve" else None)
            for a, s, e, n, src in ranked
        ]
        first = next(i for i in items if i.action == chosen)
        items = [first] + [i for i in items if i.action != chosen]  # the chosen action leads the list shown
        return Decision(
            decision_id=decision_id, intent=key, ranked=tuple(items), chosen=chosen, propensity=probs[chosen],
            greedy=names[0], explored=chosen != names[0], epsilon=self.config.epsilon,
        )

    def learn(self, features: Mapping[str, FeatureValue], intent: str | None, action: str, reward: float,
              document_id: str | None = None) -> None:
        """Learn one outcome (*reward* in 0..1) of *action* taken for *intent* in this context."""
        if action not in self.config.actions:
            raise ValueError(f"unknown action {action!r}")
        if not 0.0 <= reward <= 1.0 or math.isnan(reward):
            raise ValueError(f"reward must be within [0, 1], got {reward}")
        x = hashed(features, self.config.dim)
        key = intent or NO_INTENT
        for arm_key in (f"{key}|{action}", f"*|{action}"):
            arm = self.arms.get(arm_key)
            if arm is None:
                arm = self.arms[arm_key] = _Arm.fresh(self.config.dim, self.config.ridge)
            arm.learn(x, reward)
        if action == "resolve" and document_id:
            used = self.documents.setdefault(key, {}).setdefault(document_id, [0.0, 0.0])
            used[0] += 1
            used[1] += reward
        self.n_learned += 1
        self.version += 1

    def learn_one(self, x: tuple[Mapping[str, FeatureValue], str | None, str], y: float) -> None:
        """River-style: *x* is (features, intent, action taken), *y* the reward."""
        self.learn(x[0], x[1], x[2], y)

    # -- snapshots (pickle-free, :mod:`cxstream.intel.snapshot`) --------------------------------

    def snapshot_parts(self) -> SnapshotParts:
        keys = sorted(self.arms)
        d = self.config.dim
        a_inv = np.stack([self.arms[k].a_inv for k in keys]) if keys else np.zeros((0, d, d))
        b = np.stack([self.arms[k].b for k in keys]) if keys else np.zeros((0, d))
        meta = {
            "config": {"epsilon": self.config.epsilon, "alpha": self.config.alpha, "ridge": self.config.ridge,
                       "dim": d, "min_pulls": self.config.min_pulls, "actions": list(self.config.actions)},
            "arms": [[k, self.arms[k].pulls, self.arms[k].reward_sum] for k in keys],
            "documents": self.documents,
            "n_learned": self.n_learned,
        }
        return SNAPSHOT_KIND, self.version, meta, owned({"a_inv": a_inv, "b": b})

    @classmethod
    def from_bytes(cls, data: bytes, config: NBAConfig | None = None) -> NBAPolicy:
        """Restore a snapshot; *config* overrides its exploration settings (ε, α) but not its shape."""
        snap = load_snapshot(data, kind=SNAPSHOT_KIND)
        saved = NBAConfig(**{**snap.meta["config"], "actions": tuple(snap.meta["config"]["actions"])})
        if config is not None:
            saved = replace(saved, epsilon=config.epsilon, alpha=config.alpha, min_pulls=config.min_pulls)
        arms_meta = snap.meta["arms"]
        a_inv, b = snap.arrays["a_inv"], snap.arrays["b"]
        if a_inv.shape != (len(arms_meta), saved.dim, saved.dim) or b.shape != (len(arms_meta), saved.dim):
            raise SnapshotError("snapshot arrays do not match its arms")
        policy = cls(saved)
        for i, (key, pulls, reward_sum) in enumerate(arms_meta):
            policy.arms[str(key)] = _Arm(np.array(a_inv[i], dtype=np.float64), np.array(b[i], dtype=np.float64),
                                         int(pulls), float(reward_sum))
        policy.documents = {str(i): {str(d): [float(v[0]), float(v[1])] for d, v in docs.items()}
                            for i, docs in snap.meta["documents"].items()}
        policy.n_learned = int(snap.meta["n_learned"])
        policy.version = snap.model_version
        return policy
