"""Off-policy evaluation: the value of a target policy estimated from another policy's logged decisions.

Each logged decision i has a reward ``r_i`` for the action the logging policy took, that
action's logging propensity ``p_i`` (known when the engine logged it, estimated otherwise)
and the target policy's probability ``π_i`` of the same action.  With ``w_i = π_i / p_i``:

* **IPS** (inverse propensity scoring): ``mean(w·r)``; unbiased when the propensities are right
  and every action the target takes had a non-zero logging probability;
* **SNIPS** (self-normalised IPS): ``sum(w·r) / sum(w)``; slightly biased, much lower variance;
* **DR** (doubly robust): ``mean(v̂_i + w_i·(r_i − q̂_i))`` with a reward model ``q̂`` (``q̂_i`` its
  prediction for the logged action, ``v̂_i`` the target policy's expected prediction); unbiased
  if either the propensities or the reward model are right.

Intervals are bootstrap percentiles over decisions (seeded).  Pure numpy, no I/O.

>>> import numpy as np
>>> e = estimate(np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.5] * 4), np.array([1.0, 0.0, 1.0, 0.0]),
...              q_logged=np.full(4, 0.5), v_target=np.full(4, 0.5), bootstrap=0)
>>> e["ips"]["value"], e["snips"]["value"], e["dr"]["value"]
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _values(r: np.ndarray, w: np.ndarray, q: np.ndarray | None, v: np.ndarray | None) -> dict[str, float]:
    out = {"ips": float(np.mean(w * r)), "snips": float(np.sum(w * r) / np.sum(w)) if np.sum(w) > 0 else float("nan")}
    if q is not None and v is not None:
        out["dr"] = float(np.mean(v + w * (r - q)))
    return out


def estimate(rewards: np.ndarray, propensities: np.ndarray, target_probs: np.ndarray, *,
             q_logged: np.ndarray | None = None, v_target: np.ndarray | None = None,
             bootstrap: int = 1000, level: float = 0.95, seed: int = 0, clip: float | None = None) -> dict[str, Any]:
    """IPS, SNIPS and (with a reward model) DR estimates of the target policy's mean reward, with intervals.

    *propensities*: logging probability of each logged action; *target_probs*: the target policy's
    probability of that same action; *clip*: cap on the weights (None: no clipping; clipping trades
    bias for variance and is reported).  Also reports the logged (on-policy) mean reward, the
    effective sample size of the weights and the largest weight.
    """
    r = np.asarray(rewards, dtype=np.float64)
    p = np.asarray(propensities, dtype=np.float64)
    pi = np.asarray(target_probs, dtype=np.float64)
    n = len(r)
    if not (len(p) == len(pi) == n) or n == 0:
        raise ValueError("rewards, propensities and target probabilities must have the same non-zero length")
    if np.any(p <= 0) or np.any(p > 1) or np.any(pi < 0) or np.any(pi > 1):
        raise ValueError("propensities must be in (0, 1] and target probabilities in [0, 1]")
    w = pi / p
    clipped = 0
    if clip is not None:
        clipped = int(np.sum(w > clip))
        w = np.minimum(w, clip)
    q = None if q_logged is None else np.asarray(q_logged, dtype=np.float64)
    v = None if v_target is None else np.asarray(v_target, dtype=np.float64)
    point = _values(r, w, q, v)
    out: dict[str, Any] = {
        name: {"value": round(val, 6)} for name, val in point.items()
    }
    out["logged_mean_reward"] = round(float(np.mean(r)), 6)
    out["n"] = n
    out["effective_sample_size"] = round(float(np.sum(w) ** 2 / np.sum(w * w)), 1) if np.any(w > 0) else 0.0
    out["max_weight"] = round(float(np.max(w)), 4)
    out["mean_weight"] = round(float(np.mean(w)), 4)  # about 1 when the propensities are right
    out["clipped_weights"] = clipped
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws: dict[str, list[float]] = {k: [] for k in [*point, "logged_mean_reward"]}
        for _ in range(bootstrap):
            i = rng.integers(0, n, n)
            resampled = _values(r[i], w[i], None if q is None else q[i], None if v is None else v[i])
            for k, val in resampled.items():
                draws[k].append(val)
            draws["logged_mean_reward"].append(float(np.mean(r[i])))
        lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
        for k, vals in draws.items():
            arr = np.asarray(vals)
            arr = arr[np.isfinite(arr)]
            ci = [round(float(np.percentile(arr, lo)), 6), round(float(np.percentile(arr, hi)), 6)]
            if k == "logged_mean_reward":
                out["logged_mean_reward_ci"] = ci
            else:
                out[k]["ci"] = ci
        out["interval"] = f"{level:.0%} bootstrap percentile, {bootstrap} resamples of decisions, seed {seed}"
    return out
