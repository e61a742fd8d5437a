"""Micro-benchmark of the pure router core: ``Router.apply`` per input, ``to_state``, ``from_state``.

    .venv/bin/python bench/routing/micro.py --json bench/results/routing-micro.json

For each scenario (200 and 1,000 advisors, plus 200 advisors with a 20,000-id dedupe window) a
seeded closed-loop driver records a stream of router inputs the way the engine would see them:
advisor logins with skills/languages/capacity (as ``cxstream/bench/workload.py`` builds them),
contact requests on every channel (skills, languages, priorities, tiers, churn, sticky last
advisors), desktops answering offers (accept, reject, no answer), completions, wrap-up, breaks,
logouts, transfers, abandonments, closes of finished contacts, redeliveries and a ``RouterTick``
every second of event time.  The arrival rate swings between ~75 % and ~110 % of the roster's
capacity, so queues build up and drain.  The recorded stream is then replayed into a fresh
router, timing every ``apply``; ``to_state`` is timed (and its size taken) every
``--state-every`` inputs and ``from_state`` every ``--restore-every`` inputs.

"before" is the routing core of ``--baseline`` (a git revision, extracted with ``git archive``
into a temporary directory and run in a subprocess); "after" is the working tree.  Both replay
the same stream (it is recorded by each side's own router; the SHA-256 of all outputs is
reported, and must be equal).  ``--no-baseline`` runs the working tree only;
``--src DIR`` runs the tree rooted at DIR (a directory holding a ``cxstream`` package).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import heapq
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: The commit before the indexed router (issue 7): the default "before".
BASELINE = "2cb8579"

SKILLS = ("billing", "card_issue", "tech_support", "cancel_service", "payments", "fraud")
LANGUAGES = ("en", "en", "en", "en", "fr", "de")
CONTACT_CHANNELS = (("voice", 0.25), ("chat", 0.35), ("email", 0.15), ("sms", 0.1), ("social", 0.05), ("app", 0.1))
#: mean handle time per channel, seconds
HANDLE_S = {"voice": 180.0, "chat": 240.0, "email": 120.0, "sms": 150.0, "social": 150.0, "app": 240.0}
#: advisor-seconds one contact of the channel uses (handle time / capacity share)
FULL = {"voice": 1, "chat": 3, "email": 5, "sms": 3, "social": 3, "app": 3, "web": 3}
TEAMS = (
    ("blended", 0.4, FULL),
    ("voice", 0.3, {"voice": 1}),
    ("digital", 0.3, {"chat": 3, "email": 5, "sms": 3, "social": 3, "app": 3, "web": 3}),
)

SCENARIOS: dict[str, dict[str, Any]] = {
    "200_advisors": {"advisors": 200, "inputs": 10_000, "dedupe_window": None},
    "1000_advisors": {"advisors": 1000, "inputs": 20_000, "dedupe_window": None},
    "200_advisors_dedupe_20000": {"advisors": 200, "inputs": 24_000, "dedupe_window": 20_000},
}


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    x = rng.random() * sum(w for _, w in weighted)
    for v, w in weighted:
        x -= w
        if x < 0:
            return v
    return weighted[-1][0]


def record_stream(advisors: int, n_inputs: int, seed: int, dedupe_window: int | None) -> list[Any]:
    """Drive a router with a seeded population of customers and desktops; return its inputs."""
    from cxstream.routing import Router, RoutingConfig
    from cxstream.schemas import AdvisorEvent, Assignment, ContactRequest, ContactUpdate, RouterTick

    cfg = RoutingConfig() if dedupe_window is None else RoutingConfig(dedupe_window=dedupe_window)
    router = Router(group="default", config=cfg)
    rng = random.Random(seed)
    roster = [f"adv-{a:04d}" for a in range(advisors)]
    teams: dict[str, dict[str, int]] = {}
    heap: list[tuple[float, int, Any]] = []
    order = 0
    log: list[Any] = []
    answered: set[str] = set()
    logged_in: set[str] = set()
    t0 = 1_700_000_000.0

    def push(t: float, item: Any) -> None:
        nonlocal order
        order += 1
        heapq.heappush(heap, (t, order, item))

    def login_event(adv: str, t: float, eid: str) -> AdvisorEvent:
        r = random.Random(f"{seed}:{adv}")
        team = _pick(r, tuple((name, share) for name, share, _ in TEAMS))
        cap = dict(next(c for name, _, c in TEAMS if name == team))
        teams[adv] = cap
        skills = {s: r.randint(1, 5) for s in r.sample(SKILLS, r.randint(2, 4))}
        langs = sorted({"en", *r.sample(("fr", "de", "es"), r.randint(0, 1))})
        return AdvisorEvent(
            event_id=eid, occurred_at=t, advisor_id=adv, kind="login", presence="available",
            skills=skills, languages=langs, capacity=cap,  # type: ignore[arg-type]
        )

    # capacity in advisor-seconds per second, and the mean work one contact brings
    work = sum(w * HANDLE_S[ch] / FULL[ch] for ch, w in CONTACT_CHANNELS) / sum(w for _, w in CONTACT_CHANNELS)
    base_rate = advisors * 0.92 / (work + 8.0)  # ring, wrap-up, breaks
    for i, adv in enumerate(roster):
        push(t0 + i * 0.05, ("login", adv))
    push(t0 + 1.0, ("tick",))
    push(t0 + 5.0, ("arrive",))
    n_contacts = 0
    ev = 0

    def eid() -> str:
        nonlocal ev
        ev += 1
        return f"wl{seed}-{ev}"

    def feed(msg: Any, t: float) -> None:
        log.append(msg)
        for o in router.apply(msg):
            if not isinstance(o, Assignment):
                continue
            answered.add(o.contact_id)
            at = o.decided_at
            u = rng.random()
            base = {"advisor_id": o.advisor_id, "contact_id": o.contact_id, "assignment_id": o.assignment_id}
            if u < 0.90:
                acc = max(at, t) + rng.uniform(0.3, 3.0)
                push(acc, ("adv", AdvisorEvent(event_id=f"{o.assignment_id}:accept", occurred_at=acc, kind="offer_accepted", **base)))
                done = acc + max(10.0, rng.expovariate(1.0 / HANDLE_S.get(o.channel, 200.0)))
                if rng.random() < 0.02:  # handed on to another queue half way
                    push((acc + done) / 2, ("transfer", o.contact_id, rng.choice(SKILLS)))
                push(done, ("adv", AdvisorEvent(event_id=f"{o.assignment_id}:done", occurred_at=done, kind="contact_completed", **base)))
                push(done + 0.05, ("closed", o.contact_id, f"{o.assignment_id}:closed"))
                if o.channel == "voice":
                    push(done, ("presence", o.advisor_id, "wrap_up"))
                    push(done + rng.uniform(5.0, 30.0), ("ready", o.advisor_id))
            elif u < 0.95:
                rej = max(at, t) + rng.uniform(1.0, 5.0)
                push(rej, ("adv", AdvisorEvent(event_id=f"{o.assignment_id}:reject", occurred_at=rej, kind="offer_rejected", **base)))
            else:  # no answer: the router times the offer out and sets the advisor away; back later
                push(at + cfg.offer_timeout_s + rng.uniform(5.0, 60.0), ("presence", o.advisor_id, "available"))

    while heap and len(log) < n_inputs:
        t, _, item = heapq.heappop(heap)
        kind = item[0]
        if kind == "tick":
            feed(RouterTick(routing_group="default", at=t), t)
            push(t + 1.0, ("tick",))
        elif kind == "login":
            logged_in.add(item[1])
            feed(login_event(item[1], t, eid()), t)
        elif kind == "arrive":
            n_contacts += 1
            cid = f"k{seed}-{n_contacts}"
            channel = _pick(rng, CONTACT_CHANNELS)
            skills = [rng.choice(SKILLS)] if rng.random() < 0.5 else []
            if skills and rng.random() < 0.1:
                skills.append(rng.choice([s for s in SKILLS if s != skills[0]]))
            msg = ContactRequest(
                event_id=eid(), contact_id=cid, customer_id=f"C{rng.randrange(100_000):07d}", routing_group="default",
                channel=channel, opened_at=t, language=rng.choice(LANGUAGES),  # type: ignore[arg-type]
                priority=1 if rng.random() < 0.1 else 0, required_skills=skills,
                intent=rng.choice(SKILLS) if rng.random() < 0.3 else None,
                churn_risk=round(rng.random(), 3) if rng.random() < 0.5 else None,
                tier=rng.choice((None, None, None, "silver", "gold", "vip")),
                last_advisor_id=rng.choice(roster) if rng.random() < 0.2 else None,
            )
            feed(msg, t)
            if rng.random() < 0.01:  # at-least-once redelivery
                feed(msg, t)
            push(t + rng.expovariate(1.0 / 150.0), ("patience", cid))
            swing = 1.0 + 0.18 * math.sin((t - t0) / 600.0 * 2 * math.pi)  # 74 %..109 % of capacity
            push(t + rng.expovariate(base_rate * swing), ("arrive",))
            if rng.random() < advisors / 2000:  # breaks, shift changes
                who = rng.choice(roster)
                if who in logged_in and rng.random() < 0.2:
                    logged_in.discard(who)
                    feed(AdvisorEvent(event_id=eid(), occurred_at=t, advisor_id=who, kind="logout"), t)
                    push(t + rng.uniform(60.0, 600.0), ("login", who))
                elif who in logged_in:
                    push(t, ("presence", who, "away"))
                    push(t + rng.uniform(60.0, 300.0), ("presence", who, "available"))
        elif kind == "patience":
            c = router.contact(item[1])
            if c is not None and c.status == "waiting" and item[1] not in answered:
                feed(ContactUpdate(event_id=eid(), contact_id=item[1], routing_group="default", kind="abandoned", at=t), t)
        elif kind == "closed":
            feed(ContactUpdate(event_id=item[2], contact_id=item[1], routing_group="default", kind="closed", at=t), t)
        elif kind == "transfer":
            c = router.contact(item[1])
            if c is not None and c.status == "active":
                feed(
                    ContactUpdate(event_id=eid(), contact_id=item[1], routing_group="default", kind="transferred", at=t,
                                  to_skills=[item[2]]),
                    t,
                )
        elif kind == "presence":
            if item[1] in logged_in:
                feed(AdvisorEvent(event_id=eid(), occurred_at=t, advisor_id=item[1], kind="presence", presence=item[2]), t)
        elif kind == "ready":
            a = router.advisor(item[1])
            if a is not None and a.presence == "wrap_up":
                feed(AdvisorEvent(event_id=eid(), occurred_at=t, advisor_id=item[1], kind="presence", presence="available"), t)
        elif kind == "adv":
            feed(item[1], t)
    return log


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _summary(xs: list[float]) -> dict[str, float]:
    return {
        "n": len(xs),
        "mean": round(statistics.fmean(xs), 2),
        "p50": round(_pct(xs, 0.5), 2),
        "p99": round(_pct(xs, 0.99), 2),
        "max": round(max(xs), 2),
    }


def run_scenario(name: str, spec: dict[str, Any], seed: int, state_every: int, restore_every: int) -> dict[str, Any]:
    from cxstream.routing import Router, RoutingConfig
    from cxstream.schemas import AdvisorEvent, ContactRequest, ContactUpdate

    t_rec = time.perf_counter()
    stream = record_stream(spec["advisors"], spec["inputs"], seed, spec["dedupe_window"])
    rec_s = time.perf_counter() - t_rec
    cfg = RoutingConfig() if spec["dedupe_window"] is None else RoutingConfig(dedupe_window=spec["dedupe_window"])
    warm = min(len(stream) // 4, 2_500)  # logins and the first fill of the roster are not measured
    r = Router(group="default", config=cfg)
    digest = hashlib.sha256()
    import msgspec

    enc = msgspec.json.Encoder()
    apply_us: list[float] = []
    by_kind: dict[str, list[float]] = {}
    state_us: list[float] = []
    state_bytes: list[int] = []
    restore_us: list[float] = []
    samples: list[bytes] = []
    offers = waiting_max = 0
    gc.collect()
    clock = time.perf_counter_ns
    for i, msg in enumerate(stream):
        t = clock()
        out = r.apply(msg)
        dt = (clock() - t) / 1000.0
        for o in out:
            digest.update(enc.encode(o))
            offers += type(o).__name__ == "Assignment"
        if i < warm:
            continue
        apply_us.append(dt)
        if isinstance(msg, ContactRequest):
            k = "contact_request"
        elif isinstance(msg, ContactUpdate):
            k = f"update_{msg.kind}"
        elif isinstance(msg, AdvisorEvent):
            k = msg.kind
        else:
            k = "tick"
        by_kind.setdefault(k, []).append(dt)
        if i % state_every == 0:
            t = clock()
            s = r.to_state()
            state_us.append((clock() - t) / 1000.0)
            state_bytes.append(len(s))
            if i % restore_every == 0:
                samples.append(s)
                waiting_max = max(waiting_max, r.stats()["total"]["waiting"])
    final = r.to_state()
    event_time_s = round(_time_of(stream[-1]) - _time_of(stream[0]), 1)
    n_inputs = len(stream)
    # from_state apart, on the sampled states, without the recorded stream in memory (its garbage
    # collection would be charged to whichever call allocates most)
    del stream, r
    gc.collect()
    for s in samples:
        t = clock()
        restored = Router.from_state(s)
        restore_us.append((clock() - t) / 1000.0)  # not counting the previous one's deallocation
        del restored
    return {
        "advisors": spec["advisors"],
        "dedupe_window": cfg.dedupe_window,
        "inputs": n_inputs,
        "measured_inputs": len(apply_us),
        "event_time_s": event_time_s,
        "assignments": offers,
        "max_waiting_seen": waiting_max,
        "record_s": round(rec_s, 2),
        "apply_us": _summary(apply_us),
        "apply_us_by_kind": {k: _summary(v) for k, v in sorted(by_kind.items())},
        "to_state_us": _summary(state_us),
        "to_state_bytes": {"mean": round(statistics.fmean(state_bytes)), "max": max(state_bytes), "final": len(final)},
        "from_state_us": _summary(restore_us),
        "outputs_sha256": digest.hexdigest(),
    }


def _time_of(msg: Any) -> float:
    for f in ("opened_at", "occurred_at", "at"):
        if hasattr(msg, f):
            return float(getattr(msg, f))
    return 0.0


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    names = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    out: dict[str, Any] = {}
    for name in names:
        spec = dict(SCENARIOS[name])
        if args.inputs:
            spec["inputs"] = args.inputs
        print(f"  {name} ...", file=sys.stderr, flush=True)
        out[name] = run_scenario(name, spec, args.seed, args.state_every, args.restore_every)
        a = out[name]
        print(
            f"    apply mean {a['apply_us']['mean']} us p50 {a['apply_us']['p50']} p99 {a['apply_us']['p99']}; "
            f"to_state mean {a['to_state_us']['mean']} us p50 {a['to_state_us']['p50']} us {a['to_state_bytes']['mean']} B; "
            f"from_state {a['from_state_us']['mean']} us",
            file=sys.stderr,
            flush=True,
        )
    return out


def _child(src: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, __file__, "--src", src, "--no-baseline", "--json", f.name, "--seed", str(args.seed),
               "--state-every", str(args.state_every), "--restore-every", str(args.restore_every)]
        if args.scenarios:
            cmd += ["--scenarios", args.scenarios]
        if args.inputs:
            cmd += ["--inputs", str(args.inputs)]
        subprocess.run(cmd, check=True, cwd=src)
        return json.loads(Path(f.name).read_text())["after"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--baseline", default=BASELINE, help=f"git revision measured as 'before' (default {BASELINE})")
    p.add_argument("--no-baseline", action="store_true", help="measure the working tree only")
    p.add_argument("--src", help="measure the cxstream package under this directory instead of the working tree")
    p.add_argument("--scenarios", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--inputs", type=int, help="inputs per scenario (overrides the scenario's)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--state-every", type=int, default=5, help="time to_state every N inputs")
    p.add_argument("--restore-every", type=int, default=200,
                   help="keep the state every N inputs (a multiple of --state-every) and time from_state on those")
    args = p.parse_args(argv)
    if args.src:
        sys.path.insert(0, str(Path(args.src).resolve()))
    import cxstream

    result: dict[str, Any] = {
        "command": "python bench/routing/micro.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "seed": args.seed,
    }
    if not args.no_baseline:
        with tempfile.TemporaryDirectory(prefix="cx-routing-before-") as tmp:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "cxstream"], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            print(f"before ({args.baseline}):", file=sys.stderr, flush=True)
            result["before"] = {"revision": args.baseline, **_child(tmp, args)}
    label = "after" if not args.src else "run"
    print(f"{label} ({Path(cxstream.__file__).parent}):", file=sys.stderr, flush=True)
    result["after"] = {"revision": "working tree" if not args.src else args.src, **run_all(args)}
    if "before" in result:
        cmp: dict[str, Any] = {}
        for name, a in result["after"].items():
            b = result["before"].get(name)
            if not isinstance(a, dict) or not isinstance(b, dict):
                continue
            cmp[name] = {
                "identical_outputs": a["outputs_sha256"] == b["outputs_sha256"],
                "apply_mean_speedup": round(b["apply_us"]["mean"] / a["apply_us"]["mean"], 1),
                "apply_p99_speedup": round(b["apply_us"]["p99"] / a["apply_us"]["p99"], 1),
                "to_state_speedup": round(b["to_state_us"]["mean"] / a["to_state_us"]["mean"], 1),
                "to_state_p50_speedup": round(b["to_state_us"]["p50"] / a["to_state_us"]["p50"], 1),
                "to_state_size_ratio": round(a["to_state_bytes"]["mean"] / b["to_state_bytes"]["mean"], 3),
                "from_state_speedup": round(b["from_state_us"]["mean"] / a["from_state_us"]["mean"], 1),
            }
        result["comparison"] = cmp
        print(json.dumps(cmp, indent=1), file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
