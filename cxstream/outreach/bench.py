"""``cxstream bench outreach``: the churn trigger and the guardrails on the real IBM Telco table.

The Telco CSV (7,043 customers, real churn labels) is replayed, in file order, as a stream
of customers arriving one every 6 minutes (with a seeded jitter) from Monday 4 March 2024
00:00 UTC (about 29 days of event time):

1. **Score** (progressive, test-then-train): each customer is scored by the
   :class:`~cxstream.intel.churn.ChurnModel` trained only on the customers *before* it;
   its own label is learnt after it was scored (``--label-delay N``: only after N more
   customers have arrived).  No customer's label is seen before its score.
2. **Outreach**: the score is the customer's ``churn_risk``; :func:`~cxstream.outreach.evaluate`
   runs at arrival and then on hourly ticks (as the agent's tick would) until the
   recommendation is sent, expires (churn expiry 3 days) or is dropped by a final guardrail.
3. **Guardrails** need attributes the Telco table does not have, so they are synthesised
   per customer from ``blake2b(seed, customerID, attribute)`` (independent of the row order
   and of the label; see :func:`synth`): time zone, preferred channel, channel consents,
   opt-out, erasure, an open contact at arrival, and an outreach sent in the previous 7 days.
4. **Closing the loop**: each sent outreach gets its real label back as an outcome
   (``churned`` or ``retained``, 14 days later) through :func:`~cxstream.outreach.record_outcome`;
   :class:`~cxstream.outreach.OutreachStats` must find the same precision as the bench.

The threshold is chosen on the **first half** of the stream (maximum F1 of the trigger
against the labels, grid 0.05..0.95 step 0.01) unless ``--threshold`` is given; the
headline figures are measured on the **second half** only (never used for the choice).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from cxstream.datasets import shared_data_dir
from cxstream.intel.churn import ChurnModel
from cxstream.intel.features import telco_features, telco_label
from cxstream.intel.metrics import exact_auc
from cxstream.outreach.config import OutreachConfig
from cxstream.outreach.decide import evaluate, record_outcome
from cxstream.outreach.guardrails import GUARDRAILS
from cxstream.outreach.state import new_state
from cxstream.outreach.stats import OutreachStats
from cxstream.outreach.view import ContextView
from cxstream.schemas import Identifiers, OutcomeEvent

TELCO_FILE = "telco_churn/WA_Fn-UseC_-Telco-Customer-Churn.csv"
START = 1709510400.0  # Monday 2024-03-04 00:00:00 UTC
SPACING_S = 360.0
TICK_S = 3600.0
DAY = 86400.0

#: Synthetic attribute rates (documented in docs/OUTREACH.md).
ZONES = (("America/Los_Angeles", 0.45), ("America/Denver", 0.10), ("America/Chicago", 0.20), ("America/New_York", 0.25))
NO_ZONE = 0.05  # no time zone in the context: the config default applies
CHANNELS = (("email", 0.45), ("sms", 0.25), ("voice", 0.20), ("app", 0.10))
CONSENT_PREFERRED = 0.85
CONSENT_OTHER = 0.35
OPTED_OUT = 0.03
ERASED = 0.005
OPEN_CONTACT = 0.06
OPEN_MIN_S, OPEN_MAX_S = 300.0, 3 * 3600.0
PRIOR_OUTREACH = 0.10
PRIOR_MAX_AGE_S = 7 * DAY
#: Thresholds of the sweep reported on the second half.
SWEEP: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)


def default_data_path() -> Path:
    """``$CX_SHARED_DATA_DIR/telco_churn/...`` (default ``../shared/data`` beside the repository)."""
    return shared_data_dir() / TELCO_FILE


def _u(seed: int, cid: str, what: str) -> float:
    h = hashlib.blake2b(f"{seed}\x1f{cid}\x1f{what}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def _pick(u: float, table: tuple[tuple[str, float], ...]) -> str:
    acc = 0.0
    for name, w in table:
        acc += w
        if u < acc:
            return name
    return table[-1][0]


class Synth(msgspec.Struct, frozen=True, kw_only=True):
    """The synthesised guardrail attributes of one customer."""

    timezone: str | None
    preferred_channel: str
    consent: dict[str, bool]
    erased: bool
    open_for_s: float  # 0: no open contact at arrival
    prior_outreach_age_s: float | None
    jitter_s: float


def synth(seed: int, cid: str) -> Synth:
    """Deterministic guardrail attributes for customer *cid* (see the rates above).

    >>> a, b = synth(7, "7590-VHVEG"), synth(7, "7590-VHVEG")
    >>> a == b, a.preferred_channel in ("email", "sms", "voice", "app")
    (True, True)
    """
    tz = None if _u(seed, cid, "tz?") < NO_ZONE else _pick(_u(seed, cid, "tz"), ZONES)
    pref = _pick(_u(seed, cid, "channel"), CHANNELS)
    consent = {ch: _u(seed, cid, f"consent:{ch}") < (CONSENT_PREFERRED if ch == pref else CONSENT_OTHER) for ch, _ in CHANNELS}
    if _u(seed, cid, "opt_out") < OPTED_OUT:
        consent["outreach"] = False
    open_for = OPEN_MIN_S + _u(seed, cid, "open_len") * (OPEN_MAX_S - OPEN_MIN_S) if _u(seed, cid, "open") < OPEN_CONTACT else 0.0
    prior = _u(seed, cid, "prior_age") * PRIOR_MAX_AGE_S if _u(seed, cid, "prior") < PRIOR_OUTREACH else None
    return Synth(
        timezone=tz, preferred_channel=pref, consent=consent, erased=_u(seed, cid, "erased") < ERASED,
        open_for_s=open_for, prior_outreach_age_s=prior, jitter_s=_u(seed, cid, "jitter") * SPACING_S,
    )


def score_stream(rows: Sequence[dict[str, str]], label_delay: int = 0) -> list[float]:
    """Progressive churn scores: row i scored by the model trained on rows < i - label_delay."""
    model = ChurnModel()
    scores: list[float] = []
    for i, row in enumerate(rows):
        scores.append(model.predict_proba_one(telco_features(row)))
        j = i - label_delay
        if j >= 0:
            model.learn_one(telco_features(rows[j]), telco_label(rows[j]))
    return scores


class Result(msgspec.Struct, kw_only=True):
    """What happened to one customer's churn outreach."""

    fired: bool = False
    sent: bool = False
    sent_at: float | None = None
    final_guardrail: str | None = None
    blocked: list[str] = []


def simulate_customer(
    cid: str, risk: float, arrival: float, s: Synth, config: OutreachConfig, stats: OutreachStats | None = None,
    label: bool | None = None, timings: list[float] | None = None,
) -> Result:
    """Run one customer through evaluate() at arrival and on hourly ticks until settled."""
    state = new_state(cid)
    if s.prior_outreach_age_s is not None:
        state = msgspec.structs.replace(state, sent=[arrival - s.prior_outreach_age_s])
    res = Result()
    now = arrival
    for _ in range(1000):
        open_now = 1 if s.open_for_s and now < arrival + s.open_for_s else 0
        view = ContextView(
            customer_id=cid, preferred_channel=s.preferred_channel, timezone=s.timezone, consent=s.consent,
            opted_out=s.consent.get("outreach") is False, erased=s.erased, open_contacts=open_now, churn_risk=risk,
        )
        t0 = time.perf_counter()
        state, events, sups = evaluate(state, view, None, now, config)
        if timings is not None:
            timings.append(time.perf_counter() - t0)
        if stats is not None:
            stats.observe(events, sups)
        for sp in sups:
            if sp.trigger != "churn_risk":
                continue
            res.fired = True
            if sp.cause == "blocked" and sp.guardrail not in res.blocked:
                res.blocked.append(sp.guardrail)
            if sp.final:
                res.final_guardrail = sp.guardrail
        for ev in events:
            if ev.reason == "churn_risk":
                res.fired = res.sent = True
                res.sent_at = now
                if stats is not None and label is not None:
                    outcome = OutcomeEvent(
                        event_id=f"{cid}-label", occurred_at=now + 14 * DAY, customer=Identifiers(customer_id=cid),
                        kind="churned" if label else "retained", outreach_id=ev.outreach_id,
                    )
                    state, attribution = record_outcome(state, outcome)
                    if attribution is not None:
                        stats.observe_attribution(attribution)
        if not state.pending:
            break
        now = (now // TICK_S + 1) * TICK_S
    return res


def _pr(pred: Sequence[bool], labels: Sequence[bool]) -> dict[str, Any]:
    tp = sum(1 for p, y in zip(pred, labels, strict=True) if p and y)
    fp = sum(1 for p, y in zip(pred, labels, strict=True) if p and not y)
    pos = sum(labels)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / pos if pos else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return {
        "precision": None if precision is None else round(precision, 4),
        "recall": None if recall is None else round(recall, 4),
        "f1": round(f1, 4),
        "count": tp + fp,
    }


def choose_threshold(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The threshold (grid 0.05..0.95 step 0.01) with the best F1 of ``score >= t``; ties: the higher.

    >>> choose_threshold([0.1, 0.2, 0.7, 0.9], [False, False, True, True])
    0.7
    """
    best_t, best_f = 0.5, -1.0
    for k in range(5, 96):
        t = k / 100
        f = _pr([s >= t for s in scores], labels)["f1"]
        if f >= best_f:
            best_t, best_f = t, f
    return best_t


def _section(idx: range, results: Sequence[Result], scores: Sequence[float], labels: Sequence[bool], thr: float) -> dict[str, Any]:
    lab = [labels[i] for i in idx]
    base = sum(lab) / len(lab) if lab else 0.0
    trig = _pr([scores[i] >= thr for i in idx], lab)
    sent = _pr([results[i].sent for i in idx], lab)
    suppressed = Counter(results[i].final_guardrail for i in idx if results[i].fired and not results[i].sent)
    blocked = Counter(g for i in idx for g in results[i].blocked)
    deferred = [i for i in idx if results[i].sent and results[i].blocked]
    return {
        "customers": len(idx),
        "base_churn_rate": round(base, 4),
        "precision": sent["precision"],
        "recall": sent["recall"],
        "lift": round(sent["precision"] / base, 4) if sent["precision"] is not None and base else None,
        "outreach_events": sent["count"],
        "suppressed": {g: suppressed.get(g, 0) for g in (*GUARDRAILS, "expired") if suppressed.get(g, 0) or g in GUARDRAILS},
        "blocked": {g: blocked.get(g, 0) for g in GUARDRAILS},
        "deferred_then_sent": len(deferred),
        "trigger": {"fired": trig["count"], "precision": trig["precision"], "recall": trig["recall"], "f1": trig["f1"],
                    "lift": round(trig["precision"] / base, 4) if trig["precision"] is not None and base else None},
    }


def run(
    rows: Sequence[dict[str, str]], *, seed: int = 7, threshold: float | None = None, label_delay: int = 0,
    sweep: Sequence[float] = SWEEP,
) -> dict[str, Any]:
    """The whole benchmark on Telco-style rows (pure apart from timing)."""
    t_start = time.perf_counter()
    labels = [telco_label(r) for r in rows]
    scores = score_stream(rows, label_delay)
    n = len(rows)
    half = n // 2
    first, second = range(half), range(half, n)
    chosen = threshold if threshold is not None else choose_threshold(scores[:half], labels[:half])
    base_cfg = OutreachConfig(default_timezone="America/Los_Angeles")
    cfg = msgspec.structs.replace(base_cfg, churn_threshold=chosen)
    synths = [synth(seed, r.get("customerID") or str(i)) for i, r in enumerate(rows)]
    arrivals = [START + i * SPACING_S + synths[i].jitter_s for i in range(n)]
    cids = [r.get("customerID") or str(i) for i, r in enumerate(rows)]

    stats = OutreachStats()
    timings: list[float] = []
    results = [
        simulate_customer(cids[i], scores[i], arrivals[i], synths[i], cfg, stats, labels[i], timings) for i in range(n)
    ]
    # every customer triggered (threshold 0): which would the guardrails let through?  For the sweep.
    everyone = msgspec.structs.replace(base_cfg, churn_threshold=0.0)
    reach = [simulate_customer(cids[i], scores[i], arrivals[i], synths[i], everyone) for i in range(n)]
    consistent = all((results[i].sent == (reach[i].sent and scores[i] >= chosen)) for i in range(n))

    sweep_rows = []
    lab2 = [labels[i] for i in second]
    for t in sweep:
        trig = _pr([scores[i] >= t for i in second], lab2)
        sent = _pr([scores[i] >= t and reach[i].sent for i in second], lab2)
        sweep_rows.append({
            "threshold": round(t, 4), "trigger_precision": trig["precision"], "trigger_recall": trig["recall"],
            "fired": trig["count"], "precision": sent["precision"], "recall": sent["recall"], "outreach_events": sent["count"],
        })
    held_out = _section(second, results, scores, labels, chosen)
    summary = stats.summary().get("churn_risk", {})
    out: dict[str, Any] = {
        "bench": "outreach",
        "trigger": "churn_risk",
        "evaluated_on": f"second half of the stream (customers {half}..{n - 1})"
        + ("; threshold given" if threshold is not None else "; threshold chosen on the first half"),
        **{k: held_out[k] for k in ("precision", "recall", "outreach_events", "suppressed")},
        "threshold": chosen,
        "threshold_selection": "given (--threshold)" if threshold is not None else "max F1 of the trigger on the first half, grid 0.05..0.95 step 0.01",
        "base_churn_rate": held_out["base_churn_rate"],
        "lift": held_out["lift"],
        "held_out": held_out,
        "first_half": _section(first, results, scores, labels, chosen),
        "full_stream": _section(range(n), results, scores, labels, chosen),
        "sweep_second_half": sweep_rows,
        "loop": {
            "sent": summary.get("sent"), "churned": summary.get("churned"), "retained": summary.get("retained"),
            "churned_rate": summary.get("churned_rate"),
            "matches_bench_precision": summary.get("churned_rate") == _section(range(n), results, scores, labels, chosen)["precision"],
        },
        "sweep_consistent_with_run": consistent,
        "model": {
            "scoring": "progressive test-then-train ChurnModel; a customer's label is learnt only after it was scored"
            + (f" and {label_delay} more customers arrived" if label_delay else ""),
            "label_delay": label_delay,
            "auc": round(exact_auc(labels, scores), 4),
            "auc_second_half": round(exact_auc(lab2, [scores[i] for i in second]), 4),
        },
        "synthetic": {
            "seed": seed, "arrival": "one customer every 6 min + jitter U(0, 6 min) from 2024-03-04T00:00Z; hourly ticks",
            "timezones": dict(ZONES), "no_timezone": NO_ZONE, "preferred_channel": dict(CHANNELS),
            "consent_preferred": CONSENT_PREFERRED, "consent_other": CONSENT_OTHER, "opted_out": OPTED_OUT, "erased": ERASED,
            "open_contact": OPEN_CONTACT, "open_contact_s": [OPEN_MIN_S, OPEN_MAX_S],
            "prior_outreach": PRIOR_OUTREACH, "prior_outreach_max_age_s": PRIOR_MAX_AGE_S,
        },
        "config": {
            "churn_threshold": chosen, "churn_hysteresis": cfg.churn_hysteresis, "cap": f"{cfg.cap_max} per {cfg.cap_window_s / DAY:g} days",
            "quiet_hours": f"{cfg.quiet_start}-{cfg.quiet_end} local", "default_timezone": cfg.default_timezone,
            "churn_expiry_s": cfg.trigger("churn_risk").expiry_s, "require_explicit_consent": cfg.require_explicit_consent,
        },
        "n": n,
        "evaluate_calls": len(timings),
        "evaluate_us_mean": round(sum(timings) / max(1, len(timings)) * 1e6, 1),
        "elapsed_s": round(time.perf_counter() - t_start, 2),
    }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cxstream bench outreach", description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--data", default=None, help=f"Telco CSV (default $CX_SHARED_DATA_DIR/{TELCO_FILE}, dir default ../shared/data)")
    p.add_argument("--json", dest="out", default=None, help="write the result JSON here")
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic guardrail attributes")
    p.add_argument("--threshold", type=float, default=None, help="churn threshold (default: chosen on the first half)")
    p.add_argument("--label-delay", type=int, default=0, help="learn a customer's label only after N more customers arrived")
    args = p.parse_args(list(argv) if argv is not None else None)
    path = Path(args.data) if args.data else default_data_path()
    if not path.is_file():
        print(f"cxstream bench outreach: no data file {path} (set --data or CX_SHARED_DATA_DIR)", file=sys.stderr)
        return 2
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    result = run(rows, seed=args.seed, threshold=args.threshold, label_delay=args.label_delay)
    result["data_file"] = str(path)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
