"""How long the embedded broker (Tansu, memory engine) takes to serve a fetch, by the size of the log.

One topic of 24 partitions (about what the stage consumer fetches) is filled with 300-byte
records, either one record per record batch (what an open-loop producer or the stage loop
writes at moderate rates) or 20 per batch; at each size a consumer seeks to the last record of
every partition and times the fetch that returns all 24 (three times).  Apache Kafka serves a
fetch from an offset index, whatever the log's length; Tansu's memory engine reads the
partition's batches from the start (docs/PERFORMANCE.md).

    .venv/bin/python bench/pipeline/tansu_fetch.py --json bench/results/tansu-fetch.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cxstream.streams.embedded import EmbeddedBroker

PARTITIONS = 24


async def _tail_fetch_ms(url: str, topic: str, repeats: int = 3) -> list[float]:
    consumer = AIOKafkaConsumer(bootstrap_servers=url, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, i) for i in range(PARTITIONS)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out = []
        for _ in range(repeats):
            for tp in tps:
                consumer.seek(tp, max(0, ends[tp] - 1))
            started, got = time.perf_counter(), 0
            while got < PARTITIONS:
                fetched = await consumer.getmany(timeout_ms=5000)
                got += sum(len(v) for v in fetched.values())
            out.append(round((time.perf_counter() - started) * 1000, 1))
        return out
    finally:
        await consumer.stop()


async def _fill(producer: AIOKafkaProducer, topic: str, records: int, per_batch: int) -> None:
    sent = 0
    while sent < records:
        for partition in range(PARTITIONS):
            batch = producer.create_batch()
            for _ in range(per_batch):
                batch.append(key=None, value=b"x" * 300, timestamp=None)
            batch.close()
            await (await producer.send_batch(batch, topic, partition=partition))
            sent += per_batch


async def measure(url: str, sizes: list[int], per_batch: int) -> list[dict[str, Any]]:
    topic = f"fetch-cost-{per_batch}"
    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=url, linger_ms=0)
    await producer.start()
    rows, have = [], 0
    try:
        for size in sizes:
            await _fill(producer, topic, size - have, per_batch)
            have = size
            times = await _tail_fetch_ms(url, topic)
            rows.append({"records": size, "records_per_batch": per_batch, "record_batches": size // per_batch, "tail_fetch_ms": times})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        await producer.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cx-tansu-fetch-") as tmp, EmbeddedBroker(Path(tmp) / "broker") as broker:
        one = asyncio.run(measure(broker.url, [2_400, 9_600, 24_000], 1))
    with tempfile.TemporaryDirectory(prefix="cx-tansu-fetch-") as tmp, EmbeddedBroker(Path(tmp) / "broker") as broker:
        twenty = asyncio.run(measure(broker.url, [24_000], 20))
    result = {"partitions": PARTITIONS, "record_bytes": 300, "rows": one + twenty}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
