"""``cxstream bench pipeline``: the real engine on the embedded broker, open-loop, with two references.

One run, one machine, one broker (see docs/PERFORMANCE.md for the method and results):

1. starts the embedded Apache Kafka and Redis, as ``cxstream run`` would;
2. measures the references on that broker, each on the same N pre-produced workload
   records: ``raw_aiokafka`` (``bench/pipeline/raw_aiokafka.py``) and ``naive_faust``
   (``bench/pipeline/naive_faust_app.py``: a counter per key, one output), in subprocesses,
   and ``naive_faust_pipeline``: the engine itself with its stages as plain Faust agents, one
   event at a time (``CX_STAGE_RUNTIME=faust``, :mod:`cxstream.streams.faust_stages`),
   drained like the engine;
3. starts ``--workers`` engine processes (``python -m cxstream.cli run`` pointed at the
   servers through ``CX_BROKER_URL``/``CX_REDIS_URL``, one topic prefix, one consumer group),
   logs the advisors in and prefills the context table with ``--customers`` customers;
4. drives the seeded workload (:mod:`cxstream.bench.workload`) open-loop at a rate:
   every record has a planned send time and its event time is re-stamped to it; an
   independent consumer of ``cx.assignments.v1`` takes the end timestamp; simulated
   desktops (:func:`cxstream.replay.desktop.respond`) accept and complete each offer so
   advisors free up; latencies go into HDR histograms, the warm-up is discarded;
5. ``--find-max``: steps the rate up, then bisects, to the highest rate the engine keeps up
   with; bisects again (``--latency-steps``) to the highest rate whose e2e p99 stays under
   ``--p99-limit-ms`` (of every contact, then of those offered on arrival) in most of
   ``--latency-repeats`` steps at that rate; then runs at half that rate
   with 1,000 context lookups per second (``python -m cxstream.bench.lookups``);
6. reports table state per customer (Redis copies of the contexts: ``STRLEN`` and
   ``MEMORY USAGE`` of sampled ``cx:ctx:*`` keys) and the engines' RSS, and writes JSON.

Definitions (also in the JSON's ``method``):

* offered_rate: generator events per second planned; the desktops' answers (3 per
  assignment) come on top and are reported as ``offered_total_rate``.
* achieved_rate: input records the engine(s) accepted per second during the measured
  window: the increase of ``cx_events_in_total{outcome="accepted"}`` on the three input
  topics (Prometheus ``/metrics`` of every worker) over the window's wall time.
* e2e: wall time at which the independent consumer read a contact's first assignment
  minus the planned send time of its ``contact_opened`` (= its event time): it includes
  queueing in the broker and engine, and any wait for a free advisor (reported apart as
  ``router_waited_p99_s``).  A contact with no assignment by the end of the drain counts
  as missing; a step with more than 1% missing fails.  If the engine has consumed everything
  (group lag <= 50) and the router reports at least that many contacts waiting, they wait for
  an advisor (staffing): the step still fails the latency criterion but does not stop the
  capacity search, which measures the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import csv
import functools
import heapq
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cxstream.agents.fastpath import FAST_HEADER
from cxstream.bench.engineproc import engine_env
from cxstream.bench.lookups import (
    PACERS,
    SCHEDS,
    leave_fifo,
    lookups_command,
    lookups_result,
    request_fifo,
    start_lookups,
)
from cxstream.bench.workload import Workload, WorkloadConfig, mix
from cxstream.intel.churn import ChurnModel
from cxstream.intel.evaluate import TELCO_FILE, read_labelled_csv
from cxstream.intel.features import telco_features, telco_label
from cxstream.intel.intent import IntentModel
from cxstream.replay.desktop import DesktopProfile, respond
from cxstream.replay.publish import LatencySummary, end_offsets, read_to_end
from cxstream.replay.recording import Planned, plan
from cxstream.schemas import AdvisorEvent, Assignment, InteractionEvent, ResolveRequest, RoutingEvent
from cxstream.streams import topics as t
from cxstream.streams.admin import partitions_of
from cxstream.streams.cpuslice import DEFAULT_LATENCY_SLICE_US, slice_us
from cxstream.streams.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from cxstream.streams.logs import wait_worker_ready
from cxstream.streams.modelstore import save_snapshot
from cxstream.streams.settings import Settings

API_KEY = "bench-pipeline-key"
REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "bench" / "pipeline"
_assignment = msgspec.json.Decoder(Assignment)
_resolve_request = msgspec.json.Decoder(ResolveRequest)
_interaction = msgspec.json.Decoder(InteractionEvent)
_routing_event = msgspec.json.Decoder(RoutingEvent)
# greedy: label values hold braces (route="/customers/{customer_id}/context"); a sample may have no labels
_METRIC = re.compile(r'^(\w+)(?:\{(.*)\})?\s+([0-9.eE+-]+|NaN|\+Inf)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def log(msg: str) -> None:
    print(f"bench pipeline: {msg}", file=sys.stderr, flush=True)


@dataclass
class Options:
    """Everything a run is configured with (recorded in the JSON)."""

    rate: float = 500.0
    duration: float = 20.0
    warmup: float = 3.0
    broker_warmup: float = 180.0  # s at most; until the broker's JIT compilers go quiet (Bench.warm_broker)
    jit_quiet_pct: float = 10.0
    customers: int = 10_000
    workers: int = 1
    find_max: bool = False
    json_out: str | None = None
    seed: int = 7
    advisors: int = 200
    partitions: int = 4
    ref_events: int = 30_000
    skip_refs: bool = False
    lookup_rate: float = 1000.0
    #: the CPU slice (µs) the lookup client asks for (``python -m cxstream.bench.lookups --slice-us``); 0: the default
    lookup_slice_us: float = DEFAULT_LATENCY_SLICE_US
    #: what wakes the lookup client at each planned time (``python -m cxstream.bench.lookups --pacer``)
    lookup_pacer: str = "timerfd"
    #: the lookup client's scheduling class (``python -m cxstream.bench.lookups --sched``): fifo (the real-time
    #: class, as a caller on a machine of its own; fair where Linux refuses it) or fair
    lookup_sched: str = "fifo"
    #: the harness's own scheduling class during each open-loop step (its event loop: the channel systems'
    #: producer, the assignment watcher, the desktops): fair or fifo (``--harness-sched``)
    harness_sched: str = "fair"
    p99_limit_ms: float = 50.0
    start_rate: float = 100.0
    step_duration: float = 10.0
    max_steps: int = 10
    #: after the capacity search, rates that bisect the latency limit's rate, for every contact, then as many on arrival
    latency_steps: int = 5
    latency_step_duration: float = 20.0
    #: steps measured at each rate the latency search decides on (the bracket's ends and each probe); most must meet the limit
    latency_repeats: int = 3
    #: the latency search stops once the rate that missed is within this fraction of the rate that met
    latency_resolution: float = 0.1
    #: a search step during which the machine spent more than this (% of one core) on work that is not the bench's
    #: (``CpuSplit``'s ``other``: the shared machine's other tenants) is measured again, up to DISTURBED_RETRIES times; 0: never
    other_cpu_limit_pct: float = 25.0
    #: a step whose e2e p50 is above this has fallen behind (its backlog grew): not kept up with
    behind_p50_ms: float = 1000.0
    #: before a step, wait up to this long for the group's lag of the previous one to drain
    settle_s: float = 180.0
    prefill: bool = True
    profile_seconds: float = 0.0
    profile_dir: str | None = None
    keep_dir: bool = False
    engine_src: str | None = None
    #: the interpreter the engines run on (default: the harness's own, ``sys.executable``)
    engine_python: str | None = None
    engine_env: dict[str, str] = field(default_factory=dict)
    #: the engine workers on core 0 alone, everything else (broker, Redis, this harness, the engines' API and
    #: learner processes, the lookup client) on the other cores, as a deployment with dedicated cores would have it
    pin_engine: bool = False
    #: GET each engine's /metrics through its API every this many seconds while the engines run, as Prometheus
    #: does (deploy/prometheus scrapes every 5 s); 0: only the harness's own reads at the steps' marks
    scrape_every_s: float = 0.0
    producer_linger_ms: int = 1
    watch_wait_ms: int = 100
    ref_repeats: int = 2
    drain_only: bool = False
    #: with --skip-refs or --drain-only: raw aiokafka's drain of this many pre-produced records first, the hour's yardstick (0: none)
    yardstick_events: int = 0
    #: with --drain-only: also drain with the stages on Faust (the naive reference), alternated, this many rounds
    faust_pipeline_rounds: int = 0
    final_contacts: int = 1000
    max_final_duration: float = 300.0


# --------------------------------------------------------------------------- processes
@dataclass
class EngineProc:
    proc: subprocess.Popen[str]
    http: str
    log: Path

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


ENGINE_CORES = frozenset({0})  # --pin-engine


def other_cores() -> set[int]:
    """The cores --pin-engine leaves to everything but the engine workers."""
    return set(range(os.cpu_count() or 1)) - ENGINE_CORES or set(ENGINE_CORES)


def on_engine_cores(opts: Options) -> Callable[[], None] | None:
    """With --pin-engine, the ``preexec_fn`` that starts a process (an engine, a reference) on the engine's cores."""
    return (lambda: os.sched_setaffinity(0, ENGINE_CORES)) if opts.pin_engine else None


def pin(pid: int, cores: set[int] | frozenset[int]) -> None:
    """Put every thread of process *pid* on *cores* (its threads and children made later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cores)


def runs_command(proc: Any, command: str | None) -> bool:
    """True if *proc* (a psutil process) runs ``python -m cxstream.cli`` *command* (any process if None)."""
    if command is None:
        return True
    try:
        return bool(proc.cmdline()[1:4] == ["-m", "cxstream.cli", command])
    except Exception:  # gone, or a zombie
        return False


def child_pids(engines: Sequence[EngineProc], command: str | None = None) -> list[int]:
    """The engines' descendants: all of them, or those running ``python -m cxstream.cli`` *command*
    (``serve``: the API worker processes; ``learn``: the learner's)."""
    import psutil

    pids = []
    for e in engines:
        with contextlib.suppress(psutil.Error):
            pids += [c.pid for c in psutil.Process(e.proc.pid).children(recursive=True) if runs_command(c, command)]
    return pids


def pin_api_processes(engines: Sequence[EngineProc]) -> list[int]:
    """--pin-engine: the engines' child processes (the API workers and the learner, which inherit the engine's core)
    go to the other cores."""
    moved = child_pids(engines)
    for pid in moved:
        pin(pid, other_cores())
    return moved


def start_engine(
    broker: str, redis_url: str, data_dir: Path, prefix: str, app_id: str, opts: Options, extra_env: Mapping[str, str] | None = None,
) -> EngineProc:
    """One engine worker as a subprocess, like tests/integration/conftest.py does (*extra_env* over ``--engine-env``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = data_dir / "engine.log"
    env = engine_env(
        broker, redis_url, data_dir, prefix=prefix, app_id=app_id, http_port=port, api_key=API_KEY,
        partitions=opts.partitions, extra={**opts.engine_env, **(extra_env or {})},
    )
    cwd = str(REPO)
    if opts.engine_src:  # run another checkout's engine (e.g. a `git archive` of a commit)
        cwd = str(Path(opts.engine_src).resolve())
        env["PYTHONPATH"] = cwd + os.pathsep + env.get("PYTHONPATH", "")
    with log_path.open("w") as f:
        proc = subprocess.Popen(
            [opts.engine_python or sys.executable, "-m", "cxstream.cli", "run"], env=env, stdout=f, stderr=subprocess.STDOUT, text=True,
            cwd=cwd, preexec_fn=on_engine_cores(opts),
        )
    return EngineProc(proc, f"http://127.0.0.1:{port}", log_path)


def wait_ready(engines: list[EngineProc], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    for e in engines:
        wait_worker_ready(e.output, e.proc, max(0.0, deadline - time.monotonic()))


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGINT, timeout: float = 30.0) -> int | None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


class ProcSampler:
    """RSS (MB) and CPU seconds of process trees (the engines; the broker, Redis and the lookup client in :class:`CpuSplit`)."""

    def __init__(self, pids: list[int], part: str = "tree", command: str | None = None) -> None:
        """*part*: ``tree`` (the processes and their descendants), ``main`` (the processes alone) or
        ``children`` (their descendants alone: an engine's API worker processes and its learner's, or with
        *command*, only those running ``python -m cxstream.cli`` *command*)."""
        import psutil

        self._psutil = psutil
        self.part = part
        self.command = command
        self.procs = [psutil.Process(p) for p in pids]
        self._cpu: dict[int, float] = {}  # pid -> its CPU seconds when last read
        self.peak_rss_mb = 0.0
        self.last_rss_mb = 0.0

    def tree(self) -> list[Any]:
        out = []
        for p in self.procs:
            with contextlib.suppress(self._psutil.Error):
                if self.part != "children":
                    out.append(p)
                if self.part != "main":
                    out.extend(c for c in p.children(recursive=True) if runs_command(c, self.command))
        return out

    def rss_mb(self) -> float:
        total = 0
        for p in self.tree():
            with contextlib.suppress(self._psutil.Error):
                total += p.memory_info().rss
        mb = total / 1e6
        self.last_rss_mb = mb
        self.peak_rss_mb = max(self.peak_rss_mb, mb)
        return mb

    def cpu_s(self) -> float:
        """CPU seconds of the trees so far; a process that has exited counts with its last reading."""
        for p in self.tree():
            with contextlib.suppress(self._psutil.Error):
                c = p.cpu_times()
                self._cpu[p.pid] = c.user + c.system
        return sum(self._cpu.values())

    async def run(self, stop: asyncio.Event, every_s: float = 0.5) -> None:
        while not stop.is_set():
            self.rss_mb()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)


# --------------------------------------------------------------------------- engine observation
def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text exposition.

    >>> parse_metrics('cx_events_in_total{outcome="accepted",topic="p.cx.interactions.v1"} 12.0')
    [('cx_events_in_total', {'outcome': 'accepted', 'topic': 'p.cx.interactions.v1'}, 12.0)]
    >>> parse_metrics('# TYPE cx_stages_partitions_owned gauge\\ncx_stages_partitions_owned 21.0')
    [('cx_stages_partitions_owned', {}, 21.0)]
    """
    out = []
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group(2) or ""))
            out.append((m.group(1), labels, float(m.group(3))))
    return out


async def metrics_text(session: Any, engine: EngineProc) -> str:
    """An engine's ``GET /metrics`` through its API, as Prometheus asks it."""
    async with session.get(f"{engine.http}/metrics", headers={"X-API-Key": API_KEY}) as resp:
        return str(await resp.text())


async def scrape(session: Any, engines: list[EngineProc]) -> list[tuple[str, dict[str, str], float]]:
    samples: list[tuple[str, dict[str, str], float]] = []
    for e in engines:
        try:
            samples.extend(parse_metrics(await metrics_text(session, e)))
        except Exception as exc:  # an engine that does not answer is reported by the counts
            log(f"cannot scrape {e.http}/metrics: {exc!r}")
    return samples


async def resolve_times(
    bootstrap: str, topic: str, since_s: float, contacts: set[str], fast_topic: str | None = None,
) -> dict[str, float]:
    """Kafka timestamp (s) of the ``ResolveRequest`` ingest produced for each of *contacts*' opening, from *since_s* on.

    Ingest's producer stamps a record when the stage's batch sends it, so this is when ingest was
    done with the contact's ``contact_opened`` (:func:`hop_breakdown`).  With the identity fast
    path an opening may have gone straight to *fast_topic* (``cx.customer-events.v1``, marked
    ``cx-road: fast``) instead: read from there too.
    """
    out: dict[str, float] = {}
    for m in await read_to_end(bootstrap, topic, since_s=since_s):
        try:
            event = _resolve_request.decode(m.value).event
        except msgspec.DecodeError:
            continue
        contact = getattr(event, "contact_id", None)
        if contact in contacts and event.kind == "contact_opened" and contact not in out:
            out[contact] = m.timestamp / 1000.0
    if fast_topic is not None and len(out) < len(contacts):
        for m in await read_to_end(bootstrap, fast_topic, since_s=since_s):
            if FAST_HEADER not in (m.headers or ()):
                continue
            try:
                opened = _interaction.decode(m.value)
            except msgspec.DecodeError:
                continue
            if opened.contact_id in contacts and opened.kind == "contact_opened" and opened.contact_id not in out:
                out[opened.contact_id] = m.timestamp / 1000.0
    return out


async def queued_contacts(bootstrap: str, topic: str, since_s: float, contacts: set[str]) -> dict[str, str]:
    """Which of *contacts* the router queued (a ``queued`` routing event on *topic* from *since_s* on), and why.

    A contact is queued when no advisor took it on arrival: none eligible was free, or the
    ``default`` policy held it for the customer's last advisor (``sticky_wait_s``) or for a faster
    advisor about to free up.  Its e2e then holds that wait, which is the contact centre's, not the
    engine's.  The event's ``reason`` says which (``unknown`` from a router that did not say).
    """
    out: dict[str, str] = {}
    for m in await read_to_end(bootstrap, topic, since_s=since_s):
        try:
            event = _routing_event.decode(m.value)
        except msgspec.DecodeError:
            continue
        if event.kind == "queued" and event.contact_id in contacts:
            out[event.contact_id] = event.reason or "unknown"
    return out


def by_minute_summary(
    of_contact: Mapping[str, tuple[int, float, float]], queued: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """Each minute's e2e summary, from each contact's ``(minute, e2e s, e2e_decision s)``.

    Under ``decision`` the same contacts' ``e2e_decision``; with *queued* (the contacts the router
    queued: :func:`queued_contacts`), under ``on_arrival`` the e2e of the others, offered on arrival.

    >>> rows = by_minute_summary({"a": (0, 0.010, 0.005), "b": (0, 0.020, 0.006), "c": (1, 0.030, 0.007)}, queued={"b"})
    >>> [(r["minute"], r["count"], r["decision"]["count"], r["on_arrival"]["count"]) for r in rows]
    [(0, 2, 2, 1), (1, 1, 1, 1)]
    """
    minutes: dict[int, tuple[list[float], list[float], list[float]]] = {}
    for c, (minute, e2e, decision) in of_contact.items():
        e, d, a = minutes.setdefault(minute, ([], [], []))
        e.append(e2e)
        d.append(decision)
        if queued is not None and c not in queued:
            a.append(e2e)
    return [{"minute": m, **LatencySummary.of(e).as_dict(), "decision": LatencySummary.of(d).as_dict(),
             **({"on_arrival": LatencySummary.of(a).as_dict()} if queued is not None else {})}
            for m, (e, d, a) in sorted(minutes.items())]


def whole_minutes(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """*rows* (per minute, each with a ``count``) without a last minute that is not whole.

    A last minute with fewer than half the mean count of the others holds the run's last seconds
    only: its percentiles rest on a handful of contacts.

    >>> [r["minute"] for r in whole_minutes([{"minute": 0, "count": 100}, {"minute": 1, "count": 98}, {"minute": 2, "count": 7}])]
    [0, 1]
    """
    rows = list(rows)
    if len(rows) >= 2 and rows[-1]["count"] < 0.5 * sum(r["count"] for r in rows[:-1]) / (len(rows) - 1):
        rows.pop()
    return rows


def minute_trend(rows: Sequence[Mapping[str, Any]], key: str = "p99_ms", *, alpha: float = 0.05) -> dict[str, Any] | None:
    """Whether a per-minute figure (*key* of :func:`by_minute_summary`'s rows) drifts up over a run.

    The Mann-Kendall test (Kendall's tau of the figure against the minute, ``scipy.stats.kendalltau``):
    ``upward`` when tau > 0 with a p-value under *alpha*.  Also the least-squares slope (ms per
    minute) and the medians of the first and second halves, to read the size of a drift.  None
    with fewer than 4 minutes (no test is meaningful).  A last minute that is not whole (fewer
    than half the mean count of the others) is left out: its p99 rests on a handful of contacts.

    >>> flat = [{"minute": m, "count": 100, "p99_ms": v} for m, v in enumerate([20, 22, 19, 21, 20, 22, 19, 21])]
    >>> minute_trend(flat)["upward"]
    False
    >>> rising = [{"minute": m, "count": 100, "p99_ms": 20 + 3 * m} for m in range(8)]
    >>> t = minute_trend(rising); t["upward"], t["slope_ms_per_minute"]
    (True, 3.0)
    """
    from scipy.stats import kendalltau  # a dependency already (River's, and eval nba's L-BFGS)

    rows = whole_minutes([r for r in rows if r.get(key) is not None])
    if len(rows) < 4:
        return None
    xs = [float(r["minute"]) for r in rows]
    ys = [float(r[key]) for r in rows]
    tau, p = kendalltau(xs, ys)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    half = len(ys) // 2
    return {
        "figure": key, "minutes": len(ys), "kendall_tau": round(float(tau), 3), "p_value": round(float(p), 4),
        "upward": bool(tau > 0 and p < alpha), "slope_ms_per_minute": round(slope, 3),
        "first_half_median": round(median(ys[:half]), 3), "second_half_median": round(median(ys[half:]), 3),
        "max": round(max(ys), 3),
    }


def hop_breakdown(
    window: Sequence[str], planned: Mapping[str, float], sent: Mapping[str, float], resolved: Mapping[str, float],
    assigned: Mapping[str, float], first: Mapping[str, tuple[float, Assignment]], slowest_n: int = 20,
    minute_of: Mapping[str, int] | None = None, queued: Collection[str] = (), acked: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Where the e2e of the contacts goes, hop by hop.

    Four segments that add up to the e2e, from the times the harness took and the Kafka
    timestamps producers gave the records (one clock: the same machine):

    * ``send``: planned time to the harness's ``send()`` (the generator's own lateness);
    * ``ingest``: to ingest's ``ResolveRequest`` being produced (the producer's linger, the
      broker, the stages' fetch, ingest's batch);
    * ``identity_to_router``: to the assignment being produced (the broker, the fetch back of
      ``cx.resolve.v1``, identity, context and router in one batch, local delivery between them,
      and any wait at the router; ``router_waited`` gives the assignments' ``waited_s``);
    * ``to_consumer``: to the independent consumer reading it (the broker, its fetch).

    ``router_waited`` is not the wait for a free advisor alone: it is in the router's event
    time (the latest input's), and advisor events reach the router one broker hop sooner than
    contacts (they skip identity), so a contact offered the moment it arrives can show the lag of
    its own path behind theirs.  It cannot be taken off the e2e as staffing.

    ``slowest``: the *slowest_n* contacts by e2e, each with its segments, its planned time and
    what the assignment says of it (channel, attempt, customer, language, intent), to tell a
    tail's cause.

    ``by_minute`` (with *minute_of*, each contact's minute): each segment's p50 and p99 per minute
    for the contacts offered on arrival (not in *queued*), to tell which hop a drift is in.

    ``on_arrival`` (with *queued*): the segments and the slowest of the contacts offered on arrival
    (not in *queued*): the hop their tail is in and, by the slowest's planned times, whether it
    came in one burst.

    ``send_to_ack`` (with *acked*, when the broker's acknowledgement of each contact's opening
    reached the harness): the harness's own produce round trip, the first part of ``ingest``
    (not a segment of its own: the engine may take the record before the acknowledgement is read).

    >>> a = Assignment(assignment_id="a", contact_id="c", customer_id="u", advisor_id="v", routing_group="billing",
    ...                channel="chat", contact_opened_at=1.0, decided_at=1.0, waited_s=0.0)
    >>> out = hop_breakdown(["c", "d"], {"c": 1.0, "d": 1.0}, {"c": 1.001}, {"c": 1.009}, {"c": 1.020}, {"c": (1.030, a)})
    >>> out["contacts"], [round(out[k]["p50_ms"]) for k in ("send", "ingest", "identity_to_router", "to_consumer", "e2e")]
    (1, [1, 8, 11, 10, 30])
    >>> b = Assignment(assignment_id="b", contact_id="d", customer_id="u", advisor_id="v", routing_group="billing",
    ...                channel="chat", contact_opened_at=1.0, decided_at=1.5, waited_s=0.5)
    >>> out = hop_breakdown(["c", "d"], {"c": 1.0, "d": 1.0}, {"c": 1.001, "d": 1.001}, {"c": 1.009, "d": 1.002},
    ...                     {"c": 1.020, "d": 1.502}, {"c": (1.030, a), "d": (1.504, b)}, queued={"d"})
    >>> out["contacts"], out["on_arrival"]["contacts"], round(out["on_arrival"]["ingest"]["p99_ms"]), out["on_arrival"]["slowest"][0]["contact"]
    (2, 1, 8, 'c')
    >>> row, = hop_breakdown(["c"], {"c": 1.0}, {"c": 1.001}, {"c": 1.009}, {"c": 1.020}, {"c": (1.030, a)}, minute_of={"c": 0})["by_minute"]
    >>> row["minute"], row["count"], {k: round(v) for k, v in row["p99_ms"].items()}
    (0, 1, {'send': 1, 'ingest': 8, 'identity_to_router': 11, 'to_consumer': 10})
    """
    names = ("send", "ingest", "identity_to_router", "to_consumer")
    segments: dict[str, list[float]] = {name: [] for name in (*names, "router_waited", "e2e")}
    each: list[tuple[float, str, tuple[float, ...], Assignment]] = []
    for c in window:
        got = first.get(c)
        if got is None or c not in sent or c not in resolved or c not in assigned:
            continue
        consumed, assignment = got
        stamps = (planned[c], sent[c], resolved[c], assigned[c], consumed)
        for name, begin, end in zip(names, stamps, stamps[1:], strict=False):
            segments[name].append(max(0.0, end - begin))
        segments["router_waited"].append(assignment.waited_s)
        segments["e2e"].append(consumed - planned[c])
        each.append((consumed - planned[c], c, stamps, assignment))

    def slowest_of(rows: list[tuple[float, str, tuple[float, ...], Assignment]]) -> list[dict[str, Any]]:
        return [
            {"contact": c, "e2e_ms": round(1000 * e2e, 1), "planned_at": round(stamps[0], 3),
             **{f"{name}_ms": round(1000 * max(0.0, end - begin), 1) for name, begin, end in zip(names, stamps, stamps[1:], strict=False)},
             "router_waited_ms": round(1000 * a.waited_s, 1), "channel": a.channel, "attempt": a.attempt,
             "customer_id": a.customer_id, "language": a.language, "intent": a.intent}
            for e2e, c, stamps, a in heapq.nlargest(slowest_n, rows, key=lambda x: x[0])
        ]

    out: dict[str, Any] = {"contacts": len(segments["e2e"]), **{k: LatencySummary.of(v).as_dict() for k, v in segments.items()},
                           "slowest": slowest_of(each)}
    if queued:  # the same for the contacts offered on arrival: the hop their tail is in, and when it came
        arrived = [row for row in each if row[1] not in queued]
        out["on_arrival"] = {
            "contacts": len(arrived),
            **{name: LatencySummary.of([max(0.0, st[i + 1] - st[i]) for _, _, st, _ in arrived]).as_dict() for i, name in enumerate(names)},
            "slowest": slowest_of(arrived),
        }
    if acked is not None:
        out["send_to_ack"] = LatencySummary.of([acked[c] - sent[c] for _, c, _, _ in each if c in acked]).as_dict()
    if minute_of is not None:
        per: dict[int, dict[str, list[float]]] = {}
        for _, c, times, _ in each:
            if c in queued or c not in minute_of:
                continue
            segs = per.setdefault(minute_of[c], {name: [] for name in names})
            for name, begin, end in zip(names, times, times[1:], strict=False):
                segs[name].append(max(0.0, end - begin))
            if acked is not None and c in acked:
                segs.setdefault("send_to_ack", []).append(acked[c] - sent[c])
        rows = []
        for m, segs in sorted(per.items()):
            summary = {name: LatencySummary.of(v) for name, v in segs.items()}
            rows.append({"minute": m, "count": len(segs[names[0]]),
                         "p50_ms": {name: x.p50_ms for name, x in summary.items()},
                         "p99_ms": {name: x.p99_ms for name, x in summary.items()}})
        out["by_minute"] = rows
    return out


def accepted_inputs(samples: list[tuple[str, dict[str, str], float]], prefix: str) -> float:
    inputs = {prefix + s.name for s in t.INPUTS}
    return sum(
        v for name, labels, v in samples
        if name == "cx_events_in_total" and labels.get("outcome") == "accepted" and labels.get("topic") in inputs
    )


def roads_between(before: list[tuple[str, dict[str, str], float]], after: list[tuple[str, dict[str, str], float]]) -> dict[str, float] | None:
    """The customer events ingest sent by each road between two scrapes, as ``road/reason`` (None: no fast path).

    >>> s = lambda n: [("cx_identity_road_total", {"road": "fast", "reason": "settled"}, n)]
    >>> roads_between(s(10.0), s(25.0)), roads_between([], [])
    ({'fast/settled': 15.0}, None)
    """
    return counts_between(before, after, "cx_identity_road_total", "road", "reason")


def counts_between(
    before: list[tuple[str, dict[str, str], float]], after: list[tuple[str, dict[str, str], float]], name: str, *by: str,
) -> dict[str, float] | None:
    """What counter *name* counted between two scrapes, by the values of the labels *by* (None: the engine has no such counter).

    >>> s = lambda n: [("cx_stage_early_sends_total", {"outcome": "taken"}, n)]
    >>> counts_between(s(3.0), s(10.0), "cx_stage_early_sends_total", "outcome"), counts_between(s(3.0), s(3.0), "cx_stage_early_sends_total", "outcome")
    ({'taken': 7.0}, {})
    """
    end = counter_by(after, name, *by)
    if not end:
        return None
    start = counter_by(before, name, *by)
    return {k: round(v - start.get(k, 0.0), 1) for k, v in sorted(end.items()) if v - start.get(k, 0.0)}


def minute_rows(marks: Sequence[tuple[float, dict[str, float], list[tuple[str, dict[str, str], float]], float]],
                prefix: str) -> list[dict[str, Any]]:
    """The engine's work minute by minute: one row per pair of consecutive *marks*.

    Each mark is ``(time, the CPU seconds by process group then (CpuSplit.cpu_at), a scrape of the
    engines, the machine's steal seconds)``.  A row gives each group's % of one core, the inputs accepted per
    second, the engine's CPU per input (ms), its loop rounds per second, its full (generation 2)
    collections, and the CPU the hypervisor gave other guests (``steal_pct``, of one core): what
    tells a drift of the engine's own cost from a slower machine.

    >>> mk = lambda t, eng, n, steal: (t, {"engine": eng}, [("cx_events_in_total", {"outcome": "accepted", "topic": "cx.interactions.v1"}, n)], steal)
    >>> minute_rows([mk(0.0, 0.0, 0, 0.0), mk(60.0, 30.0, 6000, 1.2)], "")
    [{'minute': 0, 'seconds': 60.0, 'cpu_pct': {'engine': 50.0}, 'inputs_per_s': 100.0, 'engine_ms_per_input': 5.0, 'loop_rounds_per_s': 0.0, 'full_collections': 0.0, 'steal_pct': 2.0}]
    """
    def rose(before: list[tuple[str, dict[str, str], float]], after: list[tuple[str, dict[str, str], float]],
             name: str, label: str, value: str) -> float:
        return counter_by(after, name, label).get(value, 0.0) - counter_by(before, name, label).get(value, 0.0)

    rows = []
    for i, ((t0, c0, s0, st0), (t1, c1, s1, st1)) in enumerate(itertools.pairwise(marks)):
        span = max(1e-6, t1 - t0)
        inputs = accepted_inputs(s1, prefix) - accepted_inputs(s0, prefix)
        rows.append({
            "minute": i, "seconds": round(span, 1),
            "cpu_pct": {k: round(100 * (c1[k] - c0.get(k, 0.0)) / span, 1) for k in c1},
            "inputs_per_s": round(inputs / span, 1),
            "engine_ms_per_input": round(1000 * (c1.get("engine", 0.0) - c0.get("engine", 0.0)) / inputs, 3) if inputs else None,
            "loop_rounds_per_s": round(rose(s0, s1, "cx_stages_loop_seconds_count", "phase", "fetch") / span, 1),
            "full_collections": rose(s0, s1, "python_gc_collections_total", "generation", "2"),
            "steal_pct": round(100 * (st1 - st0) / span, 1),
        })
    return rows


def counter_sum(samples: list[tuple[str, dict[str, str], float]], name: str) -> float:
    return sum(v for n, _, v in samples if n == name)


def counter_by(samples: list[tuple[str, dict[str, str], float]], name: str, *by: str) -> dict[str, float]:
    """*name*'s samples summed by the values of the labels *by* (joined by ``/``; a missing label counts as "").

    >>> s = [("x", {"road": "slow", "reason": "a"}, 1.0), ("x", {"road": "slow", "reason": "b"}, 2.0), ("y", {}, 5.0)]
    >>> counter_by(s, "x", "road"), counter_by(s, "x", "road", "reason")
    ({'slow': 3.0}, {'slow/a': 1.0, 'slow/b': 2.0})
    """
    out: dict[str, float] = {}
    for n, labels, value in samples:
        if n == name:
            key = "/".join(labels.get(label, "") for label in by)
            out[key] = out.get(key, 0.0) + value
    return out


def merge_counts(works: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several workers' :meth:`Bench._work_done` results.

    >>> merge_counts([{"a": {"x": 1.0}, "n": 2.0}, {"a": {"x": 2.0, "y": 1.0}, "n": 3.0}])
    {'a': {'x': 3.0, 'y': 1.0}, 'n': 5.0}
    """
    out: dict[str, Any] = {}
    for work in works:
        for key, value in work.items():
            if isinstance(value, dict):
                into = out.setdefault(key, {})
                for k, v in value.items():
                    into[k] = into.get(k, 0.0) + v
            else:
                out[key] = out.get(key, 0.0) + value
    return out


def histogram_quantiles(
    before: list[tuple[str, dict[str, str], float]], after: list[tuple[str, dict[str, str], float]],
    metric: str = "cx_stage_wait_seconds", label: str = "stage", qs: Sequence[float] = (0.5, 0.99),
) -> dict[str, dict[str, float | None]]:
    """Per value of *label*, quantiles (upper bucket bounds, ms) of the histogram *metric* between two scrapes.

    >>> b = 'cx_stage_wait_seconds_bucket{le="%s",stage="context"} %s'
    >>> after = parse_metrics("\\n".join([b % ("0.005", 50), b % ("0.01", 99), b % ("0.025", 100), b % ("+Inf", 100)]))
    >>> histogram_quantiles([], after)
    {'context': {'p50_ms': 5.0, 'p99_ms': 10.0, 'count': 100.0}}
    >>> histogram_quantiles([], after, label="", qs=(0.999,))  # all series as one, under "?"
    {'?': {'p999_ms': 25.0, 'count': 100.0}}
    """
    def buckets(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for name, labels, v in samples:
            if name == metric + "_bucket":
                per = out.setdefault(labels.get(label, "?"), {})
                per[labels["le"]] = per.get(labels["le"], 0.0) + v
        return out

    b0, b1 = buckets(before), buckets(after)
    result: dict[str, dict[str, float | None]] = {}
    for stage, cum in b1.items():
        base = b0.get(stage, {})
        bounds = sorted(((float(le), cum[le] - base.get(le, 0.0)) for le in cum), key=lambda x: x[0])
        total = bounds[-1][1] if bounds else 0.0
        if total <= 0:
            continue
        row: dict[str, float | None] = {}
        for q in qs:
            le = next((b for b, c in bounds if c >= q * total), None)
            row[f"p{q * 100:g}".replace(".", "") + "_ms"] = None if le is None or le == float("inf") else round(le * 1000, 3)
        row["count"] = total
        result[stage] = row
    return result


def workers_only(samples: list[tuple[str, dict[str, str], float]]) -> list[tuple[str, dict[str, str], float]]:
    """The samples of the workers' own series: without the ``process`` label their learner's carry.

    >>> workers_only([("m", {}, 1.0), ("m", {"process": "learner"}, 2.0)])
    [('m', {}, 1.0)]
    """
    return [x for x in samples if "process" not in x[1]]


def gc_passes(
    before: list[tuple[str, dict[str, str], float]], after: list[tuple[str, dict[str, str], float]],
) -> dict[str, dict[str, float | None]] | None:
    """The workers' collector passes between two scrapes, per generation: their count and p50/p99/p99.9 (ms).

    None: the engines do not export ``cx_gc_pause_seconds`` (older than December 6, 2026).

    >>> c = 'cx_gc_pause_seconds_count{generation="%s"} 0'
    >>> b = 'cx_gc_pause_seconds_bucket{generation="0",le="%s"} %s'
    >>> after = parse_metrics("\\n".join([c % 0, c % 1, c % 2, b % ("0.005", 3), b % ("+Inf", 3)]))
    >>> gc_passes([], after)
    {'0': {'p50_ms': 5.0, 'p99_ms': 5.0, 'p999_ms': 5.0, 'count': 3.0}, '1': {'count': 0.0}, '2': {'count': 0.0}}
    >>> gc_passes([], []) is None
    True
    """
    b, a = workers_only(before), workers_only(after)
    if not any(name == "cx_gc_pause_seconds_count" for name, _, _ in a):
        return None
    out: dict[str, dict[str, float | None]] = {g: {"count": 0.0} for g in ("0", "1", "2")}
    out.update(histogram_quantiles(b, a, "cx_gc_pause_seconds", "generation", (0.5, 0.99, 0.999)))
    return out


def context_route_buckets(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, float]:
    """Cumulative counts per ``le`` of the server-side latency of the context route (all statuses)."""
    out: dict[str, float] = {}
    for name, labels, v in samples:
        if name == "cx_http_request_seconds_bucket" and labels.get("route", "").startswith("/customers/"):
            out[labels["le"]] = out.get(labels["le"], 0.0) + v
    return out


def context_route_shares(
    before: list[tuple[str, dict[str, str], float]], after: list[tuple[str, dict[str, str], float]],
    les: Sequence[str] = ("0.001", "0.002", "0.005", "0.01"),
) -> dict[str, float] | None:
    """Share of the context route's requests between two scrapes answered server-side within each bound.

    >>> b = 'cx_http_request_seconds_bucket{le="%s",route="/customers/{customer_id}/context",status="200"} %s'
    >>> after = parse_metrics("\\n".join([b % ("0.001", 6), b % ("0.002", 9), b % ("+Inf", 10)]))
    >>> context_route_shares([], after, les=("0.001", "0.002"))
    {'share_le_0.001s': 0.6, 'share_le_0.002s': 0.9}
    """
    b0, b1 = context_route_buckets(before), context_route_buckets(after)
    total = b1.get("+Inf", 0.0) - b0.get("+Inf", 0.0)
    if total <= 0:
        return None
    return {f"share_le_{le}s": round((b1.get(le, 0.0) - b0.get(le, 0.0)) / total, 4) for le in les}


def topic_bytes(log_dir: Path | None) -> dict[str, int]:
    """The bytes of each topic's log segments in a broker's ``log.dirs`` (partition folders ``{topic}-{n}``); {} without one.

    What the broker stores of each record: the record batches as produced (their headers, the
    records' keys, values and headers), the same bytes it serves to every consumer.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for part, size in (("cx.a-0", 10), ("cx.a-1", 5), ("app-t-changelog-0", 7)):
    ...     (d / part).mkdir(); _ = (d / part / "00000000000000000000.log").write_bytes(b"x" * size)
    ...     _ = (d / part / "00000000000000000000.index").write_bytes(b"i" * 100)  # indexes are not the records
    >>> sorted(topic_bytes(d).items())
    [('app-t-changelog', 7), ('cx.a', 15)]
    """
    if log_dir is None or not log_dir.is_dir():
        return {}
    out: dict[str, int] = {}
    for part in log_dir.iterdir():
        topic, sep, n = part.name.rpartition("-")
        if not sep or not n.isdigit() or not part.is_dir():
            continue
        size = 0
        for seg in part.glob("*.log"):
            with contextlib.suppress(OSError):  # a segment deleted meanwhile (retention, compaction)
                size += seg.stat().st_size
        out[topic] = out.get(topic, 0) + size
    return out


def produced_by_topic(
    before: tuple[Mapping[str, int], Mapping[str, int]], after: tuple[Mapping[str, int], Mapping[str, int]],
    window_s: float, inputs_per_s: float,
) -> dict[str, dict[str, float | None]]:
    """Each topic's records and bytes written in a window: per second, per input record offered, bytes per record.

    *before* and *after* are (records, bytes) by topic (:meth:`GroupLag.topic_ends`,
    :func:`topic_bytes`); *inputs_per_s* the records offered to the engine a second (the
    workload's and the desktops').  A topic nothing was written to is left out; a changelog the
    broker compacted meanwhile can show fewer bytes (then None).

    >>> produced_by_topic(({"t": 100}, {"t": 1000}), ({"t": 300, "u": 5}, {"t": 21000, "u": 0}), 10.0, 40.0)
    {'t': {'records_per_s': 20.0, 'per_input': 0.5, 'bytes_per_record': 100.0}, 'u': {'records_per_s': 0.5, 'per_input': 0.0125, 'bytes_per_record': None}}
    """
    out: dict[str, dict[str, float | None]] = {}
    for topic in sorted(after[0]):
        records = after[0][topic] - before[0].get(topic, 0)
        if records <= 0:
            continue
        grew = after[1].get(topic, 0) - before[1].get(topic, 0)
        out[topic] = {
            "records_per_s": round(records / window_s, 1),
            "per_input": round(records / window_s / inputs_per_s, 4) if inputs_per_s > 0 else None,
            "bytes_per_record": round(grew / records, 1) if grew > 0 else None,
        }
    return out


class GroupLag:
    """Records the engines' stages still have to read: committed offsets vs end offsets.

    The stages are one consumer group, ``{app_id}.stages`` (:class:`cxstream.streams.batch.BatchRuntime`).
    Reads the committed offsets with a consumer that carries the group id but never joins
    (``AIOKafkaConsumer.committed``).
    """

    CONSUMED = (t.INTERACTIONS, t.ADVISOR_EVENTS, t.OUTCOMES, t.RESOLVE, t.CUSTOMER_EVENTS, t.ROUTING)

    def __init__(
        self, bootstrap: str, app_id: str, prefix: str, consumed: Sequence[t.TopicSpec] = CONSUMED, *, faust: bool = False
    ) -> None:
        """*faust*: the stages run as Faust agents (``CX_STAGE_RUNTIME=faust``): their group is the app id."""
        group = app_id if faust else f"{app_id}.stages"
        self.app_id = app_id
        self.prefix = prefix
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        self.names = [prefix + s.name for s in consumed]
        self.tps: list[TopicPartition] = []

    async def start(self) -> None:
        await self.consumer.start()
        existing = await self.consumer.topics()
        for name in self.names:
            if name in existing:
                self.tps += await partitions_of(self.consumer, name)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.consumer.stop()

    async def committed(self) -> int:
        """The sum of the group's committed offsets on the topics (0 where nothing is committed)."""
        return sum([(await self.consumer.committed(tp)) or 0 for tp in self.tps])

    async def _ends(self, keep: Callable[[str], bool], what: str) -> dict[str, int]:
        """The end offsets of every partition of the topics *keep* takes, summed by topic; {} if unreadable."""
        try:
            names = [n for n in await self.consumer.topics() if keep(n)]
            tps = [tp for n in sorted(names) for tp in await partitions_of(self.consumer, n)]
            ends = await self.consumer.end_offsets(tps) if tps else {}
        except Exception as exc:  # a diagnostic: the step stands without it
            log(f"cannot read the {what}' end offsets: {exc!r}")
            return {}
        out: dict[str, int] = {}
        for tp, end in ends.items():
            out[tp.topic] = out.get(tp.topic, 0) + end
        return out

    def _changelog(self, name: str) -> bool:
        return name.startswith(f"{self.app_id}-") and name.endswith("-changelog")

    def by_table(self, ends: Mapping[str, int]) -> dict[str, int]:
        """The changelogs' part of *ends* (by topic, as :meth:`topic_ends` reads them), by table."""
        head, tail = len(f"{self.app_id}-"), len("-changelog")
        return {topic[head:-tail]: end for topic, end in ends.items() if self._changelog(topic)}

    async def changelog_ends(self) -> dict[str, int]:
        """Records written so far to each table's changelog (``{app_id}-{table}-changelog``), by table; {} if unreadable."""
        return self.by_table(await self._ends(self._changelog, "changelogs"))

    async def topic_ends(self) -> dict[str, int]:
        """Records written so far to each of the engine's topics (its catalogue's and its tables' changelogs), by topic; {} if unreadable."""
        return await self._ends(lambda n: (bool(self.prefix) and n.startswith(self.prefix)) or self._changelog(n), "topics")

    async def lag(self) -> int | None:
        try:
            ends = await self.consumer.end_offsets(self.tps)
            total = 0
            for tp in self.tps:
                committed = await self.consumer.committed(tp)
                total += max(0, ends[tp] - (committed or 0))
            return total
        except Exception as exc:
            log(f"cannot read group lag: {exc!r}")
            return None


# --------------------------------------------------------------------------- the load
@dataclass
class StepResult:
    rate: float
    duration_s: float
    warmup_s: float
    sent: int
    desktop_sent: int
    offered_rate: float
    offered_total_rate: float
    achieved_rate: float | None
    e2e: dict[str, Any]
    e2e_decision: dict[str, Any]
    contacts: int
    missing: int
    router_waited_p99_s: float | None
    send_lag_p99_ms: float | None
    lag_after: int | None
    drain_s: float
    lag_before: int | None
    settle_s: float
    rss_mb: float
    peak_rss_mb: float
    engine_cpu_pct: float | None
    lookups: dict[str, Any] | None = None
    stage_wait: dict[str, Any] | None = None  # per stage: produce -> taken up, p50/p99 (bucket bounds, ms)
    loop_phases: dict[str, Any] | None = None  # the stages' loop: fetch/process/flush/commit per iteration
    loop_lag: dict[str, Any] | None = None  # cx_event_loop_lag_seconds of the engines: p50/p99/p99.9 (bucket bounds, ms)
    gc_pauses: dict[str, Any] | None = None  # cx_gc_pause_seconds of the workers (not their learners), per generation
    broker_gc: dict[str, Any] | None = None  # the broker JVM's stop-the-world pauses in the window (pause_summary)
    fetch_hold_ms: list[float] | None = None  # cx_stage_fetch_hold_ms of each engine at the window's end (fetch pacing)
    fetch_wait_ms: list[float] | None = None  # cx_stage_fetch_wait_ms of each engine at the window's end (the busy wait)
    machine_busy_pct: float | None = None  # all processes, % of one core (200 = both cores of 2 busy)
    cpu_by_process: dict[str, float] | None = None  # the same split: engine, api, learner, broker, redis, harness, lookups, other (CpuSplit)
    changelog_records_per_s: dict[str, float] | None = None  # table changes written per second, by table
    #: every topic the engine wrote to in the window: records a second, per input offered, bytes per record (produced_by_topic)
    produced: dict[str, dict[str, float | None]] | None = None
    waiting_at_router: int | None = None  # the group's contacts waiting at the router after the drain (read when some are missing)
    e2e_by_minute: list[dict[str, Any]] | None = None  # e2e per minute of planned time after the warm-up (does it drift?)
    e2e_trend: dict[str, Any] | None = None  # minute_trend of the per-minute p99: e2e, e2e_decision, e2e_on_arrival
    e2e_on_arrival: dict[str, Any] | None = None  # the e2e of the contacts the router offered on arrival (not queued)
    queued_at_router: dict[str, Any] | None = None  # the contacts it queued (no eligible advisor free, or a policy hold), by reason
    hops: dict[str, Any] | None = None  # the e2e, segment by segment (hop_breakdown)
    #: the window's customer events by road and reason (CX_IDENTITY_FAST_PATH; None without it)
    identity_roads: dict[str, float] | None = None
    #: the worker's early sends (CX_EARLY_SEND_MS) in the window by outcome, and whether they were read back in the next batch
    early_sends: dict[str, dict[str, float] | None] | None = None
    #: a step of two minutes or more: the engine's CPU, rounds and collections and the machine's steal per minute (minute_rows)
    work_by_minute: list[dict[str, Any]] | None = None
    harness_sched: str = "fair"  # the harness's scheduling class in the step (--harness-sched; fair if fifo was refused)
    passed: bool = False
    why: str = ""

    def summary(self) -> str:
        return (
            f"rate {self.rate:.0f}/s: achieved {self.achieved_rate}/s (offered total {self.offered_total_rate}/s), "
            f"e2e p50 {self.e2e.get('p50_ms')} p99 {self.e2e.get('p99_ms')} ms ({self.e2e.get('count')} contacts, "
            f"{self.missing} missing), send lag p99 {self.send_lag_p99_ms} ms, engine cpu {self.engine_cpu_pct}% "
            f"(machine {self.machine_busy_pct}%), "
            f"rss {self.rss_mb:.0f} MB -> {'PASS' if self.passed else 'FAIL'} {self.why}"
        )


class DueQueue:
    """Items sent when due, in due order, by one task that sleeps until the next is due or an earlier one is planned.

    (The simulated desktops' answers: a fixed 5 ms tick cost the harness 200 wake-ups a second
    on the machine it measures.)

    >>> async def demo():
    ...     sent, q = [], DueQueue()
    ...     async def send(item): sent.append((item, time.time()))
    ...     task = asyncio.ensure_future(q.run(send))
    ...     q.plan(time.time() + 5, "late")
    ...     await asyncio.sleep(0.01)  # the task sleeps until "late" is due
    ...     soon = time.time() + 0.01
    ...     q.plan(soon, "soon")
    ...     while not sent and time.time() < soon + 3:
    ...         await asyncio.sleep(0.005)
    ...     q.close()
    ...     await task
    ...     return [item for item, _ in sent], sent[0][1] >= soon, len(q)
    >>> asyncio.run(demo())  # "soon" went when due (not before), long before "late"; "late" was never due
    (['soon'], True, 1)
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = 0
        self._planned = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._heap)

    def plan(self, due: float, item: Any) -> None:
        """Send *item* at *due* (epoch seconds); items due at the same time go in the order planned."""
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, item))
        self._planned.set()

    def close(self) -> None:
        """End :meth:`run` now (what is not due yet is not sent)."""
        self._closed = True
        self._planned.set()

    async def run(self, send: Callable[[Any], Awaitable[None]]) -> None:
        """Until :meth:`close`: await ``send(item)`` for each item once it is due."""
        heap = self._heap
        while not self._closed:
            now = time.time()
            while heap and heap[0][0] <= now:
                _, _, item = heapq.heappop(heap)
                await send(item)
            self._planned.clear()
            wait = heap[0][0] - time.time() if heap else 0.5
            if wait > 0 and not self._closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._planned.wait(), wait)


class Driver:
    """Producer, assignment watcher and simulated desktops around running engines."""

    def __init__(self, bootstrap: str, prefix: str, workload: Workload, opts: Options) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.workload = workload
        self.opts = opts
        self.stream: Iterator[Planned] = workload.planned()
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=opts.producer_linger_ms, acks=1, max_batch_size=65536)
        self.profile = DesktopProfile(ring_s=(0.05, 0.3), time_scale=0.2)
        self.contact_planned: dict[str, float] = {}  # contact id -> planned time of contact_opened
        self.first_assignment: dict[str, tuple[float, Assignment]] = {}  # contact id -> (consumed, assignment)
        self.contact_sent: dict[str, float] = {}  # contact id -> when its contact_opened was handed to the producer
        self.contact_acked: dict[str, float] = {}  # contact id -> when the broker's acknowledgement of it reached the harness
        self.assignment_produced: dict[str, float] = {}  # contact id -> Kafka timestamp of its first assignment (s)
        self.assignments = 0
        self.desktop_sent = 0
        self._desktop = DueQueue()  # (due, topic, key, value with occurred_at 0.0)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.topic_of = {
            t.INTERACTIONS.name: prefix + t.INTERACTIONS.name,
            t.ADVISOR_EVENTS.name: prefix + t.ADVISOR_EVENTS.name,
            t.OUTCOMES.name: prefix + t.OUTCOMES.name,
        }

    async def start(self) -> None:
        await self.producer.start()
        assignments = self.prefix + t.ASSIGNMENTS.name
        start = await end_offsets(self.bootstrap, assignments)
        self._tasks = [
            asyncio.ensure_future(self._watch(assignments, start)),
            asyncio.ensure_future(self._desktop.run(self._answer)),
        ]

    async def stop(self) -> None:
        self._stop.set()
        self._desktop.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.producer.stop()

    async def _watch(self, topic: str, start: dict[TopicPartition, int]) -> None:
        # The fetch wait costs nothing in latency (the broker answers a fetch as soon as a record
        # arrives; aiokafka sends the next one, for all the partitions, once the user has taken
        # what it buffered) but each empty answer is a request for the broker and for this process.
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=self.opts.watch_wait_ms,
                                    isolation_level="read_committed")  # what a desktop sees under exactly-once too
        await consumer.start()
        try:
            consumer.assign(list(start))
            for tp, off in start.items():
                consumer.seek(tp, off)
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=50)
                now = time.time()
                for msgs in batch.values():
                    for m in msgs:
                        a = _assignment.decode(m.value)
                        self.assignments += 1
                        if a.contact_id not in self.first_assignment:
                            self.first_assignment[a.contact_id] = (now, a)
                            self.assignment_produced[a.contact_id] = m.timestamp / 1000.0
                        for step in respond(a, self.profile):
                            rec = msgspec.structs.replace(step.record, occurred_at=0.0)
                            if isinstance(rec, AdvisorEvent):
                                topic_, key = self.topic_of[t.ADVISOR_EVENTS.name], rec.advisor_id
                            else:
                                topic_, key = self.topic_of[t.INTERACTIONS.name], a.customer_id
                            due = now + step.after_s
                            self._desktop.plan(due, (due, topic_, key.encode(), msgspec.json.encode(rec)))
        finally:
            await consumer.stop()

    async def _answer(self, answer: tuple[float, str, bytes, bytes]) -> None:
        """Send a desktop's answer, with the event time stamped at sending (its due time)."""
        due, topic_, key, raw = answer
        value = raw.replace(b'"occurred_at":0.0', f'"occurred_at":{due!r}'.encode(), 1)
        await self.producer.send(topic_, value, key=key)
        self.desktop_sent += 1

    async def send_now(self, records: list[Planned], chunk: int = 5000) -> None:
        """Publish records as fast as the producer goes (event time = now), waiting for delivery."""
        for i in range(0, len(records), chunk):
            futures = []
            for rec in records[i : i + chunk]:
                rec = rec.restamped(time.time())
                futures.append(await self.producer.send(self.topic_of[rec.topic], rec.value, key=rec.key))
            await asyncio.gather(*futures)

    def _acked(self, contact: str, ack: asyncio.Future[Any]) -> None:
        if not ack.cancelled() and ack.exception() is None:
            self.contact_acked[contact] = time.time()

    async def open_loop(self, rate: float, duration_s: float, t0: float) -> tuple[int, list[float], float]:
        """Send ``rate * duration_s`` workload records at their planned times; (sent, lateness s, end)."""
        n = int(rate * duration_s)
        lateness: list[float] = []
        sent = 0
        for i in range(n):
            planned = t0 + i / rate
            delay = planned - time.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            elif i % 16 == 0:
                await asyncio.sleep(0)  # let the assignment watcher and the desktops run
            rec = next(self.stream).restamped(planned)
            record = rec.record
            contact = None
            if isinstance(record, InteractionEvent) and record.needs_advisor and record.contact_id is not None:
                contact = record.contact_id
                self.contact_planned[contact] = planned
            ack = await self.producer.send(self.topic_of[rec.topic], rec.value, key=rec.key)
            if contact is not None:
                self.contact_sent[contact] = time.time()  # the record's Kafka timestamp is taken in send()
                ack.add_done_callback(functools.partial(self._acked, contact))
            lateness.append(max(0.0, time.time() - planned))
            sent += 1
        await self.producer.flush()
        return sent, lateness, t0 + n / rate


DISTURBED_RETRIES = 2  # times a disturbed search step is measured again


def disturbed(res: StepResult, limit_pct: float) -> float | None:
    """The CPU the machine spent on work not the bench's during step *res* (% of one core) if over *limit_pct*, else None.

    >>> class Step:
    ...     cpu_by_process = {"engine": 60.0, "other": 69.8}
    >>> disturbed(Step(), 25.0), disturbed(Step(), 0.0), disturbed(Step(), 80.0)
    (69.8, None, None)
    """
    other = (res.cpu_by_process or {}).get("other", 0.0)
    return other if limit_pct > 0 and other > limit_pct else None


def keeps_up(r: StepResult) -> bool:
    """The engine kept up with the step: achieved what was offered, left no contact unassigned but for staffing, not behind."""
    return "achieved" not in r.why and "unassigned" not in r.why and "behind" not in r.why


def under_limit(r: StepResult, limit_ms: float, *, on_arrival: bool = False) -> bool:
    """The step met the latency target: it passed (kept up, e2e p99 of every contact under the limit),
    or with *on_arrival*, it kept up and the contacts the router offered on arrival had their p99 under *limit_ms*."""
    if not on_arrival:
        return r.passed
    p99 = (r.e2e_on_arrival or {}).get("p99_ms")
    return keeps_up(r) and p99 is not None and p99 < limit_ms


def latency_bracket(steps: Sequence[StepResult], ok: Callable[[StepResult], bool]) -> tuple[float, float | None]:
    """(the highest rate of *steps* that met the target, the lowest rate above it that did not, None if none).

    A rate measured by several steps met the target when more than half of them did: for an odd
    count, when the median of their p99s is under the limit (each p99 of a 10-20 s step is set by
    its worst burst, so one step can land on either side by chance: ``--latency-repeats``).
    A rate below the highest that met it may have missed (one contact held by the routing policy
    makes a p99 of a few hundred contacts): the bracket is above the highest rate that met it."""
    met = rate_verdicts(steps, ok)
    lo = max((rate for rate, (n_met, n) in met.items() if 2 * n_met > n), default=0.0)
    above = [rate for rate, (n_met, n) in met.items() if rate > lo and 2 * n_met <= n]
    return lo, (min(above) if above else None)


def rate_verdicts(steps: Sequence[StepResult], ok: Callable[[StepResult], bool]) -> dict[float, tuple[int, int]]:
    """Per rate of *steps*: (how many of its steps met the target, how many steps it had).

    >>> class S:
    ...     def __init__(self, rate, good): self.rate, self.good = rate, good
    >>> rate_verdicts([S(410, True), S(656, False), S(656, True), S(656, True)], lambda s: s.good)
    {410: (1, 1), 656: (2, 3)}
    """
    out: dict[float, tuple[int, int]] = {}
    for s in steps:
        n_met, n = out.get(s.rate, (0, 0))
        out[s.rate] = (n_met + bool(ok(s)), n + 1)
    return out


def p99s_by_rate(steps: Sequence[StepResult], *, on_arrival: bool, rates: Sequence[float]) -> dict[str, dict[str, Any]]:
    """The e2e p99 of each step at each of *rates* (of the contacts offered on arrival with *on_arrival*), and their median.

    >>> class S:
    ...     def __init__(self, rate, p99): self.rate, self.e2e, self.e2e_on_arrival = rate, {"p99_ms": p99}, {"p99_ms": p99 / 2}
    >>> p99s_by_rate([S(656, 40.0), S(656, 90.0), S(656, 60.0), S(410, 20.0)], on_arrival=False, rates=[656])
    {'656': {'p99_ms': [40.0, 90.0, 60.0], 'median_ms': 60.0}}
    """
    out: dict[str, dict[str, Any]] = {}
    for rate in rates:
        p99s = [((s.e2e_on_arrival if on_arrival else s.e2e) or {}).get("p99_ms") for s in steps if s.rate == rate]
        known = [v for v in p99s if v is not None]
        out[f"{rate:g}"] = {"p99_ms": p99s, "median_ms": round(median(known), 1) if known else None}
    return out


def latency_probe(lo: float, hi: float | None, resolution: float) -> float | None:
    """The rate to try between a rate that met the target (*lo*) and one above it that did not (*hi*),
    or None once they are within *resolution* of *lo* (or there is no such pair).

    >>> latency_probe(410, 656, 0.1), latency_probe(410, 450, 0.1), latency_probe(0.0, 100, 0.1), latency_probe(410, None, 0.1)
    (533, None, None, None)
    """
    if lo <= 0 or hi is None or (hi - lo) / lo <= resolution:
        return None
    return round((lo + hi) / 2)


@dataclass
class Rig:
    """The engines of one broker and what drives and watches them."""

    engines: list[EngineProc]
    sampler: ProcSampler
    rds: Any
    lag: GroupLag
    driver: Driver
    stopped: bool = False


class Bench:
    """One benchmark run: servers, references, engines, steps."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.speed_at_start: dict[str, Any] | None = None  # machine_speed() when the run began
        self.tag = f"{os.getpid():x}{random.Random().getrandbits(16):04x}"
        self.prefix = f"bench{self.tag}."
        self.app_id = f"cxbench-{self.tag}"
        self.base = Path(tempfile.mkdtemp(prefix="cxbench-"))
        self.result: dict[str, Any] = {}
        self.server_pids: dict[str, list[int]] = {}  # the broker's and Redis's processes (set by run())
        #: the broker JVM's pauses that ended between two wall-clock times (set by run(): EmbeddedBroker.gc_pauses)
        self.broker_pauses: Callable[[float, float], list[tuple[float, float]]] | None = None
        self.broker_log_dir: Path | None = None  # the broker's log.dirs (set by run()), for each topic's bytes
        self.engines: list[EngineProc] = []  # every engine running now (run() stops what is left)

    def environment(self) -> dict[str, Any]:
        """The run's :func:`environment`, with where the engines ran from and on which interpreter."""
        return {**environment(self.speed_at_start), "engine_src": self.opts.engine_src or str(REPO),
                "engine_python": interpreter(self.opts.engine_python), "broker_gc": broker_gc(self.opts)}

    # ------------------------------------------------------------------ references
    async def produce_reference_input(self, broker: str, workload: Workload, n: int) -> str:
        topic = f"{self.prefix}ref.in"
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            await admin.create_topics([
                NewTopic(name, num_partitions=self.opts.partitions, replication_factor=1)
                for name in (topic, f"{self.prefix}ref.naive.out", f"{self.prefix}ref.raw.out")
            ])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5, acks=1)
        await producer.start()
        try:
            futures = []
            now = time.time()
            for rec in Workload(workload.config, workload.texts).planned(n):
                rec = rec.restamped(now)
                futures.append(await producer.send(topic, rec.value, key=rec.key))
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return topic

    async def yardstick(self, broker: str, workload: Workload, n: int) -> dict[str, Any]:
        """raw aiokafka's drain of *n* pre-produced workload records on this run's broker, before anything else runs.

        Runs made apart (an A/B's repeats, the drains of ``bench/pipeline/ab.py``) skip the
        references; this one, a few seconds long, says how fast the machine and the broker were
        that hour.  Within a day it moved with the engine's own drain (docs/PERFORMANCE.md), where
        ``machine_speed``, a pure Python loop, did not."""
        topic = await self.produce_reference_input(broker, workload, n)
        raw = await asyncio.to_thread(self.run_raw, broker, topic, n)
        log(f"yardstick: raw_aiokafka drained {n} records at {raw['rate']:.0f}/s")
        return {"events": n, "raw_aiokafka_rate": round(raw["rate"], 1), "raw_aiokafka": raw}

    def run_raw(self, broker: str, topic: str, n: int) -> dict[str, Any]:
        cmd = [sys.executable, str(BENCH_DIR / "raw_aiokafka.py"), "--broker", broker, "--topic-in", topic,
               "--topic-out", f"{self.prefix}ref.raw.out", "--n", str(n), "--group", f"{self.app_id}-raw"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=str(REPO),
                             preexec_fn=on_engine_cores(self.opts))
        if out.returncode != 0:
            raise RuntimeError(f"raw_aiokafka failed: {out.stderr[-2000:]}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    def run_naive_faust(self, broker: str, topic: str, n: int, run: int = 0) -> dict[str, Any]:
        """One run of the naive Faust app over the *n* reference records (its own consumer group per *run*)."""
        result = self.base / f"naive{run}.json"
        env = {
            **os.environ, "NAIVE_BROKER": broker, "NAIVE_TOPIC_IN": topic, "NAIVE_TOPIC_OUT": f"{self.prefix}ref.naive.out",
            "NAIVE_N": str(n), "NAIVE_RESULT": str(result), "NAIVE_APP_ID": f"{self.app_id}-naive{run}",
            "NAIVE_DATADIR": str(self.base / f"naive-data{run}"), "NAIVE_PARTITIONS": str(self.opts.partitions),
        }
        log_path = self.base / f"naive{run}.log"
        with log_path.open("w") as f:
            proc = subprocess.Popen([sys.executable, str(BENCH_DIR / "naive_faust_app.py")], env=env, stdout=f,
                                    stderr=subprocess.STDOUT, cwd=str(self.base),
                                    preexec_fn=on_engine_cores(self.opts))
        try:
            deadline = time.monotonic() + 60 + n / 500
            while not result.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"naive_faust did not finish: {log_path.read_text()[-2000:]}")
                time.sleep(0.2)
            time.sleep(0.1)
            return dict(json.loads(result.read_text()))
        finally:
            stop_process(proc, timeout=20)

    async def engine_drain(self, broker: str, workload: Workload, n: int, *, faust: bool = False, run: int = 0) -> dict[str, Any]:
        """The engine measured like the references: its rate over a backlog of *n* workload records.

        *faust*: the engine with its stages as plain Faust agents (``CX_STAGE_RUNTIME=faust``): the
        naive reference running the same pipeline.  *run*: a number that keeps the topics of
        successive drains apart.

        Its own topic prefix, consumer group and Redis, on the references' broker.  Trained intent
        and churn snapshots are put in that Redis first (:meth:`_seed_models`), since in the
        open-loop runs the desktops' dispositions have taught the learner by then and every message
        is scored.  ``--workers`` engines start (one by default; with several, the drain waits until
        each holds partitions and none is restoring, and each one's CPU is reported); once they are
        ready and their scorers have loaded the models, the advisor logins and *n* records are produced as fast as the producer goes.  The clock runs
        from the first record sent until the group has committed every input record (a batch is
        committed once it went through every stage and its outputs were acknowledged) and its lag
        on every topic it consumes is 0, polled every 50 ms; startup and group join are excluded,
        as for the references.  The engine takes records up as they arrive, so the producer runs
        beside it during the first second or two, on the same two cores: that errs against the
        engine.  No generator and no desktops run meanwhile (contacts queue at the router once the
        advisors are busy).
        """
        kind = "faust" if faust else "drain"
        prefix, app_id = f"{self.prefix}{kind}{run}.", f"{self.app_id}-{kind}{run}"
        # the naive reference runs the same stages on Faust, where the identity fast path is not built
        # (the settings refuse it there): without it, whatever --engine-env says
        extra = {"CX_STAGE_RUNTIME": "faust", "CX_IDENTITY_FAST_PATH": "0"} if faust else {}
        logins = [plan(a) for a in workload.advisor_logins()]
        records = [*logins, *Workload(workload.config, workload.texts).planned(n)]
        total = len(records)
        with contextlib.ExitStack() as servers:
            rds = await asyncio.to_thread(servers.enter_context, EmbeddedRedis(self.base / f"redis-{kind}{run}", cpu_slice_us=redis_slice_us(self.opts)))
            models = await self._seed_models(rds.url, workload, prefix)
            engines = [start_engine(broker, rds.url, self.base / f"engine-{kind}{run}-{i}", prefix, app_id, self.opts, extra)
                       for i in range(self.opts.workers)]
            self.engines.extend(engines)
            progress = GroupLag(broker, app_id, prefix, t.INPUTS, faust=faust)
            lag = GroupLag(broker, app_id, prefix, faust=faust)
            producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5, acks=1)
            try:
                await asyncio.to_thread(wait_ready, engines)
                if self.opts.pin_engine:
                    pin_api_processes(engines)
                await asyncio.sleep(3.0)  # the scorer polls Redis for snapshots every CX_MODEL_REFRESH_S (1 s)
                if len(engines) > 1 or faust:  # (the Faust consumer starts after the engine reports ready)
                    await self._wait_group_settled(engines)
                await progress.start()
                await lag.start()
                await producer.start()
                samplers = [ProcSampler([e.proc.pid]) for e in engines]
                profiler = None
                if self.opts.profile_seconds > 0 and self.opts.profile_dir and py_spy():
                    profiler = await self._start_profiler(engines[0].proc.pid, time.time(), f"{kind}{run}.folded")
                split = CpuSplit({**engine_samplers(engines), **self.server_samplers(), "redis": ProcSampler([p for p in (rds.pid,) if p])},
                                 self.jit_samplers())
                split.mark("began")
                changelogs0 = await lag.changelog_ends()
                began, busy0 = time.time(), machine_busy_s()
                cpu0 = [s.cpu_s() for s in samplers]
                futures = [await producer.send(prefix + r.topic, r.restamped(began).value, key=r.key) for r in records]
                await asyncio.gather(*futures)
                produced_s = time.time() - began
                deadline = time.monotonic() + 90 + total / 200
                done, left = 0, None
                while left != 0:
                    if done < total:
                        done = await progress.committed()
                    else:
                        left = await lag.lag()
                    dead = next((e for e in engines if e.proc.poll() is not None), None)
                    if time.monotonic() > deadline or dead is not None:
                        raise RuntimeError(f"engine drain: {done} of {total} input offsets committed, lag {left}\n"
                                           f"{(dead or engines[0]).output()[-2000:]}")
                    if left != 0:
                        await asyncio.sleep(0.05)
                ended = time.time()
                cpu, busy = [s.cpu_s() for s in samplers], machine_busy_s()
                split.mark("ended")
                changelogs = {table: end - changelogs0.get(table, 0) for table, end in (await lag.changelog_ends()).items()}
                if profiler is not None:  # the drain's profile covers the drain, however long it took
                    await self._finish_profiler(profiler, stop=True)
                works = [await self._work_done(e) for e in engines]
            finally:
                await producer.stop()
                await progress.stop()
                await lag.stop()
                for e in engines:
                    await asyncio.to_thread(stop_process, e.proc)
                    self.engines.remove(e)
        took = max(1e-6, ended - began)
        per_engine = [round(100 * (c - c0) / took, 1) for c, c0 in zip(cpu, cpu0, strict=True)]
        log(f"{'naive Faust pipeline' if faust else 'engine'} drain: {total / took:.0f} events/s ({len(engines)} worker(s), "
            f"{' + '.join(f'{p:.1f}' for p in per_engine)}% of a core)")
        return {
            "events": total, "workload_events": n, "advisor_logins": len(logins), "produced_in_s": round(produced_s, 3),
            "seconds": round(took, 3), "rate": total / took, "workers": len(engines),
            "stage_runtime": "faust" if faust else "batch",
            "engine_cpu_pct": round(sum(per_engine), 1), "engine_cpu_pct_per_worker": per_engine,
            "machine_busy_pct": round(100 * (busy - busy0) / took, 1), "cpu_by_process": split.pct("began", "ended"),
            "changelog_records": changelogs,
            "models": models, "work_done": merge_counts(works),
        }

    async def _wait_group_settled(self, engines: list[EngineProc], timeout_s: float = 60.0) -> None:
        """Wait until every worker holds stage partitions (the group's rebalances after the second join are over)."""
        import aiohttp

        deadline = time.monotonic() + timeout_s
        owned: list[float] = []
        restoring = 0.0
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                samples = [await scrape(session, [e]) for e in engines]
                owned = [counter_sum(s, "cx_stages_partitions_owned") for s in samples]
                restoring = sum(counter_sum(s, "cx_stages_partitions_restoring") for s in samples)
                if all(o > 0 for o in owned) and restoring == 0:
                    await asyncio.sleep(2.0)
                    return
                await asyncio.sleep(0.5)
        log(f"drain: the workers' group did not settle in time (partitions owned {owned}, restoring {restoring}); going on")

    async def _seed_models(self, redis_url: str, workload: Workload, prefix: str) -> dict[str, Any]:
        """Intent and churn snapshots trained on the shared data, saved as the learner saves them.

        Intent: the first 3,000 rows of the Banking77 file the workload's messages come from;
        churn: the first 2,000 Telco rows.  Without the shared data the models stay untrained
        (and the engine does not score), which the result says.
        """
        import redis.asyncio as aioredis

        if workload.text_source == "builtin":
            return {"trained": False, "why": "no shared data: the workload uses its built-in texts"}
        source = Path(workload.text_source)
        intent = IntentModel()
        intent.learn_many(read_labelled_csv(source)[:3000])
        churn = ChurnModel()
        with (source.parents[1] / TELCO_FILE).open(newline="", encoding="utf-8") as f:
            for row in itertools.islice(csv.DictReader(f), 2000):
                churn.learn_one(telco_features(row), telco_label(row))
        client = aioredis.from_url(redis_url)
        try:
            for name, model in (("intent", intent), ("churn", churn)):
                blob = model.to_bytes()
                await save_snapshot(client, name, model.version, blob, prefix)  # the engine's models: its topic prefix
        finally:
            await client.aclose()
        return {"trained": True, "intent_rows": 3000, "churn_rows": 2000,
                "versions": {"intent": intent.version, "churn": churn.version}}

    async def _work_done(self, engine: EngineProc) -> dict[str, Any]:
        """What the engine did, from its ``/metrics``: the proof that a drain did the whole pipeline's work."""
        import aiohttp

        await asyncio.to_thread(wait_ready, [engine])
        async with aiohttp.ClientSession() as session:
            samples = await scrape(session, [engine])
        out: dict[str, Any] = {}
        for name, by in (("cx_events_in_total", "outcome"), ("cx_context_updates_total", "record"),
                         ("cx_model_predict_seconds_count", "model"), ("cx_routing_events_total", "kind"),
                         ("cx_outreach_total", "reason"), ("cx_dead_letters_total", "error_type"),
                         ("cx_identity_road_total", "reason")):
            out[name] = counter_by(samples, name, by)
        out["cx_assignments_total"] = counter_sum(samples, "cx_assignments_total")
        return out

    def final_duration(self, rate: float) -> float:
        """``--duration``, or longer so that the measured window holds ``--final-contacts`` contacts.

        At 50 events/s a contact opens every 0.2 s: 20 s gave ~85 contacts, whose "p99" is
        about the maximum.  The workload opens a contact every ``contact_every`` records.
        """
        every = WorkloadConfig().contact_every
        needed = self.opts.warmup + self.opts.final_contacts * every / max(rate, 1e-6)
        return max(self.opts.duration, min(needed, self.opts.max_final_duration))

    # ------------------------------------------------------------------ steps
    async def step(
        self, driver: Driver, engines: list[EngineProc], sampler: ProcSampler, lag: GroupLag, session: Any,
        rate: float, duration_s: float, lookups: bool = False, profile_pid: int | None = None,
    ) -> StepResult:
        opts = self.opts
        # A step starts on an engine that has caught up: the backlog of a saturating step before
        # it would otherwise be measured as this step's latency and throughput.
        settle_started = time.time()
        lag_before = await lag.lag()
        while time.time() < settle_started + opts.settle_s and (lag_before is None or lag_before > 50):
            await asyncio.sleep(0.5)
            lag_before = await lag.lag()
        settled_s = time.time() - settle_started
        t0 = time.time() + 0.3
        t_warm = t0 + opts.warmup
        stop_sampling = asyncio.Event()
        sampling = asyncio.ensure_future(sampler.run(stop_sampling))
        lookup_proc = None
        lookups = lookups and opts.lookup_rate > 0
        if lookups:
            lookup_proc = await start_lookups(lookups_command(
                engines[0].http, API_KEY, opts.lookup_rate, duration_s, customers=opts.customers, start_at=t0,
                warmup_s=opts.warmup, slice_us=opts.lookup_slice_us, pacer=opts.lookup_pacer,
                sched=opts.lookup_sched,
            ), cwd=str(REPO))
        profiler = None
        if profile_pid is not None and opts.profile_seconds > 0 and opts.profile_dir and py_spy():
            profiler = await self._start_profiler(profile_pid, t_warm)
        marks: dict[str, tuple[float, float, float, list[Any]]] = {}
        machine: dict[str, float] = {}
        changelogs: dict[str, dict[str, int]] = {}
        topics: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
        split = CpuSplit({**engine_samplers(engines), **self.server_samplers(),
                          **({"lookups": ProcSampler([lookup_proc.pid])} if lookup_proc is not None else {})}, self.jit_samplers())

        async def mark(name: str, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.time()))
            split.mark(name)
            marks[name] = (time.time(), sampler.cpu_s(), driver.desktop_sent, await scrape(session, engines))
            machine[name] = machine_busy_s()
            ends = await lag.topic_ends()  # the changelogs' among them: one read of the end offsets per mark
            changelogs[name] = lag.by_table(ends)
            topics[name] = (ends, await asyncio.to_thread(topic_bytes, self.broker_log_dir))

        # A long step is marked every minute too (minute_rows): the engine's CPU per input, its
        # rounds, its full collections and the machine's steal, to tell a drift's cause.
        minute_marks: list[tuple[float, dict[str, float], list[tuple[str, dict[str, str], float]], float]] = []

        async def mark_minutes() -> None:
            await asyncio.sleep(max(0.0, t_warm - time.time()))
            at = t_warm
            while at + 30 <= t0 + duration_s:  # the minutes of by_minute_summary; a last part-minute ends at the step's end
                await asyncio.sleep(max(0.0, at - time.time()))
                name = f"minute-{len(minute_marks)}"
                split.mark(name)
                minute_marks.append((time.time(), split.cpu_at(name), await scrape(session, engines), machine_steal_s()))
                at += 60

        marking = [asyncio.ensure_future(mark("warm", t_warm))]
        if duration_s - opts.warmup >= 120:
            marking.append(asyncio.ensure_future(mark_minutes()))
        desktop_before = driver.desktop_sent
        # The channel systems and desktops stand for other machines; in the real-time class their wake-ups
        # (a send due, an assignment to read) do not wait for the engine's cores.  Children keep the fair class.
        harness_fifo = opts.harness_sched == "fifo" and request_fifo(reset_on_fork=True) is None
        try:
            sent, lateness, t_end = await driver.open_loop(rate, duration_s, t0)
            marking.append(asyncio.ensure_future(mark("end", max(t_end, time.time()))))
            await asyncio.gather(*marking)
            if minute_marks:
                split.mark("minute-end")
                minute_marks.append((time.time(), split.cpu_at("minute-end"), marks["end"][3], machine_steal_s()))
            window = [c for c, p in driver.contact_planned.items() if t_warm <= p < t_end]
            # drain: every contact of the window assigned (or a bounded wait), then the group caught up
            drain_started = time.time()
            deadline = drain_started + max(15.0, duration_s)
            while time.time() < deadline and any(c not in driver.first_assignment for c in window):
                await asyncio.sleep(0.1)
        finally:
            if harness_fifo:
                leave_fifo()
        lag_after = await lag.lag()
        while time.time() < deadline and lag_after is not None and lag_after > 50:
            await asyncio.sleep(0.25)
            lag_after = await lag.lag()
        drain_s = time.time() - drain_started
        stop_sampling.set()
        await sampling
        lookup_result = None
        if lookup_proc is not None:
            try:
                lookup_result = await lookups_result(lookup_proc, timeout=60)
            except RuntimeError as exc:
                log(f"lookup load failed: {exc}")
            if lookup_result is not None and lookup_result.get("client_sched_error"):
                log(f"the lookup client ran in the fair class: {lookup_result['client_sched_error']}")
        if profiler is not None:
            await self._finish_profiler(profiler)
        (w_at, w_cpu, w_desk, w_samples), (e_at, e_cpu, e_desk, e_samples) = marks["warm"], marks["end"]
        window_s = max(1e-6, e_at - w_at)
        achieved = (accepted_inputs(e_samples, self.prefix) - accepted_inputs(w_samples, self.prefix)) / window_s
        waited = []
        of_contact: dict[str, tuple[int, float, float]] = {}  # (minute of planned time, e2e, e2e_decision)
        for c in window:
            got = driver.first_assignment.get(c)
            if got is None:
                continue
            consumed, a = got
            planned = driver.contact_planned[c]
            of_contact[c] = (int((planned - t_warm) // 60), consumed - planned, consumed - a.decided_at)
            waited.append(a.waited_s)
        e2e = [v[1] for v in of_contact.values()]
        decision = [v[2] for v in of_contact.values()]
        waited.sort()
        missing = len(window) - len(e2e)
        lookups_server = context_route_shares(w_samples, e_samples) if lookups else None
        queued: dict[str, str] | None = None
        try:
            queued = await queued_contacts(driver.bootstrap, self.prefix + t.ROUTING_EVENTS.name, t_warm - 1.0, set(of_contact))
        except Exception as exc:  # the e2e stands without the split
            log(f"cannot tell the contacts the router queued: {exc!r}")
        hops = None
        try:
            resolved = await resolve_times(driver.bootstrap, self.prefix + t.RESOLVE.name, t_warm - 1.0, set(window),
                                           self.prefix + t.CUSTOMER_EVENTS.name)
            hops = hop_breakdown(window, driver.contact_planned, driver.contact_sent, resolved,
                                 driver.assignment_produced, driver.first_assignment,
                                 minute_of={c: v[0] for c, v in of_contact.items()} if minute_marks else None,
                                 queued=queued or (), acked=driver.contact_acked)
        except Exception as exc:  # a diagnostic: the step's figures stand without it
            log(f"cannot break the e2e down by hop: {exc!r}")
        if lookup_result is not None and lookups_server is not None:
            lookup_result["server_side"] = lookups_server
            # the API's lookup cache: hit / miss / bypass (None: an engine without it)
            lookup_result["cache"] = counts_between(w_samples, e_samples, "cx_lookup_cache_total", "outcome")
        res = StepResult(
            rate=rate, duration_s=duration_s, warmup_s=opts.warmup, sent=sent,
            desktop_sent=driver.desktop_sent - desktop_before,
            offered_rate=round(sent / duration_s, 1),
            offered_total_rate=round(sent / duration_s + (e_desk - w_desk) / window_s, 1),
            achieved_rate=round(achieved, 1),
            e2e=LatencySummary.of(e2e).as_dict(), e2e_decision=LatencySummary.of(decision).as_dict(),
            contacts=len(window), missing=missing,
            router_waited_p99_s=round(waited[int(0.99 * (len(waited) - 1))], 3) if waited else None,
            send_lag_p99_ms=LatencySummary.of(lateness[int(opts.warmup * rate):]).p99_ms,
            lag_after=lag_after, drain_s=round(drain_s, 2), lag_before=lag_before, settle_s=round(settled_s, 2), rss_mb=round(sampler.last_rss_mb, 1),
            peak_rss_mb=round(sampler.peak_rss_mb, 1),
            engine_cpu_pct=round(100 * (e_cpu - w_cpu) / window_s, 1), lookups=lookup_result,
            stage_wait=histogram_quantiles(w_samples, e_samples),
            loop_phases=histogram_quantiles(w_samples, e_samples, "cx_stages_loop_seconds", "phase"),
            loop_lag=histogram_quantiles(w_samples, e_samples, "cx_event_loop_lag_seconds", "", (0.5, 0.99, 0.999)).get("?"),
            fetch_hold_ms=[v for name, _, v in e_samples if name == "cx_stage_fetch_hold_ms"] or None,
            fetch_wait_ms=[v for name, _, v in e_samples if name == "cx_stage_fetch_wait_ms"] or None,
            gc_pauses=gc_passes(w_samples, e_samples),
            broker_gc=pause_summary(self.broker_pauses(w_at, e_at), window_s) if self.broker_pauses else None,
            machine_busy_pct=round(100 * (machine["end"] - machine["warm"]) / window_s, 1),
            cpu_by_process=split.pct("warm", "end"),
            changelog_records_per_s={table: round((end - changelogs["warm"].get(table, 0)) / window_s, 1)
                                     for table, end in changelogs["end"].items()},
            produced=produced_by_topic(topics["warm"], topics["end"], window_s,
                                       sent / duration_s + (e_desk - w_desk) / window_s) if topics["end"][0] else None,
            e2e_by_minute=by_minute_summary(of_contact, queued),
            e2e_on_arrival=(LatencySummary.of([v[1] for c, v in of_contact.items() if c not in queued]).as_dict()
                            if queued is not None else None),
            queued_at_router=({"contacts": len(queued), "reasons": dict(collections.Counter(queued.values()).most_common()),
                               "e2e": LatencySummary.of([of_contact[c][1] for c in queued]).as_dict()}
                              if queued is not None else None),
            hops=hops,
            identity_roads=roads_between(w_samples, e_samples),
            early_sends={"sent": counts_between(w_samples, e_samples, "cx_stage_early_sends_total", "outcome"),
                         "read_back": counts_between(w_samples, e_samples, "cx_stage_early_read_back_total", "outcome")},
            work_by_minute=minute_rows(minute_marks, self.prefix) if minute_marks else None,
            harness_sched="fifo" if harness_fifo else "fair",
        )
        if res.e2e_by_minute:
            res.e2e_trend = {"e2e": minute_trend(res.e2e_by_minute),
                             "decision": minute_trend([{"minute": r["minute"], **r["decision"]} for r in res.e2e_by_minute]),
                             "on_arrival": (minute_trend([{"minute": r["minute"], **r["on_arrival"]} for r in res.e2e_by_minute])
                                            if queued is not None else None)}
        p99 = res.e2e.get("p99_ms")
        reasons = []
        if p99 is None or p99 >= opts.p99_limit_ms:
            reasons.append(f"e2e p99 {p99} ms >= {opts.p99_limit_ms}")
        if missing > 0.01 * max(1, len(window)):
            res.waiting_at_router = await self._router_waiting(session, engines[0], driver.workload.config.routing_group)
            if lag_after is not None and lag_after <= 50 and (res.waiting_at_router or 0) >= missing:
                # the engine consumed everything and the router holds them: no advisor was free (staffing)
                reasons.append(f"{missing}/{len(window)} contacts waiting for an advisor ({res.waiting_at_router} "
                               f"waiting at the router): staffing, not throughput")
            else:
                reasons.append(f"{missing}/{len(window)} contacts unassigned")
        expected = sent / duration_s + (e_desk - w_desk) / window_s
        if achieved < 0.9 * expected:
            reasons.append(f"achieved {achieved:.0f}/s < 90% of offered {expected:.0f}/s")
        p50 = res.e2e.get("p50_ms")
        if (p50 is not None and p50 > opts.behind_p50_ms) or (lag_after is not None and lag_after > 50):
            # ingest accepts what it is sent long after the stages behind it fell behind: accepted
            # inputs alone called 1,680/s "kept up" with an e2e p50 of 9 s (issue 17, December 3)
            reasons.append(f"behind: e2e p50 {p50} ms (limit {opts.behind_p50_ms:g}), group lag after the drain {lag_after}")
        res.passed = not reasons
        if len(e2e) < 100:
            reasons.append(f"only {len(e2e)} contacts in the window: the p99 is about the max")
        res.why = "; ".join(reasons)
        log(res.summary())
        return res

    async def _router_waiting(self, session: Any, engine: EngineProc, group: str) -> int | None:
        """Contacts waiting at the router of *group* (its live statistics, ``GET /queues/{group}``)."""
        try:
            async with session.get(f"{engine.http}/queues/{group}", headers={"X-API-Key": API_KEY}) as resp:
                if resp.status != 200:
                    return None
                return int((await resp.json())["total"]["waiting"])
        except Exception as exc:  # the figure is optional: without it the contacts count as unassigned
            log(f"cannot read the router's queue statistics: {exc!r}")
            return None

    async def _start_profiler(self, pid: int, at: float, name: str = "engine.folded") -> asyncio.subprocess.Process:
        await asyncio.sleep(max(0.0, at - time.time()))
        out_dir = Path(self.opts.profile_dir or ".")
        out_dir.mkdir(parents=True, exist_ok=True)
        return await asyncio.create_subprocess_exec(
            py_spy() or "py-spy", "record", "--pid", str(pid), "--duration", str(int(self.opts.profile_seconds)), "--rate", "200",
            "--format", "raw", "--output", str(out_dir / name), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )

    async def _finish_profiler(self, proc: asyncio.subprocess.Process, *, stop: bool = False) -> None:
        """Wait for py-spy to write its profile; *stop*: end it now (py-spy writes what it has on SIGINT)."""
        if stop and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout=self.opts.profile_seconds + 30)
            if proc.returncode != 0:
                log(f"py-spy failed: {err.decode()[-1000:]}")
            else:
                log(f"profile written to {self.opts.profile_dir}")
        except TimeoutError:
            proc.kill()

    # ------------------------------------------------------------------ the run
    def server_samplers(self) -> dict[str, ProcSampler]:
        """A CPU sampler per server this run started (``broker``: Kafka and ZooKeeper; ``redis``)."""
        return {name: ProcSampler(pids) for name, pids in self.server_pids.items() if pids}

    def jit_samplers(self) -> dict[str, JitSampler]:
        """``broker_jit``: the broker's JIT compiler threads (a part of ``broker``), if this run started the broker."""
        pids = self.server_pids.get("broker")
        return {"broker_jit": JitSampler(pids)} if pids else {}

    async def run_async(self, broker: str, redis_url: str) -> dict[str, Any]:
        import aiohttp

        opts = self.opts
        cfg = WorkloadConfig(customers=opts.customers, seed=opts.seed, advisors=opts.advisors)
        workload = Workload(cfg)
        sample = list(Workload(cfg, workload.texts).events(5000))
        self.result["workload"] = {
            **asdict(cfg), "text_source": workload.text_source, "texts": len(workload.texts),
            "mix_first_5000": mix(sample),
            "message_share_incl_desktop_answers": round(
                sum(1 for r in sample if getattr(r, "kind", "") == "message") / (len(sample) * (1 + 3 / cfg.contact_every)), 3
            ),
        }
        began = time.time()
        if opts.yardstick_events and (opts.skip_refs or opts.drain_only):
            self.result["yardstick"] = await self.yardstick(broker, workload, opts.yardstick_events)
        if opts.drain_only:
            drains, faust_drains = [], []
            for i in range(max(1, opts.faust_pipeline_rounds)):  # alternated: the machine's speed drifts
                drains.append(await self.engine_drain(broker, workload, opts.ref_events, run=i))
                if opts.faust_pipeline_rounds:
                    faust_drains.append(await self.engine_drain(broker, workload, opts.ref_events, faust=True, run=i))
            drain = drains[0]
            if faust_drains:
                self.result["faust_pipeline_rounds"] = [
                    {"engine_rate": round(d["rate"], 1), "naive_faust_pipeline_rate": round(f["rate"], 1),
                     "ratio": round(d["rate"] / f["rate"], 3), "engine_cpu_pct": d["engine_cpu_pct"],
                     "naive_faust_pipeline_cpu_pct": f["engine_cpu_pct"]}
                    for d, f in zip(drains, faust_drains, strict=True)
                ]
                self.result["naive_faust_pipeline"] = faust_drains
                self.result["drain_ratio_to_naive_faust_pipeline"] = round(
                    median([d["rate"] for d in drains]) / median([f["rate"] for f in faust_drains]), 3)
            return {"engine_drain_rate": round(median([d["rate"] for d in drains]), 1), "engine_drain": drain,
                    "engine_drains": [round(d["rate"], 1) for d in drains], **self.result,
                    "elapsed_s": round(time.time() - began, 1), "options": asdict(opts),
                    "environment": self.environment()}
        # 1. references, on the idle broker
        if not opts.skip_refs:
            log(f"references: producing {opts.ref_events} workload records")
            topic = await self.produce_reference_input(broker, workload, opts.ref_events)
            raw = await asyncio.to_thread(self.run_raw, broker, topic, opts.ref_events)
            log(f"raw_aiokafka: {raw['rate']:.0f} events/s")
            # The naive reference moves by up to 1.7x between runs on a shared machine: measure it
            # --ref-repeats times and keep the fastest, so that the ratio to it errs low, not high.
            naive_runs = [await asyncio.to_thread(self.run_naive_faust, broker, topic, opts.ref_events, i)
                          for i in range(max(1, opts.ref_repeats))]
            naive = {**max(naive_runs, key=lambda r: r["rate"]), "rates": [round(r["rate"], 1) for r in naive_runs]}
            log(f"naive_faust: {naive['rate']:.0f} events/s (fastest of {', '.join(f'{r:.0f}' for r in naive['rates'])})")
            self.result["references"] = {"events": opts.ref_events, "raw_aiokafka": raw, "naive_faust": naive}
            drain = await self.engine_drain(broker, workload, opts.ref_events)
            self.result["references"]["engine_drain"] = drain
            pipeline = await self.engine_drain(broker, workload, opts.ref_events, faust=True)
            self.result["references"]["naive_faust_pipeline"] = pipeline
        # 2. engines
        rig = await self._bring_up(broker, redis_url, workload, "", record_prefill=True)
        steps: list[StepResult] = []
        scrapes: list[float] = []
        scraper: asyncio.Future[None] | None = None
        try:
            async with aiohttp.ClientSession() as session:
                if opts.scrape_every_s > 0:
                    scraper = asyncio.ensure_future(self._scrape_every(session, rig.engines, scrapes))
                self.result["broker_warmup"] = await self.warm_broker(rig.driver, opts.start_rate if opts.find_max else opts.rate)
                profile_pid = rig.engines[0].proc.pid
                if opts.find_max:
                    max_rate, capacity, steps = await self._find_max(rig.driver, rig.engines, rig.sampler, rig.lag, session)
                    self.result["capacity_rate"] = capacity
                    if max_rate > 0:
                        half, basis = max_rate / 2, "half of max_rate_p99_under_limit"
                    else:
                        half, basis = max(5.0, capacity / 2), "half of capacity_rate: no rate met the p99 limit"
                    self.result["final_rate_basis"] = basis
                    log(f"max rate with e2e p99 < {opts.p99_limit_ms} ms: {max_rate:.0f}/s; keeps up to {capacity:.0f}/s; "
                        f"final run at {half:.0f}/s ({basis})")
                    # on the search's broker, with the search's history in its logs
                    final = await self.step(rig.driver, rig.engines, rig.sampler, rig.lag, session, half, self.final_duration(half),
                                            lookups=True, profile_pid=profile_pid)
                    self.result["state_end"] = await self._state_size(rig.rds)
                else:
                    max_rate = None
                    final = await self.step(rig.driver, rig.engines, rig.sampler, rig.lag, session, opts.rate,
                                            self.final_duration(opts.rate),
                                            lookups=True, profile_pid=profile_pid)
                    self.result["state_end"] = await self._state_size(rig.rds)
                if scraper is not None:
                    scraper.cancel()
                    self.result["scrapes"] = {"every_s": opts.scrape_every_s, "count": len(scrapes),
                                              **({"p50_ms": round(median(scrapes), 1), "max_ms": round(max(scrapes), 1)} if scrapes else {})}
        finally:
            if scraper is not None:
                scraper.cancel()
            await self._take_down(rig)
        self.result["elapsed_s"] = round(time.time() - began, 1)
        return self._report(final, steps, max_rate, rig.sampler)

    async def _scrape_every(self, session: Any, engines: list[EngineProc], took_ms: list[float]) -> None:
        """--scrape-every: each engine's ``GET /metrics`` through its API, every ``scrape_every_s``, as Prometheus asks it; the wall times go to *took_ms*."""
        while True:
            await asyncio.sleep(self.opts.scrape_every_s)
            for e in engines:
                started = time.perf_counter()
                try:
                    await metrics_text(session, e)
                except Exception as exc:  # an engine that does not answer is reported by the counts
                    log(f"cannot scrape {e.http}/metrics: {exc!r}")
                else:
                    took_ms.append((time.perf_counter() - started) * 1000)

    async def warm_broker(self, driver: Driver, rate: float) -> dict[str, Any] | None:
        """Send the workload at *rate* in chunks of ``WARM_CHUNK_S`` until the broker's JIT compilers
        use less than ``--jit-quiet-pct`` of a core over a chunk, for at most ``--broker-warmup`` s.

        The open-loop runs come right after the prefill, on a broker whose JIT is still compiling
        the paths that load takes (:class:`JitSampler`); measured then, an A/B compares the
        compiler's work as much as the variants'.  None if this run did not start the broker (or
        ``--broker-warmup 0``); else the seconds it took and the JIT's share of a core per chunk.
        """
        opts = self.opts
        jit = self.jit_samplers().get("broker_jit")
        if jit is None or opts.broker_warmup <= 0:
            return None
        chunks: list[float] = []
        started = time.time()
        while True:
            before, at = jit.cpu_s(), time.time()
            await driver.open_loop(rate, WARM_CHUNK_S, at + 0.05)
            chunks.append(round(100 * (jit.cpu_s() - before) / max(1e-6, time.time() - at), 1))
            if chunks[-1] < opts.jit_quiet_pct or time.time() - started >= opts.broker_warmup:
                break
        quiet = chunks[-1] < opts.jit_quiet_pct
        log(f"broker warm-up at {rate:.0f}/s: {time.time() - started:.0f} s, its JIT at {', '.join(f'{c:.0f}' for c in chunks)} % "
            f"of a core per {WARM_CHUNK_S:.0f} s" + ("" if quiet else f" (not under {opts.jit_quiet_pct:.0f} %: measuring anyway)"))
        return {"seconds": round(time.time() - started, 1), "rate": rate, "chunk_s": WARM_CHUNK_S,
                "jit_pct_per_chunk": chunks, "quiet": quiet}

    async def _bring_up(self, broker: str, redis_url: str, workload: Workload, tag: str, *, record_prefill: bool) -> Rig:
        """Engines started and ready, advisors logged in, the context table prefilled."""
        import redis.asyncio as aioredis

        opts = self.opts
        engines = [
            start_engine(broker, redis_url, self.base / f"engine{tag}{i}", self.prefix, self.app_id, opts)
            for i in range(opts.workers)
        ]
        self.engines.extend(engines)
        await asyncio.to_thread(wait_ready, engines)
        log(f"{len(engines)} engine(s) ready: {', '.join(e.http for e in engines)}")
        if record_prefill:
            self.result["cpu_slices_us"] = cpu_slices(engines, self.server_pids)
        if opts.pin_engine:
            log(f"pinned the API processes {pin_api_processes(engines)} to cores {sorted(other_cores())}")
        rig = Rig(engines, ProcSampler([e.proc.pid for e in engines]), aioredis.from_url(redis_url),
                  GroupLag(broker, self.app_id, self.prefix), Driver(broker, self.prefix, workload, opts))
        await rig.lag.start()
        await rig.driver.start()
        await self._login_advisors(rig.driver, rig.rds, workload)
        rss_before = rig.sampler.rss_mb()
        redis_before = int((await rig.rds.info("memory"))["used_memory"])
        if opts.prefill:
            await self._prefill(rig.driver, rig.rds, workload)
        if record_prefill:
            rss_after = rig.sampler.rss_mb()
            redis_after = int((await rig.rds.info("memory"))["used_memory"])
            self.result["prefill"] = {
                "customers": opts.customers if opts.prefill else 0,
                "engine_rss_mb_before": round(rss_before, 1), "engine_rss_mb_after": round(rss_after, 1),
                "engine_rss_bytes_per_customer": round((rss_after - rss_before) * 1e6 / opts.customers, 1)
                if opts.prefill else None,
                "redis_used_memory_bytes_per_customer": round((redis_after - redis_before) / opts.customers, 1)
                if opts.prefill else None,
                "state_after_prefill": await self._state_size(rig.rds),
                "seconds": round(self._prefill_s, 1) if opts.prefill else 0,
            }
        return rig

    async def _take_down(self, rig: Rig) -> None:
        """Stop what :meth:`_bring_up` started (idempotent)."""
        if rig.stopped:
            return
        rig.stopped = True
        await rig.driver.stop()
        await rig.lag.stop()
        await rig.rds.aclose()
        for e in rig.engines:
            code = await asyncio.to_thread(stop_process, e.proc)
            if code not in (0, None, -2, 130):
                log(f"engine exited with {code}; log tail:\n{e.output()[-1500:]}")
            self.engines.remove(e)

    async def _login_advisors(self, driver: Driver, rds: Any, workload: Workload) -> None:
        logins = [plan(a) for a in workload.advisor_logins()]
        await driver.send_now(logins)
        deadline = time.monotonic() + 60
        key = f"cx:queues:{workload.config.routing_group}"
        while time.monotonic() < deadline:  # the router publishes its stats every tick
            raw = await rds.get(key)
            if raw and orjson.loads(raw).get("advisors", {}).get("available", 0) >= len(logins):
                log(f"{len(logins)} advisors logged in")
                return
            await asyncio.sleep(0.2)
        log("warning: the router did not report every advisor available within 60 s")

    async def _prefill(self, driver: Driver, rds: Any, workload: Workload) -> None:
        n = workload.config.customers
        started = time.time()
        chunk = 20_000
        for lo in range(0, n, chunk):
            await driver.send_now([plan(e) for e in workload.prefill(range(lo, min(n, lo + chunk)), at=time.time())])
        log(f"prefill: {n} customers sent in {time.time() - started:.1f}s; waiting for the engine")
        deadline = time.monotonic() + max(120.0, n / 200)
        last = -1
        while time.monotonic() < deadline:
            # contexts, not all keys: the identity stage's index keys (several per customer) come first
            size = 0
            async for _ in rds.scan_iter(match="cx:ctx:*", count=10_000):
                size += 1
            if size >= n:
                break
            if size // 50_000 != last // 50_000:
                log(f"prefill: {size} contexts in redis")
            last = size
            await asyncio.sleep(0.5)
        self._prefill_s = time.time() - started
        log(f"prefill: done in {self._prefill_s:.1f}s ({n / self._prefill_s:.0f} customers/s end to end)")

    async def _state_size(self, rds: Any, sample: int = 2000) -> dict[str, Any]:
        """Encoded context sizes from sampled Redis copies (``RANDOMKEY`` -> ``STRLEN``, ``MEMORY USAGE``)."""
        lens, usage = [], []
        for _ in range(sample):
            k = await rds.randomkey()
            if k is None:
                break
            if not k.startswith(b"cx:ctx:"):
                continue
            lens.append(int(await rds.strlen(k)))
            usage.append(int(await rds.memory_usage(k) or 0))
        keys = int(await rds.dbsize())
        info = await rds.info("memory")
        lens.sort()
        return {
            "redis_keys": keys,
            "sampled": len(lens),
            "context_bytes_avg": round(sum(lens) / len(lens), 1) if lens else None,
            "context_bytes_p50": lens[len(lens) // 2] if lens else None,
            "context_bytes_p99": lens[int(0.99 * (len(lens) - 1))] if lens else None,
            "context_bytes_max": lens[-1] if lens else None,
            "redis_memory_usage_avg": round(sum(usage) / len(usage), 1) if usage else None,
            "redis_used_memory_mb": round(int(info["used_memory"]) / 1e6, 1),
        }

    async def _undisturbed_step(
        self, driver: Driver, engines: list[EngineProc], sampler: ProcSampler, lag: GroupLag, session: Any,
        rate: float, duration_s: float,
    ) -> StepResult:
        """A search step, measured again while the machine was busy with work not the bench's (``disturbed``).

        The machine is shared: its other tenants once took 50-80 % of a core for six minutes of a
        run (December 6, fifth session), and the steps in them decided the search.  Those steps
        are kept in ``result["disturbed_steps"]``, not among the steps the search reads; after
        DISTURBED_RETRIES, the last one measured counts, disturbed or not.
        """
        limit = self.opts.other_cpu_limit_pct
        for _ in range(DISTURBED_RETRIES):
            res = await self.step(driver, engines, sampler, lag, session, rate, duration_s)
            other = disturbed(res, limit)
            if other is None:
                return res
            log(f"rate {rate:.0f}/s: the machine spent {other:.0f} % of a core on work not the bench's (over {limit:.0f}): "
                "measured again")
            self.result.setdefault("disturbed_steps", []).append({
                "rate": rate, "other_cpu_pct": other, "e2e_on_arrival_p99_ms": (res.e2e_on_arrival or {}).get("p99_ms"),
                "passed": res.passed,
            })
        return await self.step(driver, engines, sampler, lag, session, rate, duration_s)

    async def _find_max(
        self, driver: Driver, engines: list[EngineProc], sampler: ProcSampler, lag: GroupLag, session: Any
    ) -> tuple[float, float, list[StepResult]]:
        """(highest rate passing the p99 limit, highest rate the engine keeps up with, the steps).

        Capacity first: the rate grows x1.6 while the engine keeps up (achieved >= 90% of
        offered, <= 1% contacts unassigned for a reason other than staffing, not behind: e2e p50
        at most ``behind_p50_ms`` and the group's lag drained after the window), then one bisection step.  Then latency: the
        highest passing step; if none passed, the rate halves below the lowest rate kept up
        with, while steps remain (a latency floor shows up as "no rate passes").  Then up to
        ``latency_steps`` rates bisect between the highest rate that met the p99 limit and the
        lowest above it that missed, first for every contact, then as many for the contacts offered
        on arrival (``result["latency_search"]``).  Each rate the search decides on, the bracket's
        two ends included, is measured by ``latency_repeats`` steps of ``latency_step_duration``
        (a grid step counts as one), and meets the limit when most of them do.
        """
        opts = self.opts
        steps: list[StepResult] = []

        async def run(rate: float) -> StepResult:
            res = await self._undisturbed_step(driver, engines, sampler, lag, session, rate, opts.step_duration)
            steps.append(res)
            return res

        good, bad = 0.0, None
        rate = opts.start_rate
        while len(steps) < opts.max_steps - 2:
            r = await run(rate)
            if keeps_up(r):
                good = max(good, rate)
                if bad is None:
                    rate = round(rate * 1.6)
                elif (bad - good) / good <= 0.15:
                    break
                else:
                    rate = round((good + bad) / 2)
            else:
                bad = rate if bad is None else min(bad, rate)
                if good > 0:
                    if (bad - good) / good <= 0.15:
                        break
                    rate = round((good + bad) / 2)
                else:
                    rate = round(rate / 2)
                    if rate < 5:
                        break
        passing = [s.rate for s in steps if s.passed]
        if not passing and good > 0:
            rate = min(s.rate for s in steps if keeps_up(s)) / 2
            while len(steps) < opts.max_steps and rate >= 5:
                if (await run(rate)).passed:
                    break
                rate = round(rate / 2)
        # Latency, finer than the x1.6 grid: bisect between the highest rate that met the target and
        # the lowest one above it that did not, with longer steps (each p99 over more contacts), for
        # every contact and then for the contacts offered on arrival, --latency-steps rates for each.
        # Each rate the search decides on is measured --latency-repeats times, the ends of the bracket
        # too (a grid step is one of them): a rate meets the target when most of its steps do.
        search: dict[str, Any] = {}
        repeats = max(1, opts.latency_repeats)
        for name, on_arrival in (("all", False), ("on_arrival", True)):
            ok = functools.partial(under_limit, limit_ms=opts.p99_limit_ms, on_arrival=on_arrival)
            tried: list[float] = []
            probes = 0
            while probes < opts.latency_steps:
                lo, hi = latency_bracket(steps, ok)
                counts = rate_verdicts(steps, ok)
                unsure = [r for r in (lo, hi) if lo and r and counts[r][1] < repeats]  # (no rate met: the grid's halving decided)
                probe = unsure[0] if unsure else latency_probe(lo, hi, opts.latency_resolution)
                if probe is None:
                    break
                for _ in range(repeats - counts.get(probe, (0, 0))[1]):
                    res = await self._undisturbed_step(driver, engines, sampler, lag, session, probe, opts.latency_step_duration)
                    steps.append(res)
                probes += 1
                tried.append(probe)
                n_met, n = rate_verdicts(steps, ok)[probe]
                log(f"latency search ({name}): {probe:.0f}/s {'met' if 2 * n_met > n else 'missed'} the p99 limit "
                    f"(met in {n_met} of {n} steps)")
            lo, hi = latency_bracket(steps, ok)
            counts = rate_verdicts(steps, ok)
            search[name] = {"max_rate": lo, "lowest_rate_above_that_missed": hi, "probes": tried,
                            "steps_at_max_rate": counts[lo] if lo else None,  # (met, measured): fewer than repeats if the budget ran out
                            "p99_ms_by_rate": p99s_by_rate(steps, on_arrival=on_arrival, rates=tried)}
        self.result["latency_search"] = search
        return search["all"]["max_rate"], good, steps

    def _report(self, final: StepResult, steps: list[StepResult], max_rate: float | None, sampler: ProcSampler) -> dict[str, Any]:
        opts = self.opts
        refs = self.result.get("references", {})
        naive = refs.get("naive_faust", {}).get("rate")
        raw = refs.get("raw_aiokafka", {}).get("rate")
        drain = refs.get("engine_drain", {}).get("rate")
        naive_pipeline = refs.get("naive_faust_pipeline", {}).get("rate")
        all_steps = [*steps, final]
        on_arrival_max = (self.result.get("latency_search") or {}).get("on_arrival", {}).get("max_rate")
        sustained = max((s.achieved_rate or 0.0) for s in all_steps)
        state = self.result.get("prefill", {}).get("state_after_prefill", {})
        out: dict[str, Any] = {
            "offered_rate": final.offered_rate,
            "offered_total_rate": final.offered_total_rate,
            "achieved_rate": final.achieved_rate,
            "e2e_p50_ms": final.e2e.get("p50_ms"),
            "e2e_p99_ms": final.e2e.get("p99_ms"),
            "context_p50_ms": (final.lookups or {}).get("p50_ms"),
            "context_p99_ms": (final.lookups or {}).get("p99_ms"),
            "rss_mb": final.peak_rss_mb,
            "naive_faust_rate": round(naive, 1) if naive else None,
            "raw_aiokafka_rate": round(raw, 1) if raw else None,
            "sustained_rate": sustained,
            "ratio_to_naive_faust": round(sustained / naive, 3) if naive else None,
            "ratio_to_raw_aiokafka": round(sustained / raw, 4) if raw else None,
            "engine_drain_rate": round(drain, 1) if drain else None,
            "drain_ratio_to_naive_faust": round(drain / naive, 3) if (drain and naive) else None,
            "naive_faust_pipeline_rate": round(naive_pipeline, 1) if naive_pipeline else None,
            "drain_ratio_to_naive_faust_pipeline": round(drain / naive_pipeline, 3) if (drain and naive_pipeline) else None,
            "max_rate_p99_under_limit": max_rate,
            "max_rate_ratio_to_naive_faust": round(max_rate / naive, 3) if (naive and max_rate) else None,
            "max_rate_ratio_to_drain": round(max_rate / drain, 3) if (drain and max_rate) else None,
            "max_rate_on_arrival_p99_under_limit": on_arrival_max,
            "max_rate_on_arrival_ratio_to_drain": round(on_arrival_max / drain, 3) if (drain and on_arrival_max) else None,
            "e2e_p99_ms_at_half_max": final.e2e.get("p99_ms") if (opts.find_max and max_rate) else None,
            "e2e_p99_ms_at_half_capacity": final.e2e.get("p99_ms") if (opts.find_max and not max_rate) else None,
            "e2e_p99_upward_trend": ((final.e2e_trend or {}).get("e2e") or {}).get("upward"),
            "e2e_on_arrival_p99_ms": (final.e2e_on_arrival or {}).get("p99_ms"),
            "queued_at_router": (final.queued_at_router or {}).get("contacts"),
            "table_bytes_per_customer": state.get("context_bytes_avg"),
            "customers": opts.customers,
            "workers": opts.workers,
            "final": asdict(final),
            "steps": [asdict(s) for s in steps],
            **self.result,
            "options": {k: v for k, v in asdict(opts).items()},
            "environment": {**self.environment(),
                            "note": "git_head/git_modified describe the harness checkout; the engine ran from engine_src"},
            "method": {
                "offered_rate": "generator records planned per second (open loop, latency from the planned time)",
                "offered_total_rate": "plus the simulated desktops' answers (accept, complete, close per assignment)",
                "achieved_rate": "increase of cx_events_in_total{outcome=accepted} on the 3 input topics, all workers, "
                                 "over the measured window (after warm-up) / window wall time",
                "sustained_rate": "highest achieved_rate of any step (the engine's throughput, saturated or not)",
                "ratio_to_naive_faust": "sustained_rate / naive_faust_rate, both measured in this run (the fastest of "
                                        "--ref-repeats naive runs)",
                "e2e": "first assignment consumed by an independent consumer - planned time (= event time) of its "
                       "contact_opened; HDR histogram; warm-up discarded",
                "e2e_on_arrival": "the e2e of the contacts the router offered on arrival: those without a 'queued' routing "
                                  "event (queued_at_router: no eligible advisor free, or the default policy holding the "
                                  "contact for the customer's last advisor or a faster one); read from the routing events topic",
                "e2e_decision": "consumed - Assignment.decided_at: the router's event clock at the decision, the event time of its latest input (the contact's opening, the advisor event that freed someone, or any input that came after; advisor events reach the router a broker hop before contacts, so it hides part of the contact path's delay), not the wall time of the decision",
                "context": "open-loop GET /customers/{id}/context at lookup_rate from a separate process, "
                           "latency from the planned time (final.lookups.from_send: from each send), during the "
                           "final run; the client paced by a timer file descriptor its event loop watches (final.lookups."
                           "client_pacer; --lookup-pacer thread: by a thread), in the real-time class SCHED_FIFO "
                           "(final.lookups.client_sched; --lookup-sched fair: in the fair class on lookup_slice_us's "
                           "CPU slice); the API processes, Redis and the engine stay in the fair class",
                "cpu_slices_us": "each process's CPU time slice as Linux reported it once the engines were ready "
                                 "(sched_getattr; CX_LATENCY_SLICE_US gives the API processes and Redis theirs)",
                "table_bytes_per_customer": "mean STRLEN of sampled cx:ctx:* Redis copies after the prefill "
                                            "(= the table value: the same encoded CustomerContext bytes)",
                "rss_mb": "peak RSS of the engine process trees during the final run (psutil)",
                "max_rate_p99_under_limit": "with --find-max: the highest step rate that kept up with e2e p99 under "
                                            "p99_limit_ms; found on the capacity search's x1.6 grid, then bisected "
                                            "(latency_search: up to latency_steps rates) between it and the lowest rate "
                                            "above it that missed, to latency_resolution; each rate the search decides "
                                            "on (the two ends too) measured by latency_repeats steps of "
                                            "latency_step_duration s (a grid step counts as one), met when most of "
                                            "them met it (p99_ms_by_rate: each step's p99 and their median)",
                "max_rate_on_arrival_p99_under_limit": "the same, counting only the contacts the router offered on arrival "
                                                       "(e2e_on_arrival): the engine's latency without the routing "
                                                       "policy's holds; bisected after max_rate_p99_under_limit",
                "max_rate_ratio_to_drain": "max_rate_p99_under_limit / engine_drain_rate (issue 17's latency target: "
                                           ">= 0.5); max_rate_on_arrival_ratio_to_drain likewise",
                "final": "with --find-max, at half the max rate on the search's broker and engines (its history kept); "
                         "e2e_by_minute: e2e per minute of planned time after the warm-up (decision: e2e_decision); "
                         "e2e_trend: Mann-Kendall test of the per-minute p99 (Kendall's tau against the minute, upward "
                         "when tau > 0 and p < 0.05; a last partial minute left out), with the least-squares slope",
                "gc_pauses": "cx_gc_pause_seconds of the workers between the step's scrapes, per generation: "
                             "p50/p99/p99.9 as bucket bounds (ms) and the count of passes",
                "broker_gc": "the broker JVM's stop-the-world pauses that ended within the step's window, from its GC "
                             "log (environment.broker_gc names its collector, CX_EMBEDDED_BROKER_GC): pause_summary",
                "hops": "each step's e2e cut at the records' Kafka timestamps: send (planned -> the harness's send()), "
                        "ingest (-> ingest's ResolveRequest produced), identity_to_router (-> the assignment produced, "
                        "router_waited included), to_consumer (-> read by the independent consumer); hop_breakdown; "
                        "by_minute: each hop's p50/p99 per minute of a step of 2 minutes or more (contacts offered on "
                        "arrival); on_arrival: the hops and the slowest of the contacts offered on arrival; "
                        "send_to_ack: the harness's send() -> the broker's acknowledgement",
                "work_by_minute": "a step of 2 minutes or more marked each minute (minute_rows): each process group's "
                                  "CPU, the inputs a second, the engine's CPU per input, its loop rounds a second, its "
                                  "full (generation 2) collections, the machine's steal",
                "references": "same N pre-produced workload records on the same broker; rate from first to N-th event",
                "engine_drain_rate": "the engine measured like the references: the advisor logins and N workload records "
                                     "produced as fast as possible to the input topics of one ready engine (same broker, own "
                                     "Redis, trained model snapshots seeded); records / seconds from the first record sent "
                                     "until every input is committed and the group's lag is 0 (polled every 50 ms); no "
                                     "generator or desktops",
                "drain_ratio_to_naive_faust": "engine_drain_rate / naive_faust_rate (a counter per key and one output "
                                              "per record: no validation, identity, models or routing)",
                "naive_faust_pipeline_rate": "the engine's drain with CX_STAGE_RUNTIME=faust: the same stages, handlers "
                                             "and models as plain Faust agents, one event at a time (a changelog record "
                                             "per table write, an awaited send per output, every hop through the broker)",
                "drain_ratio_to_naive_faust_pipeline": "engine_drain_rate / naive_faust_pipeline_rate: issue 17's "
                                                       "'engine drain / naive Faust running the same pipeline'",
            },
        }
        return out


def broker_gc(opts: Options) -> str:
    """The garbage collector the bench's broker runs: the engine's ``CX_EMBEDDED_BROKER_GC`` (``--engine-env``, else
    its default), as the embedded broker an engine starts itself would.

    >>> broker_gc(Options()), broker_gc(Options(engine_env={"CX_EMBEDDED_BROKER_GC": "shenandoah"}))
    ('g1', 'shenandoah')
    """
    return opts.engine_env.get("CX_EMBEDDED_BROKER_GC") or Settings().embedded_broker_gc


def pause_summary(pauses: Sequence[tuple[float, float]], window_s: float) -> dict[str, Any]:
    """A JVM's stop-the-world pauses in a window (``(end, ms)`` each, :func:`cxstream.streams.embedded.gc_pauses`):
    how many, their sum and its share of the window, the median, the longest and how many took over 5 ms.

    >>> pause_summary([(1.0, 2.0), (2.0, 12.5), (3.0, 4.0)], 10.0)
    {'pauses': 3, 'total_ms': 18.5, 'share_pct': 0.185, 'p50_ms': 4.0, 'max_ms': 12.5, 'over_5ms': 1}
    >>> pause_summary([], 10.0)["pauses"]
    0
    """
    ms = sorted(p for _, p in pauses)
    total = sum(ms)
    return {"pauses": len(ms), "total_ms": round(total, 1), "share_pct": round(100 * total / 1000 / window_s, 3),
            "p50_ms": ms[len(ms) // 2] if ms else None, "max_ms": ms[-1] if ms else None,
            "over_5ms": sum(1 for p in ms if p > 5.0)}


def redis_slice_us(opts: Options) -> float:
    """The CPU slice the bench's Redis runs with: the engine's ``CX_LATENCY_SLICE_US`` (``--engine-env``, else its
    default), as the embedded Redis an engine starts itself would (:mod:`cxstream.streams.cpuslice`).

    >>> redis_slice_us(Options()), redis_slice_us(Options(engine_env={"CX_LATENCY_SLICE_US": "0"}))
    (100.0, 0.0)
    """
    value = opts.engine_env.get("CX_LATENCY_SLICE_US")
    return float(value if value is not None else DEFAULT_LATENCY_SLICE_US)


def cpu_slices(engines: Sequence[EngineProc], server_pids: Mapping[str, Sequence[int]]) -> dict[str, list[float | None]]:
    """The CPU time slice (µs) of each engine, its API processes, Redis and the broker's processes, as Linux reports
    them (``None`` where it cannot say): what ``CX_LATENCY_SLICE_US`` gave, and the default the others have."""
    return {"engine": [slice_us(e.proc.pid) for e in engines], "api": [slice_us(pid) for pid in child_pids(engines, "serve")],
            "learner": [slice_us(pid) for pid in child_pids(engines, "learn")],
            **{name: [slice_us(pid) for pid in pids] for name, pids in server_pids.items()}}


def engine_samplers(engines: Sequence[EngineProc]) -> dict[str, ProcSampler]:
    """:class:`CpuSplit`'s groups for the engines: the engine processes themselves, their API worker processes,
    and their learner processes (``CX_LEARNER_PROCESS``)."""
    pids = [e.proc.pid for e in engines]
    return {"engine": ProcSampler(pids, "main"), "api": ProcSampler(pids, "children", "serve"),
            "learner": ProcSampler(pids, "children", "learn")}


WARM_CHUNK_S = 5.0  # the broker's warm-up sends the load in chunks this long, checking its JIT after each
JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")  # HotSpot's compiler threads (the kernel keeps 15 characters)


class JitSampler:
    """CPU seconds the JVMs' just-in-time compiler threads have used (the broker's Kafka and ZooKeeper).

    A freshly started JVM compiles its hot code for minutes; on this machine's two cores the
    broker's C2 compiler took 65 % of a core during a 30 s run at 80/s right after the prefill,
    more than the broker's own request handling.  A run measured then measures the compiler
    too: :meth:`Bench.warm_broker` waits for it, and every window reports it (``broker_jit``,
    part of ``broker`` in ``cpu_by_process``).  Threads that exit keep their last reading.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self._cpu: dict[tuple[int, int], float] = {}  # (pid, tid) -> its CPU seconds when last read

    def cpu_s(self) -> float:
        for pid in self.pids:
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        if task.joinpath("comm").read_text().replace("_", " ").startswith(JIT_THREADS):
                            self._cpu[(pid, int(task.name))] = stat_cpu_s(task / "stat")
        return sum(self._cpu.values())


def stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds in a ``/proc`` ``stat`` file (of a process, or of one thread under ``task/``)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuSplit:
    """Where the machine's CPU went between two marks: named process groups, this harness, and the rest.

    *groups* are samplers of process trees (the engines, the broker, Redis, the lookup client);
    ``harness`` is this process alone (the generator, the assignment consumer, the simulated
    desktops); ``other`` is the machine's busy time minus all of them (the profiler, the
    machine's other tenants).  *parts* are samplers of a share of a group, reported beside it
    and not counted again in ``other`` (``broker_jit``: the broker's JIT compiler threads).  In %
    of one core, like ``machine_busy_pct``.
    """

    def __init__(self, groups: Mapping[str, ProcSampler], parts: Mapping[str, JitSampler] | None = None) -> None:
        import psutil

        self.groups = dict(groups)
        self.parts = dict(parts or {})
        self._me = psutil.Process()
        self._marks: dict[str, tuple[float, dict[str, float], float]] = {}

    def mark(self, name: str) -> None:
        own = self._me.cpu_times()
        cpu = {k: g.cpu_s() for k, g in self.groups.items()}
        cpu["harness"] = own.user + own.system
        cpu.update({k: g.cpu_s() for k, g in self.parts.items()})
        self._marks[name] = (time.time(), cpu, machine_busy_s())

    def cpu_at(self, name: str) -> dict[str, float]:
        """The CPU seconds by group (``harness`` too) at the mark *name*."""
        return dict(self._marks[name][1])

    def pct(self, start: str, end: str) -> dict[str, float]:
        (t0, c0, m0), (t1, c1, m1) = self._marks[start], self._marks[end]
        span = max(1e-6, t1 - t0)
        out = {k: round(100 * (c1[k] - c0[k]) / span, 1) for k in c1}
        out["other"] = round(100 * (m1 - m0) / span - sum(v for k, v in out.items() if k not in self.parts), 1)
        return out


def py_spy() -> str | None:
    """The py-spy binary (``pip install py-spy``), beside this Python or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used (busy = total - idle - iowait)."""
    import psutil

    c = psutil.cpu_times()
    return float(sum(c) - c.idle - getattr(c, "iowait", 0.0))


def machine_steal_s() -> float:
    """CPU seconds the hypervisor gave to other guests while this machine wanted them (0 where not reported)."""
    import psutil

    return float(getattr(psutil.cpu_times(), "steal", 0.0))


def machine_speed(rounds: int = 5) -> dict[str, Any]:
    """How fast this machine runs Python now: one fixed piece of work timed *rounds* times, ms (median and best).

    A shared machine's speed drifts (the same in-process costs, ``bench/pipeline/costs.py``, took
    2.3x as long on December 4 as on the evening before), so a figure is comparable with another run's only if their
    speeds match; within one run, compare ratios.  Also the CPU's model and clock as the kernel
    reports them."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        table: dict[int, int] = {}
        for i in range(300_000):
            table[i & 1023] = table.get(i & 1023, 0) + i
        times.append((time.perf_counter() - started) * 1000)
    speed: dict[str, Any] = {"python_ms": round(median(times), 1), "python_ms_best": round(min(times), 1),
                             "work": "300,000 dict updates in a Python loop"}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() in ("model name", "cpu MHz") and name.strip() not in speed:
                speed[name.strip()] = value.strip()
    return speed


def environment(speed_at_start: Mapping[str, Any] | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine_speed_at_end": machine_speed(),
    }
    if speed_at_start is not None:
        env["machine_speed_at_start"] = dict(speed_at_start)
    with contextlib.suppress(Exception):
        env["git_head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                         cwd=REPO, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--short", "--untracked-files=no"], capture_output=True, text=True,
                               cwd=REPO, timeout=5).stdout.split("\n")
        env["git_modified"] = [line[3:] for line in dirty if line.strip()]
    if not env.get("git_head"):  # run from a copy of the tree, not a checkout: what was modified is not known
        env.pop("git_modified", None)
        if os.environ.get("CX_BENCH_COMMIT"):
            env["git_head"], env["git_head_from"] = os.environ["CX_BENCH_COMMIT"], "CX_BENCH_COMMIT"
    return env


def interpreter(python: str | None = None) -> dict[str, Any]:
    """The path, version and configure arguments of a Python interpreter (default: this one): how
    it was built decides much of its speed (docs/PERFORMANCE.md, "Levers measured": Debian's 3.11.2
    ran the engine ~20 % faster than a pyenv 3.11.7 built with ``--enable-shared`` and without
    ``--enable-optimizations``; Debian's own build steps are not all in its ``CONFIG_ARGS``).

    >>> info = interpreter()
    >>> info["version"] == platform.python_version(), sorted(info)
    (True, ['config_args', 'path', 'prefix', 'version'])
    """
    probe = ("import json, platform, sys, sysconfig; print(json.dumps({'path': sys.executable, "
             "'prefix': sys.base_prefix, 'version': platform.python_version(), "
             "'config_args': sysconfig.get_config_var('CONFIG_ARGS') or ''}))")
    out = subprocess.run([python or sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True)
    return dict(json.loads(out.stdout))


def run(opts: Options) -> dict[str, Any]:
    bench = Bench(opts)
    if opts.pin_engine:  # before the servers start: they inherit this thread's cores
        pin(os.getpid(), other_cores())
        log(f"pinned: the engines on cores {sorted(ENGINE_CORES)}, everything else on {sorted(other_cores())}")
    bench.speed_at_start = machine_speed()
    log(f"machine speed: {bench.speed_at_start['python_ms']} ms for {bench.speed_at_start['work']}")
    log(f"working in {bench.base}")
    try:
        with (EmbeddedBroker(bench.base / "broker", gc=broker_gc(opts)) as broker,
              EmbeddedRedis(bench.base / "redis", cpu_slice_us=redis_slice_us(opts)) as rds):
            bench.server_pids = {"broker": broker.pids, "redis": [p for p in (rds.pid,) if p]}
            bench.broker_pauses = broker.gc_pauses
            bench.broker_log_dir = Path(broker.kafka.properties()["log.dirs"]) if broker.kafka is not None else None
            try:
                return asyncio.run(bench.run_async(broker.url, rds.url))
            finally:
                for e in bench.engines:
                    code = stop_process(e.proc)
                    if code not in (0, None, -2, 130):
                        log(f"engine exited with {code}; log tail:\n{e.output()[-1500:]}")
    finally:
        if opts.keep_dir:
            log(f"kept {bench.base}")
        else:
            shutil.rmtree(bench.base, ignore_errors=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxstream bench pipeline", description="Benchmark the engine (see docs/PERFORMANCE.md).")
    p.add_argument("--rate", type=float, default=500.0, help="offered generator events/s (without --find-max)")
    p.add_argument("--duration", type=float, default=20.0,
                   help="seconds of the final (measured) run, at least (see --final-contacts)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds at the start of every step that are discarded")
    p.add_argument("--broker-warmup", type=float, default=180.0,
                   help="before the open-loop runs, send the load until the broker's JIT compilers go quiet, at most this long, s; 0: not")
    p.add_argument("--jit-quiet-pct", type=float, default=10.0,
                   help="the broker's JIT is quiet when its compiler threads use less than this share of a core over 5 s, %%")
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=1, choices=(1, 2, 3, 4))
    p.add_argument("--find-max", action="store_true", help="search the highest rate with e2e p99 under the limit")
    p.add_argument("--json", dest="json_out", default=None, help="write the result here")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--advisors", type=int, default=200)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--ref-events", type=int, default=30_000, help="events each reference processes")
    p.add_argument("--skip-refs", action="store_true")
    p.add_argument("--ref-repeats", type=int, default=2, help="naive Faust runs; the fastest is the reference")
    p.add_argument("--final-contacts", type=int, default=1000,
                   help="the final run lasts long enough for this many contacts in its window (at most --max-final-duration)")
    p.add_argument("--max-final-duration", type=float, default=300.0)
    p.add_argument("--drain-only", action="store_true",
                   help="only the engine's drain of --ref-events pre-produced records (no references, no open-loop runs)")
    p.add_argument("--yardstick-events", type=_count, default=0, metavar="N",
                   help="with --skip-refs or --drain-only: first, raw aiokafka's drain of N pre-produced records on the same "
                        "broker (`yardstick.raw_aiokafka_rate`), the hour's speed to read runs made apart against; 0: none")
    p.add_argument("--faust-pipeline-rounds", type=int, default=0,
                   help="with --drain-only: alternate this many engine drains with drains of the same stages on Faust "
                        "(CX_STAGE_RUNTIME=faust); reports the ratio of the medians")
    p.add_argument("--lookup-rate", type=float, default=1000.0)
    p.add_argument("--lookup-slice-us", type=float, default=float(DEFAULT_LATENCY_SLICE_US),
                   help="CPU time slice (µs) the lookup client asks for, as the API processes do; 0: the kernel's default")
    p.add_argument("--lookup-pacer", choices=PACERS, default="timerfd",
                   help="what wakes the lookup client at each planned time: a timer file descriptor its event loop "
                        "watches, or a thread that wakes the loop (python -m cxstream.bench.lookups --pacer)")
    p.add_argument("--harness-sched", choices=SCHEDS, default="fair",
                   help="the harness's scheduling class during each open-loop step (the channel systems' producer, the "
                        "assignment watcher, the desktops: one event loop): fair, or the real-time SCHED_FIFO, as if on a "
                        "machine of their own (needs root or CAP_SYS_NICE, else fair: each step's harness_sched says which)")
    p.add_argument("--lookup-sched", choices=SCHEDS, default="fifo",
                   help="the lookup client's scheduling class: the real-time SCHED_FIFO (the default), so that its sends "
                        "and its reads of the answers do not wait for the cores the engine under test is using, as a "
                        "caller on a machine of its own; or fair, on --lookup-slice-us's slice (python -m "
                        "cxstream.bench.lookups --sched; final.lookups.client_sched says which it ran in)")
    p.add_argument("--producer-linger-ms", type=int, default=1, help="linger of the workload's producer (the channel systems)")
    p.add_argument("--watch-wait-ms", type=int, default=100,
                   help="fetch wait of the assignment watcher (the advisor desktops' consumer), ms; it answers at once when one arrives")
    p.add_argument("--p99-limit-ms", type=float, default=50.0)
    p.add_argument("--other-cpu-limit", dest="other_cpu_limit_pct", type=float, default=25.0, metavar="PCT",
                   help=f"measure a search step again (up to {DISTURBED_RETRIES} times) when the machine spent more than "
                        "PCT %% of a core on work not the bench's during it (its other tenants); 0: never")
    p.add_argument("--behind-p50-ms", type=float, default=1000.0,
                   help="a step with a higher e2e p50 (or a lag left after its drain) has fallen behind: not kept up with")
    p.add_argument("--settle-s", type=float, default=180.0, help="before each step, wait up to this long for the group's lag to drain")
    p.add_argument("--start-rate", type=float, default=100.0)
    p.add_argument("--step-duration", type=float, default=10.0)
    p.add_argument("--max-steps", type=int, default=10, help="steps of the capacity search")
    p.add_argument("--latency-steps", type=int, default=5,
                   help="then rates that bisect the rate meeting the p99 limit, for every contact, then as many on arrival "
                        "(each measured --latency-repeats times; 0: none)")
    p.add_argument("--latency-step-duration", type=float, default=20.0, help="seconds of each latency-search step")
    p.add_argument("--latency-repeats", type=int, default=3,
                   help="steps at each rate the latency search decides on, its bracket's ends too; the rate meets the "
                        "limit when most of them do (1: one step decides)")
    p.add_argument("--latency-resolution", type=float, default=0.1,
                   help="the latency search stops when the rate that missed is within this fraction of the one that met")
    p.add_argument("--no-prefill", dest="prefill", action="store_false")
    p.add_argument("--profile-seconds", type=float, default=0.0, help="py-spy the first engine during the final run, or during each drain (stopped when the drain ends)")
    p.add_argument("--profile-dir", default=None)
    p.add_argument("--keep-dir", action="store_true", help="keep the temporary folder (logs)")
    p.add_argument("--engine-src", default=None, metavar="DIR",
                   help="run the engine from this source tree (e.g. `git archive HEAD | tar -x -C DIR`)")
    p.add_argument("--engine-python", default=None, metavar="PYTHON",
                   help="run the engines on this interpreter (a venv's bin/python with the engine's dependencies; "
                        "default: the harness's own); the run's environment records its version")
    p.add_argument("--engine-env", action="append", default=[], metavar="CX_NAME=VALUE",
                   help="extra environment for the engines (repeatable)")
    p.add_argument("--scrape-every", dest="scrape_every_s", type=float, default=0.0, metavar="S",
                   help="GET each engine's /metrics through its API every S seconds while the engines run, as Prometheus "
                        "does (deploy/prometheus: every 5 s); the result's `scrapes` gives their count and wall times")
    p.add_argument("--pin-engine", action="store_true",
                   help="the engine workers alone on core 0, everything else (broker, Redis, harness, API processes) on the others")
    return p


def _count(text: str) -> int:
    """A number of records given on the command line: 0 or more.

    >>> _count("20000"), _count("0")
    (20000, 0)
    """
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"a number of records is 0 or more, got {n}")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cxstream bench pipeline``."""
    a = _parser().parse_args(argv)
    engine_env = dict(kv.split("=", 1) for kv in a.engine_env)
    kwargs = {k: v for k, v in vars(a).items() if k != "engine_env"}
    opts = Options(**kwargs, engine_env=engine_env)
    result = run(opts)
    text = json.dumps(result, indent=2)
    if opts.json_out:
        Path(opts.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json_out).write_text(text + "\n")
        log(f"wrote {opts.json_out}")
    keys = ("offered_rate", "achieved_rate", "e2e_p50_ms", "e2e_p99_ms", "context_p99_ms", "rss_mb", "naive_faust_rate",
            "raw_aiokafka_rate", "sustained_rate", "ratio_to_naive_faust", "engine_drain_rate", "drain_ratio_to_naive_faust",
            "naive_faust_pipeline_rate", "drain_ratio_to_naive_faust_pipeline", "max_rate_p99_under_limit",
            "max_rate_ratio_to_drain", "max_rate_on_arrival_p99_under_limit", "max_rate_on_arrival_ratio_to_drain",
            "e2e_p99_ms_at_half_max", "table_bytes_per_customer")
    print(json.dumps({k: result.get(k) for k in keys}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
