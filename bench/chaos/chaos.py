"""``make chaos``: faults injected into a running engine; every input accounted for by event id.

One run, one machine (docs/RELIABILITY.md): the engine's own embedded ZooKeeper + Apache Kafka
and Redis (:class:`cxstream.bench.chaos.Servers`, fixed ports, restartable), two engine workers
(``python -m cxstream.cli run``, one consumer group), 200 advisors logged in, ``--customers``
customers prefilled, the seeded workload (:mod:`cxstream.bench.workload`) sent open-loop and
every assignment answered by simulated desktops (accept, complete, close).  Then:

1. sustainable rate: steps up the offered rate while the stages' lag does not grow;
2. baseline at ``--background-share`` of it: the lag and the e2e latency that are "normal";
3. the faults, each under that background traffic, each followed by a drain and the
   accounting (:func:`cxstream.bench.chaos.account`):
   ``kill9`` (worker 1 of 2 ``kill -9``-ed, restarted after ``--down-s``), ``broker_outage``
   (Kafka stopped for ``--outage-s``, started on the same port and data), ``redis_outage``
   (the same for Redis, with the API probed while it is away), ``duplicates`` (a phase's
   recording sent a second time, then new records each sent twice as a retrying producer
   would), ``overload`` (2x the sustainable rate for ``--overload-s``, then no new input
   until the engine caught up), and ``kill9`` again with ``--big-customers`` customers.

Writes ``--json`` (bench/results/chaos.json).  ``--quick``: small sizes, short faults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from cxstream.bench.chaos import (
    LOOK_AGAIN_S,
    GroupLag,
    Servers,
    Traffic,
    Workers,
    account,
    advisors_once_answered,
    after_fault,
    as_ms,
    duplicate_assignments,
    kill_all_workers,
    left_open,
    log,
    look_twice,
    percentile,
    recovery,
    router_stats,
    snapshot,
)
from cxstream.bench.loadgen import API_KEY, environment
from cxstream.bench.workload import Workload, WorkloadConfig, customer_ref
from cxstream.replay.recording import Planned, plan

REPO = Path(__file__).resolve().parents[2]
QUIET_S = 3.0  # Traffic.settle's quiet time
RING = 256  # CX_DEDUPE_IDS_PER_CUSTOMER in this run: no customer's ring overflows (each is checked)


def engine_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``CX_`` settings of this process's environment (*env*), which the engines inherit, secrets left out.

    >>> engine_env({"CX_STAGE_PRODUCER": "lean", "CX_API_KEY": "s3cret", "HOME": "/root"})
    {'CX_STAGE_PRODUCER': 'lean'}
    """
    secret = ("KEY", "SECRET", "PASSWORD", "TOKEN")
    items = (os.environ if env is None else env).items()
    return {k: v for k, v in sorted(items) if k.startswith("CX_") and not any(w in k for w in secret)}


def failed(faults: list[dict[str, Any]]) -> list[str]:
    """The faults with an input lost, a contact assigned twice, a completed contact the router never ended, an advisor
    left busy after every answer was in, or an error.

    >>> failed([{"fault": "kill9", "lost": 0}, {"fault": "overload", "lost": 3}, {"fault": "duplicates", "error": "x"},
    ...         {"fault": "kill9", "lost": 0, "advisors_left_busy": 2}, {"fault": "redis_outage", "contacts_left_open": 1}])
    ['overload', 'duplicates', 'kill9', 'redis_outage']
    """
    return [f["fault"] for f in faults
            if f.get("lost") or f.get("duplicate_assignments") or f.get("contacts_left_open") or f.get("advisors_left_busy")
            or f.get("error")]


class Chaos:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.base = Path(tempfile.mkdtemp(prefix="cxchaos-"))
        tag = f"{int(time.time()) % 100000:05d}"
        self.prefix, self.app_id = f"chaos{tag}.", f"cxchaos-{tag}"
        self.workload = Workload(WorkloadConfig(customers=a.customers, seed=a.seed, advisors=a.advisors))
        self.stream = self.workload.planned()
        self.customers = 0
        self.faults: list[dict[str, Any]] = []
        self.killing: set[int] = set()  # workers the harness kills (the watchdog leaves them alone)
        self.result: dict[str, Any] = {}

    # ------------------------------------------------------------------ set-up
    async def run(self) -> dict[str, Any]:
        a = self.a
        began = time.time()
        env_at_start = environment()  # the commit the run was made with
        self.servers = Servers(self.base)
        await asyncio.to_thread(self.servers.start)
        log(f"servers: kafka {self.servers.broker_url}, redis {self.servers.redis_url}")
        self.workers = Workers(self.servers, self.base, 2, prefix=self.prefix, app_id=self.app_id,
                               env={"CX_DEDUPE_IDS_PER_CUSTOMER": str(RING)})
        try:
            await asyncio.to_thread(self.workers.start_all)
            self.lag = GroupLag(self.servers.broker_url, self.app_id, self.prefix)
            await self.lag.start()
            self.traffic = Traffic(self.servers.broker_url, self.prefix)
            await self.traffic.start(self.workers)
            await self.traffic.send_all(plan(x) for x in self.workload.advisor_logins())
            await self.prefill(a.customers)
            if a.sustainable_rate:  # measured by an earlier run of this harness on this machine (saves ~6 minutes)
                self.result["sustainable"] = {"rate": a.sustainable_rate, "given": True, "steps": []}
            else:
                self.result["sustainable"] = await self.find_sustainable()
            rate = self.result["sustainable"]["rate"]
            self.bg = max(5.0, round(rate * a.background_share))
            self.result["baseline"] = await self.baseline(self.bg)
            steps: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
                "kill9": self.kill9, "broker_outage": self.broker_outage, "redis_outage": self.redis_outage,
                "duplicates": self.duplicates, "overload": self.overload, "kill9_big": self.kill9_big,
            }
            for name in a.faults.split(","):
                log(f"== {name}")
                try:
                    self.faults.append(await steps[name]())
                except Exception as exc:  # one fault that breaks the harness does not hide the others
                    log(f"{name} failed: {exc!r}\n{traceback.format_exc()}")
                    self.faults.append({"fault": name, "error": repr(exc)})
                    await self.heal()
                log(f"{name}: {orjson.dumps({k: v for k, v in self.faults[-1].items() if not isinstance(v, list | dict)}).decode()}")
        finally:
            with contextlib.suppress(Exception):
                await self.traffic.stop()
            with contextlib.suppress(Exception):
                await self.lag.stop()
            await asyncio.to_thread(self.workers.stop)
            await asyncio.to_thread(self.servers.stop)
            if a.keep or failed(self.faults):  # the workers' and servers' logs of a run that lost something are kept
                log(f"kept {self.base} (the servers' and workers' folders and logs)")
            else:
                shutil.rmtree(self.base, ignore_errors=True)
        env_at_end = environment()
        return {
            "what": "make chaos: faults injected into a running engine (2 workers, embedded Apache Kafka and Redis); "
                    "every acknowledged input accounted for by event id (docs/RELIABILITY.md)",
            "note": "measured on a 2-core machine shared with other work (other helpers' tests and benchmarks ran "
                    "meanwhile): rates, latencies and recovery times are of this run only; the accounting "
                    "(lost, duplicate_assignments, counted_twice) does not depend on the load",
            "command": "make chaos" + (f" ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else ""),
            "faults": self.faults, **self.result,
            "method": METHOD, "options": vars(a), "ring_size": RING, "elapsed_s": round(time.time() - began, 1),
            "engine_env": engine_env(),
            "environment": {**env_at_start, "loadavg_at_start": env_at_start["loadavg_at_end"],
                            "machine_speed_at_start": env_at_start["machine_speed_at_end"],
                            **{k: env_at_end[k] for k in ("loadavg_at_end", "machine_speed_at_end")}},
        }

    async def watchdog(self, t0: float, died: list[dict[str, Any]]) -> None:
        """A worker that exits on its own is reported (when, its exit code, its last critical log line) and started again."""
        while True:
            await asyncio.sleep(1.0)
            for i, e in enumerate(self.workers.procs):
                if e is not None and e.proc.poll() is not None and i not in self.killing:
                    why = [ln for ln in e.output().splitlines() if "CRITICAL" in ln][:1]
                    died.append({"worker": i, "exit_code": e.proc.returncode, "at_s": round(time.time() - t0, 1),
                                 "reason": why[0][-300:] if why else None})
                    log(f"worker {i} exited ({e.proc.returncode}): {died[-1]['reason']}; starting it again")
                    self.workers.procs[i] = None
                    await asyncio.to_thread(self.workers.start, i)

    async def heal(self) -> None:
        """After a harness error: servers and both workers up again, so the next fault starts from a running engine."""
        if self.servers.kafka is None:
            await asyncio.to_thread(self.servers.start_broker)
        if self.servers.redis is None:
            await asyncio.to_thread(self.servers.start_redis)
        for i, e in enumerate(self.workers.procs):
            if e is None or e.proc.poll() is not None:
                await asyncio.to_thread(self.workers.start, i)

    async def prefill(self, upto: int) -> None:
        began = time.time()
        n = await self.traffic.send_all(plan(e) for e in self.workload.prefill(range(self.customers, upto), at=time.time()))
        await self.traffic.settle(self.lag, timeout=max(600.0, n / 50))
        log(f"prefill: {n} customers in {time.time() - began:.0f} s")
        self.customers = upto

    # ------------------------------------------------------------------ measuring
    async def load(self, rate: float, seconds: float, stop: asyncio.Event | None = None) -> list[Planned]:
        return await self.traffic.open_loop(self.stream, rate, seconds, stop)

    def lag_series(self, since: float, until: float | None = None) -> list[float]:
        return [s.lag for s in self.traffic.samples if s.at >= since and (until is None or s.at <= until) and s.lag is not None]

    def e2e(self, since: float, until: float, *, less_router_wait: bool = False) -> list[float]:
        """The e2e of the contacts opened from *since* to *until* and assigned; *less_router_wait*: less each one's wait at the
        router for an advisor (its first assignment's ``waited_s``), the engine's part."""
        tr = self.traffic
        return [tr.first_assignment[c] - p - (tr.first_waited.get(c, 0.0) if less_router_wait else 0.0)
                for c, p in tr.contact_planned.items() if since <= p <= until and c in tr.first_assignment]

    async def find_sustainable(self) -> dict[str, Any]:
        """The highest offered rate at which the stages' lag does not grow (steps x1.5, then bisection to within 10 %)."""
        a = self.a
        steps = []

        async def step(rate: float) -> bool:
            t0 = time.time()
            await self.load(rate, a.step_s)
            mid = percentile(self.lag_series(t0 + a.step_s * 0.25, t0 + a.step_s * 0.5), 0.5)
            last = percentile(self.lag_series(t0 + a.step_s * 0.75, t0 + a.step_s), 0.5)
            end = await self.lag.lag()
            drain = await self.traffic.settle(self.lag) - QUIET_S
            ok = end is not None and end <= max(200.0, 3 * rate) and drain <= max(5.0, 0.3 * a.step_s)
            steps.append({"rate": rate, "lag_second_quarter": mid, "lag_last_quarter": last, "group_lag_end": end,
                          "drain_s": round(drain, 1), "keeps_up": ok,
                          "e2e_p99_ms": as_ms(percentile(self.e2e(t0 + 2, t0 + a.step_s), 0.99))})
            log(f"step {rate:.0f}/s: lag {mid} -> {last}, at the end {end}, drained in {drain:.1f} s -> "
                f"{'keeps up' if ok else 'falls behind'}")
            return ok

        good, bad, rate = 0.0, None, a.start_rate
        for _ in range(a.max_steps):
            # a step that falls behind is run again before it counts: one hiccup (a rebalance, a GC
            # pause, a neighbour's burst on the shared machine) made the first full run's 100/s fail
            # with its lag at 0 through the step, and the "overload" at 2x that rate never overloaded
            if await step(rate) or await step(rate):
                good = max(good, rate)
            else:
                bad = rate if bad is None else min(bad, rate)
            if good == 0:  # nothing kept up yet: halve
                rate = round(rate / 2)
                if rate < 5:
                    break
            elif bad is None:
                rate = round(rate * 1.5)
            else:  # bisect between the highest rate kept up with and the lowest not
                mid = round((good + bad) / 2)
                if mid - good < 0.1 * good:
                    break
                rate = mid
        return {"rate": good, "first_failing_rate": bad, "step_s": a.step_s, "steps": steps,
                "criterion": "the stages' group lag at the step's end <= max(200, rate x 3 s) and drained in <= max(5 s, "
                              "0.3 x step) once the step's input stopped (the lag did not grow through the step), in the "
                              "first or (falling behind once) a second run of the step; "
                              "lag_*_quarter: medians of the workers' summed cx_consumer_lag_records"}

    async def baseline(self, rate: float) -> dict[str, Any]:
        t0 = time.time()
        await self.load(rate, self.a.baseline_s)
        lags = self.lag_series(t0 + 2)
        until = time.time()
        await self.traffic.settle(self.lag)  # (the contacts still queued are assigned by then)
        e2e, engine = self.e2e(t0 + 2, until), self.e2e(t0 + 2, until, less_router_wait=True)
        self.lag_normal = max(50.0, 2 * (percentile(lags, 0.95) or 0.0))
        self.e2e_normal = max(0.5, 3 * (percentile(engine, 0.99) or 0.0))
        self.e2e_normal_with_queue = max(0.5, 3 * (percentile(e2e, 0.99) or 0.0))
        return {"rate": rate, "seconds": self.a.baseline_s, "lag_p95": percentile(lags, 0.95), "e2e_p50_ms": as_ms(percentile(e2e, 0.5)),
                "e2e_p99_ms": as_ms(percentile(e2e, 0.99)), "contacts": len(e2e),
                "e2e_less_router_wait_p99_ms": as_ms(percentile(engine, 0.99)),
                "held_at_router": sum(1 for x, y in zip(e2e, engine, strict=True) if x - y > self.e2e_normal),
                "normal": {"lag_records": self.lag_normal, "e2e_s": self.e2e_normal, "e2e_with_router_queue_s": self.e2e_normal_with_queue,
                           "rule": "lag <= max(50, 2 x baseline lag p95); e2e less the wait at the router <= max(0.5 s, 3 x its "
                                   "baseline p99); for recovery_with_router_queue_s, e2e <= max(0.5 s, 3 x baseline e2e p99)"}}

    async def under_load(self, name: str, inject: Callable[[], Awaitable[dict[str, Any]]], rate: float | None = None,
                         pre_s: float | None = None) -> tuple[dict[str, Any], list[Planned]]:
        """Background traffic; *inject* the fault after *pre_s*; traffic goes on until recovered (or ``--max-post-s``);
        then drain and account for every input acknowledged since the phase began."""
        a, tr = self.a, self.traffic
        rate = rate or self.bg
        before = set(tr.acked)
        t0 = time.time()
        stop = asyncio.Event()
        died: list[dict[str, Any]] = []
        watchdog = asyncio.ensure_future(self.watchdog(t0, died))
        sender = asyncio.ensure_future(self.load(rate, 10**6, stop))
        await asyncio.sleep(a.pre_s if pre_s is None else pre_s)
        fault = await inject()
        cleared = fault["cleared_at"]
        recovered = None
        while time.time() - cleared < a.max_post_s:
            await asyncio.sleep(2)
            recovered = recovery(tr.samples, tr.contact_planned, tr.first_assignment, cleared,
                                 lag_normal=self.lag_normal, e2e_normal_s=self.e2e_normal, router_wait=tr.first_waited)
            if recovered is not None and time.time() - cleared >= max(a.min_post_s, recovered + 10):
                break
        with_queue = recovery(tr.samples, tr.contact_planned, tr.first_assignment, cleared,
                              lag_normal=self.lag_normal, e2e_normal_s=self.e2e_normal_with_queue)
        stop.set()
        sent = await sender
        load_end = time.time()
        try:
            drain_s = await tr.settle(self.lag, timeout=900)
        finally:
            watchdog.cancel()
        entry = await self.accounted(name, before, t0)
        entry["workers_died"] = died
        lags = self.lag_series(t0)
        rss = [sum(s.rss_mb) for s in tr.samples if s.at >= t0 and s.rss_mb]
        entry["after_fault"] = after_fault(tr.samples, tr.contact_planned, tr.first_assignment, tr.first_waited, cleared,
                                           lag_normal=self.lag_normal, e2e_normal_s=self.e2e_normal)
        entry.update({
            "recovery_s": recovered, "recovery_with_router_queue_s": with_queue, "customers": self.customers, "rate": rate, "load_s": round(load_end - t0, 1),
            "drain_after_load_s": round(drain_s, 1), "lag_peak": max(lags) if lags else None,
            "rss_mb_peak_workers": max(rss) if rss else None, "e2e_during_p99_ms": as_ms(percentile(self.e2e(t0, load_end), 0.99)),
            **{k: v for k, v in fault.items() if k not in ("cleared_at",)},
            "fault_started_s": round(fault["injected_at"] - t0, 1), "fault_cleared_s": round(cleared - t0, 1),
        })
        entry.pop("injected_at", None)
        return entry, sent

    async def accounted(self, name: str, before: set[str], t0: float) -> dict[str, Any]:
        tr = self.traffic
        snap, first_look, first_open = await look_twice(
            lambda: snapshot(self.servers.broker_url, self.servers.redis_url, self.prefix, self.app_id, tr.interactions, RING),
            tr.acked, tr.completed)
        ids = [i for i in tr.acked if i not in before]
        whole_lost = account(tr.acked, snap)["lost"]
        self.last_snap = snap
        contacts = [c for c, p in tr.contact_planned.items() if p >= t0]
        still_open = left_open(tr.completed, snap, contacts)
        dup = duplicate_assignments(snap, contacts)
        unassigned = [c for c in contacts if c not in snap.assignments]
        return {
            "fault": name, **account(tr.acked, snap, ids),
            "duplicate_assignments": dup["duplicate_assignments"], "duplicate_contacts": dup["duplicate_contacts"],
            "contacts_opened": len(contacts), "contacts_assigned": dup["contacts_assigned"], "contacts_unassigned": len(unassigned),
            "reoffered_contacts": dup["reoffered_contacts"], **still_open,
            "counted_twice": len(snap.counted_twice), "counted_twice_sample": snap.counted_twice[:5],
            "full_rings": snap.full_rings, "dead_letters_so_far": snap.dead_letters,
            "whole_run": {"events_sent": len(tr.acked), "lost": whole_lost,
                          "duplicate_assignments": duplicate_assignments(snap)["duplicate_assignments"],
                          "contexts": snap.contexts, "interactions_total_sum": snap.interactions_total,
                          "interaction_ids_sent": len(tr.interactions), "resent_after_failure": tr.resent,
                          "interactions_counted_once": snap.interactions_total == len(tr.interactions)},
            **({"lost_at_first_look": first_look, "looked_again_after_s": LOOK_AGAIN_S} if first_look else {}),
            **({"left_open_at_first_look": first_open, "looked_again_after_s": LOOK_AGAIN_S} if first_open else {}),
        }

    # ------------------------------------------------------------------ the faults
    async def kill9(self) -> dict[str, Any]:
        async def inject() -> dict[str, Any]:
            owned = await self.partitions_owned(1)
            at = time.time()
            self.killing.add(1)
            await asyncio.to_thread(self.workers.kill_9, 1)
            self.killing.discard(1)
            log(f"kill -9 of worker 1 (owned {owned} input partitions); restart in {self.a.down_s:.0f} s")
            await asyncio.sleep(self.a.down_s)
            await asyncio.to_thread(self.workers.start, 1)
            return {"injected_at": at, "cleared_at": time.time(), "killed_worker_partitions": owned, "down_s": self.a.down_s,
                    "restart_ready_s": round(time.time() - at - self.a.down_s, 1)}

        before = await self.router_advisors()
        entry, sent = await self.under_load("kill9", inject)
        self.kill_recording = sent
        entry["recovery_basis"] = "from the restarted worker ready (fault cleared); recovery_since_kill_s from the kill"
        entry["recovery_since_kill_s"] = None if entry["recovery_s"] is None else round(
            entry["recovery_s"] + entry["fault_cleared_s"] - entry["fault_started_s"], 1)
        after = await advisors_once_answered(self.servers.redis_url)
        entry["router_advisors_before"], entry["router_advisors_after"] = before, after
        entry["advisors_left_busy"] = (after or {}).get("busy", 0)
        return entry

    async def kill9_big(self) -> dict[str, Any]:
        await self.prefill(self.a.big_customers)
        self.result["baseline_big"] = await self.baseline(self.bg)
        entry = await self.kill9()
        entry["fault"] = "kill9"
        return entry

    async def broker_outage(self) -> dict[str, Any]:
        async def inject() -> dict[str, Any]:
            at = time.time()
            await asyncio.to_thread(self.servers.stop_broker)
            log(f"kafka stopped; starting it again in {self.a.outage_s:.0f} s")
            await asyncio.sleep(self.a.outage_s - (time.time() - at))
            ready = await asyncio.to_thread(self.servers.start_broker)
            return {"injected_at": at, "cleared_at": time.time(), "outage_s": round(time.time() - at, 1),
                    "broker_start_s": round(ready, 1)}

        entry, _ = await self.under_load("broker_outage", inject)
        return entry

    async def redis_outage(self) -> dict[str, Any]:
        import aiohttp

        async def inject() -> dict[str, Any]:
            at = time.time()
            assigned_before = len(self.traffic.first_assignment)
            await asyncio.to_thread(self.servers.stop_redis)
            log(f"redis stopped; starting it again in {self.a.outage_s:.0f} s")
            probes: list[dict[str, Any]] = []
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
                while time.time() - at < self.a.outage_s:
                    for e in self.workers.live():  # every worker's API: one may be restarting
                        for route in (f"/customers/{customer_ref(1)}/context", "/healthz"):
                            try:
                                async with s.get(e.http + route, headers={"X-API-Key": API_KEY}) as r:
                                    probes.append({"route": route, "status": r.status, "body": (await r.text())[:300]})
                            except Exception as exc:
                                probes.append({"route": route, "status": None, "body": repr(exc)[:300]})
                    await asyncio.sleep(max(0.5, self.a.outage_s / 6))
            opened = [c for c, p in self.traffic.contact_planned.items() if at <= p <= time.time()]
            routed = sum(1 for c in opened if c in self.traffic.first_assignment)
            await asyncio.to_thread(self.servers.start_redis)
            statuses: dict[str, dict[str, int]] = {}
            for p in probes:
                by = statuses.setdefault(p["route"], {})
                by[str(p["status"])] = by.get(str(p["status"]), 0) + 1
            return {"injected_at": at, "cleared_at": time.time(), "outage_s": round(time.time() - at, 1),
                    "contacts_opened_during": len(opened), "contacts_assigned_during": routed,
                    "assignments_read_during": len(self.traffic.first_assignment) - assigned_before,
                    "api_during": statuses, "api_during_samples": _distinct(probes)}

        entry, _ = await self.under_load("redis_outage", inject)
        return entry

    async def duplicates(self) -> dict[str, Any]:
        """A phase's recording sent a second time (byte for byte), then new records each sent twice."""
        tr = self.traffic
        recording = getattr(self, "kill_recording", None) or await self.load(self.bg, 10)
        await tr.settle(self.lag)
        snap0 = await snapshot(self.servers.broker_url, self.servers.redis_url, self.prefix, self.app_id, tr.interactions, RING)
        t0 = time.time()
        copies0 = tr.copies
        await tr.send_all(recording, restamp=False)  # the same recording again
        replay_s = await tr.settle(self.lag)
        snap1 = await snapshot(self.servers.broker_url, self.servers.redis_url, self.prefix, self.app_id, tr.interactions, RING)
        changed = [c for c, v in snap1.by_customer.items() if snap0.by_customer.get(c) != v]
        replayed_contacts = {p.record.contact_id for p in recording if getattr(p.record, "needs_advisor", False)}
        new_assignment_ids = sum(len(snap1.assignments.get(c, set()) - snap0.assignments.get(c, set())) for c in replayed_contacts)
        replay = {
            "records_sent_again": len(recording), "copies_acknowledged": tr.copies - copies0,
            "contexts_changed": len(changed), "contexts_changed_sample": changed[:5],
            "interactions_total_sum_before": snap0.interactions_total, "interactions_total_sum_after": snap1.interactions_total,
            "assignment_ids_new_for_replayed_contacts": new_assignment_ids,
            "assignment_records_before": snap0.assignment_records, "assignment_records_after": snap1.assignment_records,
            "dead_lettered_by_replay": len(set(snap1.dead_lettered) - set(snap0.dead_lettered)), "drain_s": round(replay_s, 1),
        }
        # a producer that re-sends: every record again 1-50 records later (as after a lost acknowledgement)
        before = set(tr.acked)
        t1 = time.time()
        fresh = [next(self.stream) for _ in range(self.a.retry_records)]
        order: list[Planned] = []
        later: list[tuple[int, Planned]] = []
        for n, p in enumerate(fresh):
            order.append(p)
            later.append((n + 1 + (n * 7919) % 50, p))
            order.extend(q for due, q in later if due == n)
        order.extend(q for due, q in later if due >= len(fresh))
        interactions0 = len(tr.interactions)
        for p in order:
            r = p.record
            if getattr(r, "needs_advisor", False) and r is not None and getattr(r, "contact_id", None):
                tr.contact_planned.setdefault(r.contact_id, time.time())  # type: ignore[union-attr]
        stamped = {id(p): p.restamped(time.time()) for p in fresh}
        await tr.send_all((stamped[id(p)] for p in order), restamp=False)
        retry_s = await tr.settle(self.lag)
        entry = await self.accounted("duplicates", before, t1)
        snap2 = self.last_snap
        entry.update({
            "customers": self.customers, "replay": replay,
            "producer_retries": {"records": len(fresh), "sent": len(order), "drain_s": round(retry_s, 1),
                                 "interactions_total_sum_delta": snap2.interactions_total - snap1.interactions_total,
                                 "distinct_interactions_acknowledged": len(tr.interactions) - interactions0},
            "assignment_ids_stable": new_assignment_ids == 0, "recovery_s": None,
            "recovery_basis": "no outage: the figures are the drains after each duplicate stream",
        })
        entry["started_s"] = round(t0 - t1, 1)
        return entry

    async def overload(self) -> dict[str, Any]:
        a, tr = self.a, self.traffic
        rate = 2 * self.result["sustainable"]["rate"]
        before = set(tr.acked)
        t0 = time.time()
        died: list[dict[str, Any]] = []
        watchdog = asyncio.ensure_future(self.watchdog(t0, died))
        await self.load(rate, a.overload_s)
        t_end = time.time()
        caught = None
        while time.time() - t_end < 1800:  # no new input: how long until the lag is normal again
            lag = tr.lag_now()
            if lag is not None and lag <= self.lag_normal:
                caught = time.time() - t_end
                break
            await asyncio.sleep(0.5)
        abandoned = await tr.abandon_waiting(t0)  # the callers still waiting hang up: the queue empties
        try:
            drain_s = await tr.settle(self.lag, timeout=1800)
        finally:
            watchdog.cancel()
        entry = await self.accounted("overload", before, t0)
        entry["abandoned_after_catch_up"] = abandoned
        entry["workers_died"] = died
        per_min: list[dict[str, Any]] = []
        for m in range(0, int((time.time() - t0) // 30) + 1):
            w = [s for s in tr.samples if t0 + 30 * m <= s.at < t0 + 30 * (m + 1)]
            if w:
                per_min.append({"t_s": 30 * m, "rss_mb_max": max((sum(s.rss_mb) for s in w), default=None),
                                "lag_max": max((s.lag for s in w if s.lag is not None), default=None)})
        rss = [sum(s.rss_mb) for s in tr.samples if t0 <= s.at <= t_end and s.rss_mb]
        lags = [(s.at - t0, s.lag) for s in tr.samples if t0 <= s.at <= t_end and s.lag is not None]
        growth = _slope(lags)
        entry.update({
            # an overload is one only if the lag grew: the backlog the engine could not keep up with
            "overloaded": growth is not None and growth > 0.05 * rate,
            "lag_growth_per_s": None if growth is None else round(growth, 1),
            "customers": self.customers, "rate": rate, "sustainable_rate": self.result["sustainable"]["rate"],
            "overload_s": a.overload_s,
            "lag_peak": max(self.lag_series(t0, t_end) or [0]), "catch_up_s": None if caught is None else round(caught, 1),
            "recovery_s": None if caught is None else round(caught, 1),
            "recovery_basis": "from the end of the overload (no new input) until the lag is normal again",
            "drain_s": round(drain_s, 1), "rss_mb_first_30s_max": per_min[0]["rss_mb_max"] if per_min else None,
            "rss_mb_peak_workers": max(rss) if rss else None, "every_30s": per_min,
        })
        return entry

    # ------------------------------------------------------------------ engine state
    async def partitions_owned(self, i: int) -> float | None:
        import aiohttp

        e = self.workers.procs[i]
        if e is None:
            return None
        async with aiohttp.ClientSession() as s, s.get(e.http + "/metrics", headers={"X-API-Key": API_KEY}) as r:
            for line in (await r.text()).splitlines():
                if line.startswith("cx_stages_partitions_owned "):
                    return float(line.split()[1])
        return None

    async def router_advisors(self) -> dict[str, Any] | None:
        stats = await router_stats(self.servers.redis_url)
        return None if stats is None else stats.get("advisors")


def _distinct(probes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for p in probes:
        k = (p["route"], p["status"])
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out


METHOD = {
    "accounting": "each input the broker acknowledged to the harness (a failed send is sent again) is processed "
                  "(customer events: its id in the dedupe ring recent_event_ids of its customer's context copy in Redis; "
                  "advisor events: on cx.routing.v1 below the stages' committed offset), else dead-lettered (its id in a "
                  "cx.dead-letter.v1 raw payload), else lost; unverified = a customer event of a context whose ring is full",
    "contacts_left_open": "contacts opened in the phase that a desktop completed (its contact_completed acknowledged) "
                          "with no completed or abandoned event on cx.routing-events.v1: an end the router never applied",
    "duplicate_assignments": "contacts with two or more assignment ids on cx.assignments.v1 and no offer_timeout, "
                             "offer_rejected or transferred routing event (those are re-offers)",
    "counted_twice": "contexts whose interactions_total exceeds the interaction ids their ring holds",
    "recovery_s": "from the fault cleared to the first moment from which, for 5 s, the summed cx_consumer_lag_records of "
                  "the workers is normal and every contact opened is assigned within the normal e2e less its wait at the router "
                  "for an advisor (its first assignment's waited_s: the routing policy's holds and the advisors' capacity, "
                  "not the engine's) (baseline.normal); recovery_with_router_queue_s counts that wait too (the criterion "
                  "until December 7); after_fault says, per 10 s, what held either back",
    "e2e": "a contact's first assignment read by an independent consumer minus the planned send time of its contact_opened",
    "rss": "resident memory of the two workers' process trees (engine + its HTTP API processes), summed",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/chaos/chaos.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and short faults, for trying (~15 minutes)")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "chaos.json"), help="where to write the result")
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--big-customers", type=int, default=100_000, help="customers for the second kill -9 (kill9_big)")
    p.add_argument("--advisors", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--faults", default="kill9,broker_outage,redis_outage,duplicates,overload,kill9_big")
    p.add_argument("--start-rate", type=float, default=100.0)
    p.add_argument("--sustainable-rate", type=float, default=0.0,
                   help="skip the search and take this rate as sustainable (one an earlier run measured on this machine)")
    p.add_argument("--step-s", type=float, default=20.0)
    p.add_argument("--max-steps", type=int, default=7)
    p.add_argument("--background-share", type=float, default=0.5, help="background rate during faults, share of the sustainable rate")
    p.add_argument("--baseline-s", type=float, default=20.0)
    p.add_argument("--pre-s", type=float, default=15.0, help="traffic before a fault")
    p.add_argument("--down-s", type=float, default=10.0, help="how long the killed worker stays down")
    p.add_argument("--outage-s", type=float, default=30.0, help="broker and Redis outages")
    p.add_argument("--min-post-s", type=float, default=30.0)
    p.add_argument("--max-post-s", type=float, default=180.0)
    p.add_argument("--retry-records", type=int, default=3000, help="new records a retrying producer sends twice")
    p.add_argument("--overload-s", type=float, default=300.0)
    p.add_argument("--keep", action="store_true", help="keep the servers' and workers' folders (logs); kept anyway when a fault lost an input or assigned a contact twice")
    return p


QUICK = {"customers": 2000, "big_customers": 5000, "step_s": 8.0, "max_steps": 5, "baseline_s": 8.0, "pre_s": 5.0,
         "down_s": 5.0, "outage_s": 10.0, "min_post_s": 10.0, "max_post_s": 60.0, "retry_records": 500, "overload_s": 30.0}


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, y) points (None under 3 points)."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return None if var == 0 else sum((t - mt) * (y - my) for t, y in points) / var


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its clients' retries while the broker is away are expected
    if a.quick:
        defaults = parser().parse_args([])
        for k, v in QUICK.items():
            if getattr(a, k) == getattr(defaults, k):
                setattr(a, k, v)
    def terminated(signum: int, _: Any) -> None:  # `timeout` or Ctrl-C: no worker is left running
        kill_all_workers()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    try:
        result = asyncio.run(Chaos(a).run())
    except KeyboardInterrupt:
        kill_all_workers()
        raise
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    bad = failed(result["faults"])
    log(f"wrote {out}; " + (f"faults with loss, duplicates, contacts left open, advisors left busy or errors: {bad}" if bad
                             else "nothing lost, no contact assigned twice or left open, no advisor left busy"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
