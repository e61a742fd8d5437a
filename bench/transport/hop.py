"""One Kafka hop with aiokafka, confluent-kafka (librdkafka) and the lean wire client: the relay's CPU per record and the hop's latency.

Issue 17's latency work found the engine's CPU going per loop round rather than per record
(docs/PERFORMANCE.md, "What limits them"): about a fifth of its samples at 410/s, and nearly half idle,
are aiokafka building and parsing requests in Python.  Before the batch runtime's transport is
replaced, this measures what a replacement would gain, on the embedded Apache Kafka:

* a **relay** process consumes ``IN`` (4 partitions) in a consumer group and produces every
  record, unchanged, to ``OUT`` (4 partitions): the engine's hop, without the engine's work;
  * ``aiokafka``: the engine's clients and settings: uvloop, ``getmany``, fetch wait 10 ms, an
    idempotent producer without linger whose sends are not awaited; offsets committed every
    second once the records before them are acknowledged;
  * ``confluent``: confluent-kafka's ``Consumer.poll``/``consume`` and ``Producer.produce`` in a plain loop
    (no asyncio: librdkafka's own threads do the network I/O and the protocol), fetch wait
    10 ms, idempotent, linger 0, the same commits;
  * ``lean``: :mod:`cxstream.streams.wire` on uvloop, one task: a fetch-session request (wait
    10 ms) answered where it arrives, each answer's records into one idempotent multi-partition
    Produce request that is not awaited, then the next fetch; the same commits (OffsetCommit
    for the group, partitions assigned by the relay itself: one broker, no group membership);
  * the aiokafka relay fetches in sessions (``use_fetch_sessions``), as the engine's stages do;
* this process produces to ``IN`` open-loop at ``--rates`` (300-byte records, 1,000 keys) and
  reads ``OUT``; the **hop** is a record's Kafka timestamp on ``OUT`` minus its timestamp on
  ``IN`` (both set by the producers, in ms): the broker's round trips plus the relay's;
* over the measured window (after ``--warmup``): the relay's CPU (all its threads) per record and
  in % of one core, and the broker's (Kafka + ZooKeeper); over the whole run, the relay's rounds
  with records per record (and the lean client's requests per record).

Libraries rotate per rate (A B C, B C A, ...), each run on fresh topics; compare within one file.

    .venv/bin/python bench/transport/hop.py --rates 100,300,1000 --duration 20 --repeats 2 --json bench/results/transport-hop-lean.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cxstream.bench.loadgen import ProcSampler, stop_process
from cxstream.replay.publish import LatencySummary

LIBS = ("aiokafka", "confluent", "lean")
PARTITIONS = 4
COMMIT_EVERY_S = 1.0
#: The relay process's rounds that relayed records, and its requests to the broker where the client counts them.
COUNTS = {"rounds": 0, "requests": None}


# --------------------------------------------------------------------------- the relays
async def _relay_aiokafka(bootstrap: str, src: str, dst: str, group: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    from cxstream.streams.fetchsession import use_fetch_sessions

    consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=10, max_partition_fetch_bytes=4 << 20)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, enable_idempotence=True, acks="all",
                                max_batch_size=262144)
    await producer.start()
    await consumer.start()
    use_fetch_sessions(consumer)  # as the engine's stages fetch (CX_FETCH_SESSIONS)
    print("ready", flush=True)
    pending: list[asyncio.Future[Any]] = []
    positions: dict[TopicPartition, int] = {}
    last_commit = time.monotonic()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            COUNTS["rounds"] += bool(batches)
            for tp, messages in batches.items():
                for m in messages:
                    pending.append(await producer.send(dst, m.value, key=m.key))
                positions[tp] = messages[-1].offset + 1
            if time.monotonic() - last_commit >= COMMIT_EVERY_S and positions:
                await asyncio.gather(*pending)
                pending.clear()
                await consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in positions.items()})
                last_commit = time.monotonic()
    finally:
        await consumer.stop()
        await producer.stop()


def _relay_confluent(bootstrap: str, src: str, dst: str, group: str) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "enable.idempotence": True, "acks": "all"})
    consumer.subscribe([src])
    print("ready", flush=True)
    positions: dict[int, int] = {}
    last_commit = time.monotonic()
    while True:
        # poll() returns as soon as one record is there; consume() with timeout 0 then takes what
        # else is buffered (consume() with a timeout would wait for all 5,000 or the timeout)
        first = consumer.poll(0.2)
        if first is None:
            producer.poll(0)
            continue
        COUNTS["rounds"] += 1
        for m in [first, *consumer.consume(num_messages=4999, timeout=0)]:
            if m.error() is not None:
                continue
            producer.produce(dst, m.value(), m.key())
            positions[m.partition()] = m.offset() + 1
        producer.poll(0)  # delivery reports
        if time.monotonic() - last_commit >= COMMIT_EVERY_S and positions:
            producer.flush(5.0)
            consumer.commit(offsets=[TopicPartition(src, p, off) for p, off in positions.items()], asynchronous=True)
            last_commit = time.monotonic()


async def _relay_lean(bootstrap: str, src: str, dst: str, group: str) -> None:
    from cxstream.streams import wire
    from cxstream.streams.partitioner import key_hash

    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    conn = await wire.Connection.connect(host, int(port), "hop-lean")
    await wire.check_versions(conn)
    while True:  # the topics were just made: wait for their leaders
        meta = wire.parse_metadata(await conn.request(wire.API_METADATA, wire.metadata_request([src, dst])))
        if not meta.errors and all(meta.leaders.get((t, p), -1) >= 0 for t in (src, dst) for p in range(meta.partitions.get(t, 0))):
            break
        await asyncio.sleep(0.1)
    if len(meta.brokers) != 1:
        raise SystemExit("the lean relay speaks to one broker (the embedded one)")
    wire.parse_find_coordinator(await conn.request(wire.API_FIND_COORDINATOR, wire.find_coordinator_request(group)))
    producer = wire.Producer(*wire.parse_init_producer_id(await conn.request(wire.API_INIT_PRODUCER_ID, wire.init_producer_id_request())))
    session = wire.Session({(src, p): 0 for p in range(meta.partitions[src])}, max_wait_ms=10, partition_max_bytes=4 << 20)
    n_dst = meta.partitions[dst]
    errors: list[str] = []

    def acked(fut: asyncio.Future[bytes]) -> None:
        if fut.exception() is not None:
            errors.append(repr(fut.exception()))
        else:
            errors.extend(f"{tp}: error {code}" for tp, code in wire.failures(wire.parse_produce(fut.result())))

    print("ready", flush=True)
    pending: list[asyncio.Future[bytes]] = []
    last_commit = time.monotonic()
    while not errors:
        answer = wire.parse_fetch(await conn.request(wire.API_FETCH, session.request()))
        session.answered(answer)
        COUNTS["rounds"] += bool(answer.partitions)
        COUNTS["requests"] = conn.requests
        for part in answer.partitions:
            if part.error:
                raise SystemExit(f"fetch of {part.topic}[{part.partition}] answered error {part.error}")
            tp = (part.topic, part.partition)
            pos = start = session.offsets[tp]
            for _, rec in wire.records_of(part.records):
                if rec.offset >= start:
                    key = rec.key
                    producer.add(dst, key_hash(key) % n_dst if key is not None else 0, key, rec.value, None)
                    pos = rec.offset + 1
            session.offsets[tp] = pos
        if producer:
            fut = conn.request(wire.API_PRODUCE, producer.request()[0])
            fut.add_done_callback(acked)
            pending.append(fut)
        if time.monotonic() - last_commit >= COMMIT_EVERY_S and pending:
            await asyncio.gather(*pending)
            pending.clear()
            failed = wire.parse_offset_commit(await conn.request(
                wire.API_OFFSET_COMMIT, wire.offset_commit_request(group, session.offsets)))
            if failed:
                raise SystemExit(f"offset commit failed: {failed}")
            last_commit = time.monotonic()
    raise SystemExit(f"produce failed: {errors[:3]}")


def relay(lib: str, bootstrap: str, src: str, dst: str, group: str) -> None:
    def counts(*_: Any) -> None:  # the driver stops the relay with SIGTERM and reads this line
        print(json.dumps(COUNTS), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, counts)
    if lib == "aiokafka":
        import uvloop

        uvloop.run(_relay_aiokafka(bootstrap, src, dst, group))
    elif lib == "lean":
        import uvloop

        uvloop.run(_relay_lean(bootstrap, src, dst, group))
    elif lib == "confluent":
        _relay_confluent(bootstrap, src, dst, group)
    else:
        raise SystemExit(f"unknown library {lib!r}; use one of {', '.join(LIBS)}")


# --------------------------------------------------------------------------- the driver
async def _run_one(bootstrap: str, lib: str, rate: float, duration_s: float, warmup_s: float, broker_pids: list[int]) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    src, dst, group = f"hop-{tag}.in", f"hop-{tag}.out", f"hop-{tag}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(src, PARTITIONS, 1), NewTopic(dst, PARTITIONS, 1)])
    finally:
        await admin.close()
    proc = subprocess.Popen([sys.executable, __file__, "relay", "--lib", lib, "--bootstrap", bootstrap, "--src", src,
                             "--dst", dst, "--group", group], stdout=subprocess.PIPE, text=True)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        if line.strip() != "ready":
            raise RuntimeError(f"relay {lib} did not start: {line!r}")
        await producer.start()
        await reader.start()
        reader.assign([TopicPartition(dst, p) for p in range(PARTITIONS)])
        await reader.seek_to_beginning()
        sent_at: dict[bytes, int] = {}  # value -> timestamp (ms) of the record on IN
        hops: list[float] = []
        got = 0
        stop = asyncio.Event()

        async def read() -> None:
            nonlocal got
            while not stop.is_set():
                for messages in (await reader.getmany(timeout_ms=100)).values():
                    for m in messages:
                        got += 1
                        t_in = sent_at.pop(m.value, None)
                        if t_in is not None:
                            hops.append(m.timestamp - t_in)

        reading = asyncio.ensure_future(read())
        relay_cpu, broker_cpu = ProcSampler([proc.pid]), ProcSampler(broker_pids)

        n = int(rate * duration_s)
        pad = b"x" * 280
        t0 = time.time() + 0.5
        measure_from = t0 + warmup_s
        marks: dict[str, tuple[float, float, float, int]] = {}
        futures = []
        for i in range(n):
            planned = t0 + i / rate
            if planned >= measure_from and "start" not in marks:
                marks["start"] = (time.time(), relay_cpu.cpu_s(), broker_cpu.cpu_s(), i)
            delay = planned - time.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            value = b"%012d" % i + pad
            stamp = int(time.time() * 1000)  # the record's timestamp on IN, known before any relay can read it
            if planned >= measure_from:
                sent_at[value] = stamp
            futures.append(await producer.send(src, value, key=b"k%d" % (i % 1000), timestamp_ms=stamp))
        await asyncio.gather(*futures)
        marks["end"] = (time.time(), relay_cpu.cpu_s(), broker_cpu.cpu_s(), n)
        deadline = time.time() + 10
        while got < n and time.time() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await reading
        (w0, r0, b0, i0), (w1, r1, b1, i1) = marks["start"], marks["end"]
        span, records = w1 - w0, i1 - i0
        stop_process(proc, signal.SIGTERM, 10.0)
        counts = _relay_counts(proc)
        return {
            "lib": lib, "rate": rate, "duration_s": duration_s, "warmup_s": warmup_s, "sent": n, "relayed": got,
            "measured_records": records,
            "relay_cpu_pct": round(100 * (r1 - r0) / span, 1),
            "relay_cpu_ms_per_record": round(1000 * (r1 - r0) / max(1, records), 3),
            "broker_cpu_pct": round(100 * (b1 - b0) / span, 1),
            "broker_cpu_ms_per_record": round(1000 * (b1 - b0) / max(1, records), 3),
            # over the whole run, warm-up included
            "relay_rounds_per_record": round(counts["rounds"] / n, 3) if counts.get("rounds") else None,
            "relay_requests_per_record": round(counts["requests"] / n, 3) if counts.get("requests") else None,
            "hop": LatencySummary.of([h / 1000.0 for h in hops]).as_dict(),  # Kafka timestamps: ms resolution
        }
    finally:
        stop_process(proc, signal.SIGTERM, 10.0)
        await reader.stop()
        await producer.stop()


def _relay_counts(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The stopped relay's last line: its rounds with records and (the lean client's) requests."""
    assert proc.stdout is not None
    lines = [x for x in proc.stdout.read().splitlines() if x.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd")
    r = sub.add_parser("relay", help="(internal) the relay process")
    r.add_argument("--lib", required=True, choices=LIBS)
    for name in ("--bootstrap", "--src", "--dst", "--group"):
        r.add_argument(name, required=True)
    p.add_argument("--rates", default="100,500,1000")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of records per run, warm-up included")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--libs", default=",".join(LIBS), help="which relays, rotated per repeat")
    p.add_argument("--json", dest="json_out", default=None)
    a = p.parse_args(argv)
    if a.cmd == "relay":
        relay(a.lib, a.bootstrap, a.src, a.dst, a.group)
        return 0
    from cxstream.streams.embedded import EmbeddedBroker

    runs = []
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp) / "broker") as broker:
        for rate in [float(x) for x in a.rates.split(",")]:
            for rep in range(a.repeats):
                libs = [x for x in a.libs.split(",") if x]
                order = libs[rep % len(libs):] + libs[:rep % len(libs)]
                for lib in order:
                    res = asyncio.run(_run_one(broker.url, lib, rate, a.duration, a.warmup, broker.pids))
                    res["repeat"] = rep
                    print(json.dumps(res), flush=True)
                    runs.append(res)
    doc = {
        "command": " ".join(["bench/transport/hop.py", *(argv if argv is not None else sys.argv[1:])]),
        "elapsed_s": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
    }
    if a.json_out:
        Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json_out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
