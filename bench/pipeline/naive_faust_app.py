"""Reference ``naive_faust``: the simplest Faust app doing what the pipeline does per event.

consume -> table update -> produce, one event at a time, Faust defaults (except a short
group join so the measurement starts in seconds).  Run by ``cxstream bench pipeline``
in a subprocess against the same broker; it processes the N events pre-produced on
NAIVE_TOPIC_IN and writes ``{"n", "first_at", "last_at", "rate"}`` to NAIVE_RESULT
when the N-th event is done (the parent then stops it).  Startup and group join are
excluded: the clock starts at the first event.

Environment: NAIVE_BROKER (host:port), NAIVE_TOPIC_IN, NAIVE_TOPIC_OUT, NAIVE_N,
NAIVE_RESULT (file), NAIVE_APP_ID, NAIVE_DATADIR, NAIVE_PARTITIONS.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import faust
import orjson

BROKER = os.environ["NAIVE_BROKER"]
N = int(os.environ["NAIVE_N"])
RESULT = Path(os.environ["NAIVE_RESULT"])
PARTITIONS = int(os.environ.get("NAIVE_PARTITIONS", "4"))

app = faust.App(
    os.environ.get("NAIVE_APP_ID", "naive-faust"),
    broker=f"kafka://{BROKER}",
    store="memory://",
    datadir=os.environ.get("NAIVE_DATADIR", "naive-faust-data"),
    web_enabled=False,
    topic_partitions=PARTITIONS,
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    broker_rebalance_timeout=6.0,
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.5,
)
source = app.topic(os.environ["NAIVE_TOPIC_IN"], key_type=bytes, value_type=bytes, partitions=PARTITIONS)
sink = app.topic(os.environ["NAIVE_TOPIC_OUT"], key_type=bytes, value_type=bytes, partitions=PARTITIONS)
table = app.Table("naive_state", default=None, key_type=bytes, value_type=bytes, partitions=PARTITIONS)

state = {"n": 0, "first_at": 0.0}


@app.agent(source)
async def process(stream: faust.StreamT[bytes]) -> None:
    async for key, value in stream.items():
        if state["n"] == 0:
            state["first_at"] = time.perf_counter()
        event = orjson.loads(value)
        old = table.get(key)
        count = orjson.loads(old)["n"] + 1 if old else 1
        table[key] = orjson.dumps({"n": count, "last": event.get("event_id")})
        await sink.send(key=key, value=orjson.dumps({"key": key.decode(), "n": count}))
        state["n"] += 1
        if state["n"] == N:
            took = time.perf_counter() - state["first_at"]
            RESULT.write_bytes(orjson.dumps({"n": N, "seconds": took, "rate": N / took if took > 0 else None}))


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()
