"""The latency floor of two broker hops on the embedded Apache Kafka: a relay that does nothing.

The pipeline's end-to-end latency (event time -> assignment read by a desktop) crosses the
broker at least twice: the channel's record to the engine, the engine's assignment to the
desktop.  This measures those two hops with no engine in between, on a fresh embedded broker:

* a producer (linger 1 ms, as the bench's channel systems) writes ``--rate`` records/s, each
  stamped with its send time, to ``src`` (4 partitions, as the engine's topics);
* a relay in its own process consumes ``src`` (``getmany``, ``fetch_max_wait_ms`` = the
  engine's fetch wait) and forwards every record to ``dst`` at once (linger 1 ms,
  sends not awaited, as the stage loop does);
* a consumer (``fetch_max_wait_ms`` 5, as the bench's desktops) reads ``dst``.

It reports, per run, the records sent, received and lost, the first hop (sent -> taken up by
the relay) and both hops (sent -> read from ``dst``): p50, p95, p99, p99.9, max (HDR histogram,
as the pipeline bench), and both hops per 30 s window of send time, to show whether the
broker's latency changes as its log grows.  Whatever the engine does, its e2e p99 cannot go
below the two-hop p99 measured here on the same broker and machine.

    .venv/bin/python bench/pipeline/relay_floor.py --rates 100 --fetch-waits 10 --duration 600 \\
        --json bench/results/relay-floor-kafka-10min.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cxstream.replay.publish import LatencySummary
from cxstream.streams.embedded import EmbeddedBroker

PARTITIONS = 4
WARMUP_S = 5.0  # records sent in the first seconds are not counted (the relay joins its group)
STAMP = struct.Struct(">dd")  # sent at, taken up by the relay (0 until then)


WINDOW_S = 30.0  # two-hop latency is also summarised per window of send time: does the broker slow down as its log grows?


def _summary(latencies_s: list[float]) -> dict[str, Any]:
    return LatencySummary.of(latencies_s).as_dict()


def _by_window(sent_and_latency: list[tuple[float, float]], start: float) -> list[dict[str, Any]]:
    windows: dict[int, list[float]] = {}
    for sent, latency in sent_and_latency:
        windows.setdefault(int((sent - start) // WINDOW_S), []).append(latency)
    return [{"from_s": k * WINDOW_S, "to_s": (k + 1) * WINDOW_S, **_summary(v)} for k, v in sorted(windows.items())]


async def _relay(url: str, src: str, dst: str, fetch_wait_ms: int, stop_at: float, echo: list[str], echo_linger_ms: int) -> None:
    consumer = AIOKafkaConsumer(src, *echo, bootstrap_servers=url, group_id=f"relay-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", fetch_max_wait_ms=fetch_wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=url, linger_ms=1)
    echo_producer = AIOKafkaProducer(bootstrap_servers=url, linger_ms=echo_linger_ms) if echo_linger_ms > 1 else producer
    await consumer.start()
    await producer.start()
    if echo_producer is not producer:
        await echo_producer.start()
    try:
        while time.time() < stop_at:
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for tp, records in batches.items():
                if tp.topic != src:
                    continue  # an echo fetched back (as the engine skips its local records)
                for r in records:
                    sent, _ = STAMP.unpack_from(r.value or b"")
                    await producer.send(dst, key=r.key, value=STAMP.pack(sent, now))  # queued, not awaited for its ack
                    for topic in echo:  # what the engine writes to its own later stages' topics
                        await echo_producer.send(topic, key=r.key, value=r.value)
    finally:
        if echo_producer is not producer:
            await echo_producer.stop()
        await producer.stop()
        await consumer.stop()


def _relay_process(url: str, src: str, dst: str, fetch_wait_ms: int, stop_at: float, echo: list[str], echo_linger_ms: int) -> None:
    asyncio.run(_relay(url, src, dst, fetch_wait_ms, stop_at, echo, echo_linger_ms))


async def _drive(url: str, src: str, dst: str, rate: float, duration: float, warmup: float) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(dst, bootstrap_servers=url, auto_offset_reset="earliest", fetch_max_wait_ms=5)
    producer = AIOKafkaProducer(bootstrap_servers=url, linger_ms=1)
    await consumer.start()
    await producer.start()
    first_hop: list[float] = []
    both: list[tuple[float, float]] = []  # (sent at, two-hop latency s)
    total = int(rate * (warmup + duration))
    counted = 0

    async def read() -> None:
        nonlocal counted
        while counted < total:
            batches = await consumer.getmany(timeout_ms=500)
            now = time.time()
            for records in batches.values():
                for r in records:
                    counted += 1
                    sent, taken = STAMP.unpack_from(r.value or b"")
                    if sent < start + warmup:
                        continue  # the relay was still joining its group
                    first_hop.append(taken - sent)
                    both.append((sent, now - sent))

    start = time.time()
    reader = asyncio.ensure_future(read())
    try:
        for i in range(total):  # open loop: the i-th record is due at start + i / rate
            delay = start + i / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(src, key=str(i % 1000).encode(), value=STAMP.pack(time.time(), 0.0))
        with contextlib.suppress(TimeoutError):  # a record that never arrives is counted as lost
            await asyncio.wait_for(asyncio.shield(reader), timeout=30)
    finally:
        reader.cancel()
        await producer.stop()
        await consumer.stop()
    return {"sent": total, "received": counted, "lost": total - counted,
            "first_hop": _summary(first_hop), "two_hops": _summary([x for _, x in both]),
            "two_hops_by_window": _by_window(both, start + warmup)}


async def _topics(url: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


def run_once(rate: float, fetch_wait_ms: int, duration: float, echo_topics: int = 0, echo_linger_ms: int = 1) -> dict[str, Any]:
    """One run on a fresh broker."""
    with tempfile.TemporaryDirectory(prefix="cx-relay-") as tmp, EmbeddedBroker(Path(tmp) / "broker") as broker:
        src, dst = "relay-src", "relay-dst"
        echo = [f"relay-echo-{i}" for i in range(echo_topics)]
        asyncio.run(_topics(broker.url, [src, dst, *echo]))
        stop_at = time.time() + WARMUP_S + duration + 40
        relay = multiprocessing.get_context("spawn").Process(
            target=_relay_process, args=(broker.url, src, dst, fetch_wait_ms, stop_at, echo, echo_linger_ms), daemon=True
        )
        relay.start()
        time.sleep(2.0)  # the relay joins its group
        try:
            got = asyncio.run(_drive(broker.url, src, dst, rate, duration, WARMUP_S))
        finally:
            relay.terminate()
            relay.join(5)
    return {"rate": rate, "relay_fetch_wait_ms": fetch_wait_ms, "echo_topics": echo_topics, "echo_linger_ms": echo_linger_ms, "duration_s": duration, **got}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default="100", help="records/s, comma-separated")
    ap.add_argument("--fetch-waits", default="10", help="the relay's fetch_max_wait_ms values, comma-separated")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--echo-topics", default="0", help="comma-separated counts of topics the relay also writes every "
                    "record to and consumes (skipping them), as the engine's local delivery does")
    ap.add_argument("--echo-linger-ms", default="1", help="comma-separated lingers of the echo records' producer "
                    "(1: the relay's own producer)")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    runs = []
    for repeat in range(args.repeats):
        for rate in [float(r) for r in args.rates.split(",")]:
            for wait in [int(w) for w in args.fetch_waits.split(",")]:
                for echo in [int(e) for e in args.echo_topics.split(",")]:
                    for linger in [int(x) for x in args.echo_linger_ms.split(",")] if echo else [1]:
                        row = {"repeat": repeat, **run_once(rate, wait, args.duration, echo, linger)}
                        print(json.dumps(row), flush=True)
                        runs.append(row)
    result = {"command": " ".join(["bench/pipeline/relay_floor.py", *sys.argv[1:]]), "partitions": PARTITIONS,
              "cpus": os.cpu_count(), "runs": runs}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
