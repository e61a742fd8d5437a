"""Reference ``raw_aiokafka``: a plain aiokafka batch loop, the practical ceiling for Python here.

getmany -> dict update -> send the batch -> commit, repeated until N events are done;
prints ``{"n", "seconds", "rate"}`` as JSON.  The clock starts at the first batch
(connection and group join are excluded), the same rule as ``naive_faust_app.py``.

    python bench/pipeline/raw_aiokafka.py --broker HOST:PORT --topic-in T --topic-out U --n 40000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def run(broker: str, topic_in: str, topic_out: str, n: int, group: str, timeout_s: float) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        topic_in, bootstrap_servers=broker, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=5000, session_timeout_ms=6000,
        rebalance_timeout_ms=6000, heartbeat_interval_ms=1500,
    )
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5, acks=1)
    await consumer.start()
    await producer.start()
    state: dict[bytes, tuple[int, str]] = {}
    done = 0
    first = None
    deadline = time.monotonic() + timeout_s
    try:
        while done < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            if not batches:
                continue
            if first is None:
                first = time.perf_counter()
            futures = []
            for msgs in batches.values():
                for m in msgs:
                    event = orjson.loads(m.value)
                    old = state.get(m.key)
                    count = old[0] + 1 if old else 1
                    state[m.key] = (count, event.get("event_id"))
                    out = orjson.dumps({"key": m.key.decode(), "n": count})
                    futures.append(await producer.send(topic_out, out, key=m.key))
                    done += 1
            await asyncio.gather(*futures)
            await consumer.commit()
        took = time.perf_counter() - (first or time.perf_counter())
        return {"n": done, "seconds": took, "rate": done / took if took > 0 else 0.0}
    finally:
        await producer.stop()
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--broker", required=True)
    p.add_argument("--topic-in", required=True)
    p.add_argument("--topic-out", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--group", default="raw-aiokafka")
    p.add_argument("--timeout", type=float, default=120.0)
    a = p.parse_args(argv)
    result = asyncio.run(run(a.broker, a.topic_in, a.topic_out, a.n, a.group, a.timeout))
    print(orjson.dumps(result).decode(), flush=True)
    return 0 if result["n"] >= a.n else 1


if __name__ == "__main__":
    sys.exit(main())
