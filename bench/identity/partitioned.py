"""Identity past one core: a simulation of the settled-fast-path design against today's single resolver.

Today every identified event goes through one resolver on one partition (``cx.resolve.v1``):
a single total order, so merges are replay-stable, and a ceiling of one core.  The design
simulated here (docs/IDENTITY.md, "Past one core"):

* **Settled fast path.**  Each ingest worker holds a replica of the identifier index (identifier
  -> canonical customer, as the resolver publishes it), applied ``lag`` events late.  An event
  whose every usable identifier is in the replica, none quarantined, all with the *same* owner,
  and that had no refused identifier, is *settled*: the resolver would decide nothing for it
  (:func:`cxstream.context.resolver.settled_owner`; the no-op property is tested in
  tests/unit/test_identity_fastpath.py), so ingest sends it straight to the owner's context
  partition, on any number of workers.
* **Coordinator.**  Every other event (a new identifier, two owners, a refused or quarantined
  value, an erasure) goes to the single resolver, as today.  Merges and erasures happen only
  there, in one total order: a wrong merge cannot come from the fast path.
* **Context stage.**  A settled event can reach the context of a customer that the coordinator
  absorbed or erased meanwhile (the replica was stale): the context stage *forwards* it to the
  survivor (absorbed) or *bounces* it back to the coordinator (erased).

Both designs see the same events in the same order; the simulation checks, per event, that each
lands on the same final customer, that the final identifier index is identical, and counts
wrong merges and split people against the ground truth of the generated journeys (people with
traps: shared landlines, shared devices, a switchboard, placeholders).  It reports the share of
events that still need the coordinator -- which bounds how far the design scales -- and the
per-event cost of each path, measured in the same run.

    .venv/bin/python bench/identity/partitioned.py --json bench/results/identity-partitioned.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxstream.bench.workload import Workload, WorkloadConfig
from cxstream.context.identity import partition_identifiers
from cxstream.context.resolver import SHARED, Resolver, fingerprint, settled_owner
from cxstream.replay.journeys import CHANNEL_ID, contact_events, generate_journeys, junk_for
from cxstream.schemas import RefusedIdentifier


@dataclass(frozen=True)
class Op:
    """One input of the resolver: an event (``ids``) or an erasure request."""

    event_id: str
    at: float
    ids: dict[str, str]
    refused: tuple[RefusedIdentifier, ...]
    person: str | None  # ground truth (None: not known, e.g. the benchmark workload's anonymous traffic)
    erase: bool = False


def _op(event_id: str, at: float, raw: Mapping[str, str], person: str | None, erase: bool = False) -> Op | None:
    from cxstream.schemas import Identifiers

    ok, bad = partition_identifiers(Identifiers(**raw))
    refused = tuple(RefusedIdentifier(kind=k, fingerprint=fingerprint(k, raw[k]), reason=r, detail=d)  # type: ignore[arg-type]
                    for k, (r, d) in bad.items())
    if not ok:
        return None  # no usable identifier: anonymous or dead-lettered at ingest, never resolved
    return Op(event_id, at, ok, refused, person, erase)


def journey_ops(people: int, returns: int, erase_share: float, seed: int) -> Iterator[Op]:
    """Generated journeys (docs/IDENTITY.md's retention benchmark), then *returns* more contacts per person
    on identifiers they used, and erasure requests for *erase_share* of the people, all in time order."""
    rnd = random.Random(seed)
    journeys = generate_journeys(people, seed=seed)
    ops: list[Op] = []
    end = 0.0
    for j in journeys:
        for c in j.contacts:
            for ev in contact_events(c, junk_for(c.contact_id)):
                op = _op(ev.event_id, ev.occurred_at, ev.customer.present(), j.person)
                if op is not None:
                    ops.append(op)
                end = max(end, ev.occurred_at)
    for j in journeys:
        used = sorted({(k, v) for c in j.contacts for k, v in c.ids.items() if v == j.identifiers.get(k)})
        if not used:
            continue
        for r in range(returns):
            at = end + rnd.uniform(0, 30 * 86400)
            k, v = rnd.choice(used)
            ch = next((ch for ch, kind in CHANNEL_ID.items() if kind == k), "app")
            for n in range(3):  # a contact's open, a message and its close, by the identifier of its channel
                op = _op(f"{j.person}-r{r}-{ch}-{n}", at + n, {k: v}, j.person)
                if op is not None:
                    ops.append(op)
    erased = rnd.sample(journeys, int(erase_share * len(journeys)))
    for j in erased:
        at = end + rnd.uniform(0, 30 * 86400)
        op = _op(f"erase-{j.person}", at, {k: v for k, v in j.identifiers.items()}, j.person, erase=True)
        if op is not None:
            ops.append(op)
        # the person writes again half a second after the erasure, with an identifier the replicas may still
        # know (the race a stale replica must not lose): a new customer, on the coordinator
        used = sorted({(k, v) for c in j.contacts for k, v in c.ids.items() if v == j.identifiers.get(k)})
        if used:
            k, v = used[0]
            again = _op(f"{j.person}-after-erasure", at + 0.5, {k: v}, j.person)
            if again is not None:
                ops.append(again)
    ops.sort(key=lambda o: (o.at, o.event_id))
    yield from ops


def workload_ops(customers: int, events: int, seed: int) -> Iterator[Op]:
    """The pipeline benchmark's workload (cxstream/bench/workload.py): a prefill, then open traffic."""
    w = Workload(WorkloadConfig(customers=customers, seed=seed))
    for ev in w.prefill():
        op = _op(ev.event_id, ev.occurred_at, ev.customer.present(), None)
        if op is not None:
            yield op
    for rec in w.events(events):
        customer = getattr(rec, "customer", None)
        if customer is None:
            continue  # advisor events: not resolved
        op = _op(rec.event_id, rec.occurred_at, customer.present(), None)
        if op is not None:
            yield op


class Replica:
    """An ingest worker's copy of the identifier index, applied *lag* late (in the scenario's clock).

    Each entry carries the time of the identifier's last erasure, if any (the resolver's
    ``e:`` marker): an event older than that is not settled (the resolver suppresses it).
    """

    def __init__(self, lag: float) -> None:
        self.lag = lag
        self.index: dict[tuple[str, str], tuple[str, float | None]] = {}
        self.pending: deque[tuple[float, dict[tuple[str, str], tuple[str, float | None] | None]]] = deque()

    def publish(self, at: float, updates: Mapping[tuple[str, str], str | None], resolver: Resolver) -> None:
        if not updates:
            return
        entries: dict[tuple[str, str], tuple[str, float | None] | None] = {}
        for (kind, value), cid in updates.items():
            if kind == "alias":
                continue  # a replica only needs identifiers; the context stage follows aliases
            entries[(kind, value)] = (cid, resolver.erased_at(kind, value)) if cid is not None else None
        self.pending.append((at + self.lag, entries))

    def advance(self, now: float) -> None:
        while self.pending and self.pending[0][0] <= now:
            for key, entry in self.pending.popleft()[1].items():
                if entry is None:
                    self.index.pop(key, None)
                else:
                    self.index[key] = entry

    def lookup_at(self, at: float) -> Callable[[str, str], str | None]:
        def lookup(kind: str, value: str) -> str | None:
            entry = self.index.get((kind, value))
            if entry is None or (entry[1] is not None and at <= entry[1]):
                return None
            return entry[0]

        return lookup


def overtaken(customers: list[str | None], arrivals: list[float]) -> int:
    """Events that reach their customer's context before an event of that customer sent earlier.

    >>> overtaken(["a", "a", "b", "a"], [5.0, 1.0, 0.0, 6.0])  # a's second event arrives before its first
    1
    """
    latest: dict[str, float] = {}
    n = 0
    for cid, at in zip(customers, arrivals, strict=True):
        if cid is None:
            continue
        before = latest.get(cid)
        if before is not None and at < before:
            n += 1
        latest[cid] = max(at, before if before is not None else at)
    return n


def run(ops: list[Op], lag: float, clock: str = "inputs", slow_delay: float = 0.0, rule: bool = False) -> dict[str, Any]:
    """Both designs over *ops*; the partitioned one with a replica *lag* behind: in resolver inputs
    (``clock="inputs"``) or in seconds of the events' own time (``clock="seconds"``).

    *slow_delay* (same unit): how much later an event that takes the coordinator's road reaches its
    context than one on the fast path (one more broker hop and the coordinator's queue); a replica
    learns a decision no sooner (the resolver publishes after its outputs are acknowledged).  The
    result counts the events that reach their customer's context before an earlier event of that
    customer (``overtaken``; every event of a customer sent by one ingest worker, in input order).
    With *rule*, ingest keeps the order: an event whose identifiers, or whose owners in the replica,
    a coordinator-bound event sent less than *slow_delay* ago also had, goes to the coordinator too.
    """
    single = Resolver({})
    coord = Resolver({})
    replica = Replica(max(lag, slow_delay))
    arrivals: list[float] = []
    inflight: dict[tuple[str, ...], float] = {}  # identifier or owner -> when its coordinator-bound event is in the context log
    held_back = 0

    def remember(now: float, ids: Mapping[str, str]) -> None:
        if slow_delay <= 0:
            return
        until = now + slow_delay
        look = replica.lookup_at(float("inf"))
        for kind, value in ids.items():
            inflight[("v", kind, value)] = until
            owner = look(kind, value)
            if owner is not None:
                inflight[("c", owner)] = until

    def in_flight(now: float, ids: Mapping[str, str], owner: str) -> bool:
        if inflight.get(("c", owner), -1.0) > now:
            return True
        return any(inflight.get(("v", kind, value), -1.0) > now for kind, value in ids.items())
    base_cid: list[str | None] = []
    part_cid: list[str | None] = []
    fast = slow = forwarded = bounced = 0
    fast_ns = slow_ns = 0
    slow_by_tenth = [0] * 10
    n = len(ops)
    for i, op in enumerate(ops):
        now = float(i) if clock == "inputs" else op.at
        replica.advance(now)
        if op.erase:
            single.erase(op.ids, request_id=op.event_id, at=op.at)
            er = coord.erase(op.ids, request_id=op.event_id, at=op.at)
            replica.publish(now, er.index, coord)
            remember(now, op.ids)
            base_cid.append(None)
            part_cid.append(None)
            arrivals.append(now + slow_delay)
            slow += 1
            slow_by_tenth[i * 10 // n] += 1
            continue
        base = single.resolve(op.ids, event_id=op.event_id, at=op.at, refused=op.refused)
        base_cid.append(base.customer_id)
        t0 = time.perf_counter_ns()
        owner = None if op.refused else settled_owner(op.ids, replica.lookup_at(op.at))
        t1 = time.perf_counter_ns()
        if owner is not None and rule and in_flight(now, op.ids, owner):
            owner = None  # an earlier event of the same identifiers or owner is still on the coordinator's road
            held_back += 1
        if owner is not None:
            fast += 1
            fast_ns += t1 - t0
            # the context stage: the owner may have been absorbed (forward) or erased (bounce) meanwhile
            if coord.store.get(f"c:{owner}".encode()) is not None:
                part_cid.append(owner)
                arrivals.append(now)
                continue
            survivor = coord.canonical(owner)
            if survivor is not None and survivor != owner:
                forwarded += 1
                part_cid.append(survivor)
                arrivals.append(now + slow_delay)  # one more hop: the absorbed customer's partition forwards it
                continue
            bounced += 1
        remember(now, op.ids)
        arrivals.append(now + slow_delay)
        t2 = time.perf_counter_ns()
        res = coord.resolve(op.ids, event_id=op.event_id, at=op.at, refused=op.refused)
        slow_ns += time.perf_counter_ns() - t2
        if owner is None:
            slow += 1
            slow_by_tenth[i * 10 // n] += 1
        replica.publish(now, res.index, coord)
        part_cid.append(res.customer_id)

    def final(r: Resolver, cid: str | None) -> str | None:
        return r.canonical(cid) if cid is not None else None

    differ = sum(1 for i in range(n) if final(single, base_cid[i]) != final(coord, part_cid[i]))
    same_index = sorted(single.index_entries()) == sorted(coord.index_entries())

    def truth(r: Resolver, cids: list[str | None]) -> dict[str, int]:
        people: dict[str, set[str]] = defaultdict(set)
        customers: dict[str, set[str]] = defaultdict(set)
        for op, cid in zip(ops, cids, strict=True):
            f = final(r, cid)
            if op.person is None or f is None or op.erase:
                continue
            people[f].add(op.person)
            customers[op.person].add(f)
        return {
            "customers_with_several_people": sum(1 for s in people.values() if len(s) > 1),
            "people_in_several_customers": sum(1 for s in customers.values() if len(s) > 1),
        }

    shared = sum(1 for _, cid in coord.index_entries() if cid == SHARED)
    finals = [final(single, c) for c in base_cid]
    return {
        "lag": lag,
        "lag_unit": clock,
        "slow_delay": slow_delay,
        "ordering_rule": rule,
        "overtaken": overtaken(finals, arrivals),
        "held_back_by_rule": held_back,
        "inputs": n,
        "fast_path": fast,
        "coordinator": slow,
        "coordinator_share": round(slow / n, 4),
        "coordinator_share_by_tenth": [round(s / max(1, n // 10), 4) for s in slow_by_tenth],
        "forwarded_by_context": forwarded,
        "bounced_to_coordinator": bounced,
        "events_on_another_final_customer": differ,
        "identical_final_index": same_index,
        "quarantined_values": shared,
        "single": truth(single, base_cid),
        "partitioned": truth(coord, part_cid),
        "fast_check_us": round(fast_ns / max(1, fast) / 1000, 2),
        "coordinator_resolve_us": round(slow_ns / max(1, slow + bounced) / 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--people", type=int, default=5000)
    p.add_argument("--returns", type=int, default=6, help="contacts per person after their journey")
    p.add_argument("--erase-share", type=float, default=0.02)
    p.add_argument("--workloads", default="10000:100000,1000:100000",
                   help="the benchmark workload's customers:events (after its prefill), comma-separated")
    p.add_argument("--journey-lags", default="0,1,10,60", help="replica lags for the journeys, seconds of event time")
    p.add_argument("--workload-lags", default="0,100,1000", help="replica lags for the workload, in resolver inputs")
    p.add_argument("--slow-delay-s", type=float, default=0.0,
                   help="journeys: how much later (s) the coordinator's road reaches the context; > 0 also runs the ordering rule")
    p.add_argument("--slow-delay-inputs", type=float, default=0.0,
                   help="the workload: the same in resolver inputs (50 = 50 ms at 1,000 inputs/s)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args(argv)
    scenarios = {
        "journeys": (list(journey_ops(args.people, args.returns, args.erase_share, args.seed)), "seconds", args.journey_lags,
                     args.slow_delay_s),
    }
    for spec in filter(None, args.workloads.split(",")):
        customers, events = (int(x) for x in spec.split(":"))
        scenarios[f"workload_{customers}_customers_{events}_events"] = (
            list(workload_ops(customers, events, args.seed)), "inputs", args.workload_lags, args.slow_delay_inputs)
    results: dict[str, Any] = {}
    for name, (ops, clock, lags, delay) in scenarios.items():
        results[name] = []
        for lag in (float(x) for x in filter(None, lags.split(","))):
            for rule in ((False, True) if delay > 0 else (False,)):
                r = run(ops, lag, clock, slow_delay=delay, rule=rule)
                results[name].append(r)
                print(f"{name} lag {lag:g} {clock}, slow road +{delay:g}, ordering rule {rule}: overtaken {r['overtaken']}, "
                      f"held back {r['held_back_by_rule']}; coordinator {r['coordinator_share']:.1%} of {r['inputs']}, forwarded "
                      f"{r['forwarded_by_context']}, bounced {r['bounced_to_coordinator']}, other customer "
                      f"{r['events_on_another_final_customer']}, same index {r['identical_final_index']}, "
                      f"wrong merges {r['single']['customers_with_several_people']}/{r['partitioned']['customers_with_several_people']}, "
                      f"check {r['fast_check_us']} us vs resolve {r['coordinator_resolve_us']} us", file=sys.stderr, flush=True)
    doc = {
        "command": "python bench/identity/partitioned.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "params": vars(args),
        "results": results,
    }
    text = json.dumps(doc, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
