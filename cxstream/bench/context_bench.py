"""``cxstream bench context``: context retention across channel switches, wrong merges, lookup latency.

Drives the real engine (a subprocess, as ``cxstream run`` runs it) on its embedded Apache Kafka
and Redis, started here:

1. **Replay** real multi-channel journeys: the IBM Twitter customer-care conversations
   (social contacts, then an email follow-up: :mod:`cxstream.replay.twitter`) and a
   generated set in which customers switch channel with a different identifier each time
   (:mod:`cxstream.replay.journeys`, with traps that must not merge people).  Contacts are
   published in waves (the k-th contact of every journey), and each wave is waited for.
2. **Retention**: for every channel switch, the context found by the *new* contact's
   identifier (``GET /customers/context?{kind}=…``) must hold the previous contact (its id
   in the contact log) and, when it had one, its intent.  Checked when the new contact's
   last event is visible, re-checked for up to ``--settle`` seconds (a merge's hand-off is
   one hop behind the event that caused it); ``retention_immediate`` is the first look.
3. **Wrong merges**: every person's own identifiers are looked up; a canonical customer
   holding identifiers of k > 1 people counts k - 1; contexts holding contacts of more
   than one person are counted too (``mixed_contexts``).
4. **Erasure under load**: ``--erasures`` customers erased through the API while background
   traffic (:class:`BackgroundLoad`: chat messages of 500 customers) runs at ``--erase-load``
   events/s; time from the API call to completion.
5. **Lookup latency**, twice: first with the engine running and no other traffic (the
   headline ``lookup_*`` keys), then while background traffic runs at ``--lookup-load``
   events/s (``under_load.lookup_under_load_*``).  A separate process (``python -m
   cxstream.bench.lookups --paths-file``, as the pipeline bench runs it, so the load generator
   does not share this process's event loop) sends open-loop ``--rate`` requests/s for ``--warmup`` + ``--seconds``:
   each request at its planned time, latency from the planned time (no coordinated omission),
   the warm-up discarded, HDR histogram.  The paths are drawn uniformly (seeded) from the
   surviving (not erased) targets: by id, ``kind:value``, ``?email=``, ``?phone=`` and
   ``?social_handle=``.  Recorded with the latencies: the rate answered in the measured window
   (``lookup_achieved_rps``), how late the generator sent (``lookup_client_send_lag_p99_ms``)
   and its CPU (``lookup_client_cpu_pct``), the background events/s actually sent in the window
   (``lookup_background_eps``), and the API's own view over the same window
   (``lookup_server_side``: requests, share answered within 1/2/5/10 ms and the bucket bounds
   holding p50/p99, from ``cx_http_request_seconds`` on ``/metrics``).  ``lookup_errors`` counts measured answers other
   than 200 (and client errors); requests not sent because 512 were in flight are
   ``lookup_skipped_overload``.
6. **Memory**: encoded context bytes per customer (Redis copies).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiokafka import AIOKafkaProducer

from cxstream.bench.engineproc import engine_env
from cxstream.bench.loadgen import context_route_buckets, context_route_shares, parse_metrics
from cxstream.bench.lookups import lookups_command, lookups_result, start_lookups
from cxstream.datasets import shared_data_dir
from cxstream.replay.journeys import Contact, Journey, contact_events, generate_journeys, junk_for
from cxstream.replay.twitter import twitter_journeys
from cxstream.schemas import Identifiers, InteractionEvent
from cxstream.streams import topics as t
from cxstream.streams.embedded import EmbeddedBroker, EmbeddedRedis, _die_with_parent, free_port
from cxstream.streams.logs import EngineNotReady, wait_worker_ready

API_KEY = "bench-context-key"


def _say(msg: str) -> None:
    print(f"bench context: {msg}", flush=True)


class Engine:
    """The engine as a subprocess pointed at our broker and Redis."""

    def __init__(self, broker: str, redis_url: str, data_dir: Path, partitions: int) -> None:
        self.port = free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.prefix = "bench."
        self.log = data_dir / "engine.log"
        env = engine_env(
            broker, redis_url, data_dir, prefix=self.prefix, app_id="cxbench-context", http_port=self.port,
            api_key=API_KEY, partitions=partitions, extra={"CX_LOG_LEVEL": "info"},
        )
        with self.log.open("w") as f:
            # dies with the bench even if the bench is killed (PR_SET_PDEATHSIG, as the embedded servers)
            self.proc = subprocess.Popen([sys.executable, "-m", "cxstream.cli", "run"], env=env, stdout=f, stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
        try:
            wait_worker_ready(self.log.read_text, self.proc, 90, poll_s=0.2)
        except EngineNotReady:
            self.stop()
            raise

    def topic(self, name: str) -> str:
        return self.prefix + name

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Client:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {API_KEY}"}, connector=aiohttp.TCPConnector(limit=200),
            timeout=aiohttp.ClientTimeout(total=10),
        )

    async def context(self, kind: str, value: str) -> tuple[int, dict[str, Any]]:
        url = f"{self.engine.http}/customers/context?{urllib.parse.urlencode({kind: value})}"
        async with self.session.get(url) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(self.engine.http + path) as resp:
            return resp.status, await resp.json()

    async def text(self, path: str) -> str:
        async with self.session.get(self.engine.http + path) as resp:
            resp.raise_for_status()
            return await resp.text()

    async def post(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.session.post(self.engine.http + path) as resp:
            return resp.status, await resp.json()

    async def close(self) -> None:
        await self.session.close()


async def publish(producer: AIOKafkaProducer, topic: str, contacts: list[Contact]) -> int:
    n = 0
    for c in contacts:
        for ev in contact_events(c, junk_for(c.contact_id)):
            await producer.send(topic, msgspec.json.encode(ev), key=c.contact_id.encode())
            n += 1
    await producer.flush()
    return n


def _has_contact(ctx: dict[str, Any], contact_id: str, closed: bool = False) -> bool:
    return any(c["contact_id"] == contact_id and (not closed or c.get("closed_at") is not None) for c in ctx.get("contacts", []))


def _retained(ctx: dict[str, Any], prev: Contact) -> bool:
    intents = {p["intent"] for p in ctx.get("intent_history", [])}
    return _has_contact(ctx, prev.contact_id) and (prev.intent is None or prev.intent in intents)


async def run_waves(
    client: Client, producer: AIOKafkaProducer, engine: Engine, journeys: list[Journey], settle: float, timeout: float = 180.0
) -> dict[str, Any]:
    topic = engine.topic(t.INTERACTIONS.name)
    waves = max(len(j.contacts) for j in journeys)
    switches = retained = immediate = 0
    failures: list[dict[str, Any]] = []
    settle_waits: list[float] = []
    events = 0
    started = time.monotonic()
    for k in range(waves):
        wave = [(j, j.contacts[k]) for j in journeys if len(j.contacts) > k]
        t0 = time.monotonic()
        events += await publish(producer, topic, [c for _, c in wave])
        sem = asyncio.Semaphore(50)

        async def check(j: Journey, c: Contact, k: int = k, sem: asyncio.Semaphore = sem) -> tuple[bool | None, bool | None, float]:
            kind, value = c.lookup_identifier()
            deadline = time.monotonic() + timeout
            async with sem:
                while True:
                    status, ctx = await client.context(kind, value)
                    if status == 200 and _has_contact(ctx, c.contact_id, closed=True):
                        break
                    if time.monotonic() > deadline:
                        failures.append({"person": j.person, "contact": c.contact_id, "lookup": kind, "not_visible": status,
                                         "found_contacts": [x["contact_id"] for x in ctx.get("contacts", [])][-5:]})
                        return (False, False, 0.0) if k > 0 else (None, None, 0.0)
                    await asyncio.sleep(0.2)
                idx = j.contacts.index(c)
                if idx == 0 or j.contacts[idx - 1].channel == c.channel:
                    return None, None, 0.0
                prev = j.contacts[idx - 1]
                first = _retained(ctx, prev)
                seen_at = time.monotonic()
                ok = first
                while not ok and time.monotonic() - seen_at < settle:
                    await asyncio.sleep(0.1)
                    status, ctx = await client.context(kind, value)
                    ok = status == 200 and _retained(ctx, prev)
                if not ok:
                    failures.append({"person": j.person, "contact": c.contact_id, "lookup": kind, "previous": prev.contact_id,
                                     "found_contacts": [x["contact_id"] for x in ctx.get("contacts", [])][-5:]})
                return ok, first, time.monotonic() - seen_at

        results = await asyncio.gather(*(check(j, c) for j, c in wave))
        for ok, first, waited in results:
            if ok is None:
                continue
            switches += 1
            retained += bool(ok)
            immediate += bool(first)
            settle_waits.append(waited)
        _say(f"wave {k + 1}/{waves}: {len(wave)} contacts in {time.monotonic() - t0:.1f} s; switches so far {switches}, retained {retained}")
    took = time.monotonic() - started
    return {
        "switches": switches, "retained": retained, "retained_immediately": immediate, "events": events,
        "replay_s": round(took, 1), "events_per_s": round(events / took, 1),
        "settle_p99_s": round(sorted(settle_waits)[int(0.99 * (len(settle_waits) - 1))], 3) if settle_waits else 0.0,
        "failures": failures[:20],
    }


def presented(j: Journey) -> list[tuple[str, str]]:
    """A person's own identifier values that they presented themselves (a trap value shown by someone else is not theirs)."""
    return [(k, v) for k, v in j.identifiers.items() if any({**c.ids, **(c.link_ids or {})}.get(k) == v for c in j.contacts)]


async def wrong_merges(client: Client, journeys: list[Journey]) -> dict[str, Any]:
    owners: dict[str, set[str]] = {}
    contexts: dict[str, dict[str, Any]] = {}
    sem = asyncio.Semaphore(50)
    missing = 0

    async def one(j: Journey, kind: str, value: str) -> None:
        nonlocal missing
        async with sem:
            status, ctx = await client.context(kind, value)
        if status != 200:
            missing += 1
            return
        cid = ctx["customer_id"]
        owners.setdefault(cid, set()).add(j.person)
        contexts[cid] = ctx

    mine = [(j, k, v) for j in journeys for k, v in presented(j)]
    await asyncio.gather(*(one(j, k, v) for j, k, v in mine))
    wrong = sum(len(p) - 1 for p in owners.values())
    mixed = 0
    for ctx in contexts.values():
        people = {c["contact_id"].rsplit("-", 1)[0] for c in ctx.get("contacts", [])}
        mixed += len(people) > 1
    split: dict[str, set[str]] = {}
    for cid, people in owners.items():
        for p in people:
            split.setdefault(p, set()).add(cid)
    return {
        "wrong_merges": wrong, "mixed_contexts": mixed, "customers": len(owners), "people": len(journeys),
        "people_split_over_several_customers": sum(len(v) > 1 for v in split.values()),
        "identifiers_not_found": missing, "contexts": contexts,
    }


def target_path(kind: str, value: str) -> str:
    """The URL path looking a target up: by id (or ``kind:value``) in the path, else by one identifier parameter.

    >>> target_path("id", "C00042"), target_path("kv", "email:a@b.org"), target_path("email", "a@b.org")
    ('/customers/C00042/context', '/customers/email%3Aa%40b.org/context', '/customers/context?email=a%40b.org')
    """
    if kind in ("id", "kv"):
        return f"/customers/{urllib.parse.quote(value)}/context"
    return f"/customers/context?{urllib.parse.urlencode({kind: value})}"


class BackgroundLoad:
    """Steady chat messages at ``rate`` events/s on the interactions topic, to keep the engine working.

    Open loop from :meth:`start` (the i-th event is due at ``i / rate``); 500 customers (by email),
    97 contacts.  Every send time is kept, so :meth:`sent_between` says what a window really got.
    Event ids start with *id_prefix*: two loads with different prefixes are not duplicates.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, rate: float, id_prefix: str = "bg-") -> None:
        self.producer, self.topic, self.rate, self.id_prefix = producer, topic, rate, id_prefix
        self.sent_at: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[int] | None = None

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> int:
        """Stop sending; the number of events sent."""
        self._stop.set()
        if self._task is not None:
            await self._task
        return len(self.sent_at)

    def sent_between(self, t0: float, t1: float) -> int:
        """Events sent in ``[t0, t1)`` (epoch seconds)."""
        return bisect.bisect_left(self.sent_at, t1) - bisect.bisect_left(self.sent_at, t0)

    async def _run(self) -> int:
        if self.rate <= 0:
            return 0
        i = 0
        start = time.perf_counter()
        while not self._stop.is_set():
            delay = start + i / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            ev = InteractionEvent(event_id=f"{self.id_prefix}{i}", occurred_at=time.time(), channel="chat", kind="message",
                                  contact_id=f"bg-{i % 97}", customer=Identifiers(email=f"background{i % 500}@load.example.org"),
                                  text="just checking my order status")
            await self.producer.send(self.topic, msgspec.json.encode(ev), key=ev.event_id.encode())
            self.sent_at.append(time.time())
            i += 1
        return i


def bucket_quantile_ms(before: dict[str, float], after: dict[str, float], q: float) -> float | None:
    """Upper bound (ms) of the histogram bucket holding quantile *q* of the requests between two scrapes.

    ``None`` when there were none, or when it lies beyond the last finite bound.

    >>> bucket_quantile_ms({}, {"0.001": 50, "0.005": 98, "0.01": 100, "+Inf": 100}, 0.99)
    10.0
    """
    total = after.get("+Inf", 0.0) - before.get("+Inf", 0.0)
    if total <= 0:
        return None
    for le in sorted((k for k in after if k != "+Inf"), key=float):
        if after[le] - before.get(le, 0.0) >= q * total:
            return round(float(le) * 1000, 3)
    return None


async def lookup_latency(
    client: Client, producer: AIOKafkaProducer, targets: list[tuple[str, str]], rate: float, seconds: float, warmup: float,
    background_eps: float, seed: int = 1,
) -> dict[str, Any]:
    """Open-loop lookups from a separate process (:mod:`cxstream.bench.lookups`) while background traffic runs."""
    engine = client.engine
    background = BackgroundLoad(producer, engine.topic(t.INTERACTIONS.name), background_eps, id_prefix="bg-lookups-")
    background.start()
    scrapes: dict[str, list[tuple[str, dict[str, str], float]]] = {}

    async def scrape(name: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        try:
            scrapes[name] = parse_metrics(await client.text("/metrics"))
        except Exception as exc:  # the server-side view is optional
            _say(f"cannot read /metrics: {exc!r}")

    with tempfile.TemporaryDirectory(prefix="cx-bench-lookups-") as tmp:
        paths_file = Path(tmp) / "paths.txt"
        paths_file.write_text("".join(target_path(k, v) + "\n" for k, v in targets))
        await asyncio.sleep(1.0)  # the background traffic is steady before the lookups' warm-up starts
        t0 = time.time() + 1.5  # leaves the subprocess time to start (its first planned requests are in the warm-up)
        t_warm, t_end = t0 + warmup, t0 + warmup + seconds
        proc = await start_lookups(lookups_command(
            engine.http, API_KEY, rate, seconds + warmup, paths_file=paths_file, seed=seed, start_at=t0,
            warmup_s=warmup, auth="bearer",
        ))
        marks = [asyncio.create_task(scrape("warm", t_warm)), asyncio.create_task(scrape("end", t_end))]
        try:
            res: dict[str, Any] | None = await lookups_result(proc, timeout=seconds + warmup + 60)
            failure = None
        except RuntimeError as exc:
            res, failure = None, str(exc)
            _say(f"lookup load failed: {failure}")
        await asyncio.gather(*marks)
    await background.stop()
    server_side = None
    if "warm" in scrapes and "end" in scrapes:
        b0, b1 = context_route_buckets(scrapes["warm"]), context_route_buckets(scrapes["end"])
        shares = context_route_shares(scrapes["warm"], scrapes["end"])
        if shares is not None:
            server_side = {"requests": round(b1.get("+Inf", 0.0) - b0.get("+Inf", 0.0)), **shares,
                           "p50_le_ms": bucket_quantile_ms(b0, b1, 0.5), "p99_le_ms": bucket_quantile_ms(b0, b1, 0.99)}
    res = res or {}
    statuses: dict[str, int] = res.get("status", {})
    return {
        "lookup_p50_ms": res.get("p50_ms"), "lookup_p95_ms": res.get("p95_ms"), "lookup_p99_ms": res.get("p99_ms"),
        "lookup_p999_ms": res.get("p999_ms"), "lookup_max_ms": res.get("max_ms"), "lookup_offered_rps": rate,
        "lookup_achieved_rps": res.get("achieved_rps"), "lookup_requests_measured": res.get("measured"),
        "lookup_warmup_s": warmup, "lookup_seconds": seconds,
        "lookup_errors": sum(n for code, n in statuses.items() if code != "200") if res else None,
        "lookup_statuses": statuses,
        "lookup_skipped_overload": res.get("skipped_overload"), "lookup_unfinished": res.get("unfinished"),
        "lookup_client_send_lag_p99_ms": res.get("client_send_lag_p99_ms"),
        "lookup_client_cpu_pct": res.get("client_cpu_pct"),
        "lookup_targets": len(targets),
        "lookup_background_eps_offered": background_eps,
        "lookup_background_eps": round(background.sent_between(t_warm, t_end) / seconds, 1) if seconds > 0 else None,
        "lookup_server_side": server_side,
        "lookup_failure": failure,
    }


async def erasure_under_load(client: Client, producer: AIOKafkaProducer, engine: Engine, victims: list[Journey], rate: float) -> dict[str, Any]:
    background = BackgroundLoad(producer, engine.topic(t.INTERACTIONS.name), rate)
    background.start()
    await asyncio.sleep(2.0)
    took: list[float] = []
    leftovers = 0
    for j in victims:
        kind = "email" if "email" in j.identifiers else next(iter(j.identifiers))
        t0 = time.monotonic()
        status, body = await client.post(f"/customers/{kind}:{urllib.parse.quote(j.identifiers[kind])}/erase")
        if status != 202:
            continue
        while True:
            s, st = await client.get(f"/erasures/{body['request_id']}")
            if s == 200 and st.get("status") == "completed":
                break
            if time.monotonic() - t0 > 10:
                break
            await asyncio.sleep(0.02)
        took.append(time.monotonic() - t0)
        for k, v in j.identifiers.items():
            if (await client.context(k, v))[0] == 200:
                leftovers += 1
        await asyncio.sleep(0.2)
    sent = await background.stop()
    took.sort()
    return {
        "erasures": len(took), "erasure_load_eps": rate, "erasure_background_events": sent,
        "erasure_p50_ms": round(took[len(took) // 2] * 1000, 1) if took else None,
        "erasure_max_ms": round(took[-1] * 1000, 1) if took else None,
        "erasure_within_1s": sum(x < 1.0 for x in took), "erased_identifiers_still_readable": leftovers,
    }


async def bench(args: argparse.Namespace, engine: Engine) -> dict[str, Any]:
    data_dir = Path(args.data_dir)
    journeys: list[Journey] = []
    if not args.no_twitter:
        journeys += twitter_journeys(data_dir, limit=args.twitter_limit)
    journeys += generate_journeys(args.journeys, seed=args.seed)
    _say(f"{len(journeys)} journeys ({sum(j.source == 'twitter' for j in journeys)} from the Twitter set), "
         f"{sum(len(j.contacts) for j in journeys)} contacts")
    client = Client(engine)
    producer = AIOKafkaProducer(bootstrap_servers=args.broker, linger_ms=5, acks="all")
    await producer.start()
    try:
        waves = await run_waves(client, producer, engine, journeys, args.settle)
        merges = await wrong_merges(client, journeys)
        contexts = merges.pop("contexts")
        sizes = sorted(len(msgspec.json.encode(c)) for c in contexts.values())
        # lookups by the values people presented (a value someone owns but never gave the engine is a 404)
        targets: list[tuple[str, str]] = [
            (k, v) for j in journeys for k, v in presented(j) if k in ("email", "phone", "social_handle")
        ]
        targets += [("id", cid) for cid in contexts]
        targets += [("kv", f"email:{v}") for j in journeys[:200] for k, v in presented(j) if k == "email"]
        twitter_people = [j for j in journeys if j.source == "twitter"][: args.erasures // 2]
        generated = [j for j in journeys if j.source == "generated"][-(args.erasures - len(twitter_people)):]
        victims = twitter_people + generated
        _say(f"erasing {len(victims)} customers under {args.erase_load:.0f} events/s of background traffic")
        erasure = await erasure_under_load(client, producer, engine, victims, args.erase_load)
        erased = {v for j in victims for v in j.identifiers.values()}
        gone = {cid for cid, ctx in contexts.items() if any(v in erased for vs in ctx.get("identifiers", {}).values() for v in vs)}
        targets = [(k, v) for k, v in targets if v not in erased and v.partition(":")[2] not in erased and v not in gone]
        _say(f"lookups: {args.rate:.0f}/s for {args.seconds:.0f} s (+{args.warmup:.0f} s warm-up), from a separate "
             "process, the engine running with no other traffic")
        lookups = await lookup_latency(client, producer, targets, args.rate, args.seconds, args.warmup, 0.0)
        loaded: dict[str, Any] = {}
        if args.lookup_load > 0:
            _say(f"lookups again, under {args.lookup_load:.0f} events/s of background traffic")
            loaded = await lookup_latency(client, producer, targets, args.rate, args.seconds, args.warmup, args.lookup_load)
    finally:
        await producer.stop()
        await client.close()
    return {
        "switches": waves["switches"],
        "retention": round(waves["retained"] / waves["switches"], 4) if waves["switches"] else None,
        "wrong_merges": merges["wrong_merges"],
        "lookup_p50_ms": lookups["lookup_p50_ms"],
        "lookup_p99_ms": lookups["lookup_p99_ms"],
        "bytes_per_customer": round(statistics.mean(sizes)) if sizes else None,
        "retention_immediate": round(waves["retained_immediately"] / waves["switches"], 4) if waves["switches"] else None,
        "bytes_per_customer_p99": sizes[int(0.99 * (len(sizes) - 1))] if sizes else None,
        "bytes_per_customer_max": sizes[-1] if sizes else None,
        **{k: v for k, v in waves.items() if k not in ("switches",)},
        **merges,
        **{k: v for k, v in lookups.items() if k not in ("lookup_p50_ms", "lookup_p99_ms")},
        "under_load": {k.replace("lookup_", "lookup_under_load_", 1): v for k, v in loaded.items()},
        **erasure,
        "journeys": len(journeys),
        "twitter_journeys": sum(j.source == "twitter" for j in journeys),
        "partitions": args.partitions,
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cxstream bench context", description=__doc__.split("\n")[0])
    p.add_argument("--json", default="bench/results/context.json", help="write the result here")
    p.add_argument("--data-dir", default=str(shared_data_dir()))
    p.add_argument("--journeys", type=int, default=1000, help="generated journeys (people)")
    p.add_argument("--twitter-limit", type=int, default=None, help="at most this many Twitter customers (default all)")
    p.add_argument("--no-twitter", action="store_true")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rate", type=float, default=1000.0, help="lookups per second (open loop)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured lookup time")
    p.add_argument("--warmup", type=float, default=2.0, help="discarded lookup warm-up")
    p.add_argument("--settle", type=float, default=5.0, help="seconds a switch may take to show the previous history")
    p.add_argument("--erasures", type=int, default=20)
    p.add_argument("--erase-load", type=float, default=100.0, help="background events/s during the erasures (and the lookups)")
    p.add_argument("--lookup-load", type=float, default=100.0,
                   help="background events/s of the second lookup window (the first has none; 0: no second window)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--keep", default=None, help="run in this folder and keep it (engine log, servers' data)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cx-bench-context-") as tmp:
        base = Path(args.keep or tmp)
        base.mkdir(parents=True, exist_ok=True)
        with EmbeddedBroker(base / "broker") as broker, EmbeddedRedis(base / "redis") as rds:
            args.broker = broker.url
            _say(f"broker {broker.url}, redis {rds.url}; starting the engine")
            engine = Engine(broker.url, rds.url, base, args.partitions)
            try:
                result = asyncio.run(bench(args, engine))
            finally:
                engine.stop()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    headline = {k: result[k] for k in ("switches", "retention", "wrong_merges", "lookup_p50_ms", "lookup_p99_ms", "bytes_per_customer")}
    print(json.dumps(headline))
    print(f"(details in {out}: retention_immediate={result['retention_immediate']}, mixed_contexts={result['mixed_contexts']}, "
          f"lookup_p999_ms={result['lookup_p999_ms']}, achieved {result['lookup_achieved_rps']}/s "
          f"under {result['lookup_background_eps']} background events/s, "
          f"erasure p50/max {result['erasure_p50_ms']}/{result['erasure_max_ms']} ms, replay {result['events_per_s']} events/s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
