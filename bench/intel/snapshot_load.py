"""What a published intent model costs: its bytes, the learner's publication, and each worker's load.

Every publication of the learner (every ``CX_SNAPSHOT_MIN_INTERVAL_S`` while labels come in) is
a model that every worker's scorer loads again, in a thread that shares the worker's core with
its event loop.  This trains an :class:`~cxstream.intel.intent.IntentModel` on ``--rows``
Banking77 training rows (shuffled with ``--seed``; Banking77's 77 classes) and measures, in one
run so that the ratios hold on a noisy machine:

* the snapshot in each layout: ``sparse`` (the non-zero weights, written since December 6, 2026)
  and ``dense`` (the touched rows' weight blocks, written before): compressed and payload bytes,
  and the learner's publication (state copied, then ``dump_snapshot``);
* three loads: ``learning`` (:meth:`IntentModel.from_bytes` of the dense layout: what a worker
  did before), ``learning_sparse`` (the same of the sparse layout: the learner's restore), and
  ``scoring`` (:meth:`ScoringIntentModel.from_bytes` of the sparse layout: what a worker does
  now): the wall time alone, and the event loop's lag while the load runs in a thread beside a
  loop doing small tasks (``asyncio.to_thread``, as ``ModelCache.refresh`` does);
* a prediction's time with the learning and the scoring model on ``--predict`` rows after the
  training rows, and whether both models answer the same label.

Times are the median (and best) of ``--repeats``.  Usage::

    .venv/bin/python bench/intel/snapshot_load.py --json bench/results/intel-snapshot-load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cxstream.bench.loadgen import machine_speed
from cxstream.bench.snapshots import dense_layout
from cxstream.datasets import shared_data_dir
from cxstream.intel.evaluate import BANKING77_FILE, read_labelled_csv
from cxstream.intel.intent import IntentModel, ScoringIntentModel
from cxstream.intel.snapshot import dump_snapshot, snapshot_body


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median and best wall time of *fn* over *repeats* calls, in ms (one call first, not counted)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "best_ms": round(min(times), 2)}


async def _lag_while(load: Callable[[], Any]) -> dict[str, float]:
    """The loop's lag while *load* runs in a thread: ticks of ``sleep(1 ms)`` plus a little Python work each."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t - 0.001)
            sum(range(2000))  # a stage's bit of work between awaits

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    lags.clear()
    t = time.perf_counter()
    await asyncio.to_thread(load)
    wall = time.perf_counter() - t
    done.set()
    await task
    return {"wall_ms": wall * 1000, "max_lag_ms": max(lags, default=0.0) * 1000, "sum_lag_ms": sum(lags) * 1000}


def loop_lag(load: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median over *repeats* of :func:`_lag_while` (wall time, the largest lag and the lags' sum)."""
    runs = [asyncio.run(_lag_while(load)) for _ in range(repeats)]
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in ("wall_ms", "max_lag_ms", "sum_lag_ms")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=8000, help="Banking77 training rows learned")
    p.add_argument("--predict", type=int, default=1000, help="rows after those predicted by both models")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)

    path = shared_data_dir() / BANKING77_FILE
    rows = read_labelled_csv(path)
    random.Random(args.seed).shuffle(rows)
    train, held = rows[: args.rows], rows[args.rows : args.rows + args.predict]
    model = IntentModel()
    model.learn_many(train)
    sparse, dense = model.to_bytes(), dense_layout(model)
    scoring = ScoringIntentModel.from_bytes(sparse)
    texts = [text for text, _ in held]
    same = sum(model.predict_one(t)[0] == scoring.predict_one(t)[0] for t in texts)

    def predict_all(m: IntentModel) -> Callable[[], None]:
        def run() -> None:
            for t in texts:
                m.predict_detail(t)

        return run

    predict = {name: timed(predict_all(m), 3) for name, m in (("learning", model), ("scoring", scoring))}
    for v in predict.values():
        v["per_message_ms"] = round(v.pop("median_ms") / len(texts), 4)
        v.pop("best_ms")
    loads = {
        "learning": lambda: IntentModel.from_bytes(dense),
        "learning_sparse": lambda: IntentModel.from_bytes(sparse),
        "scoring": lambda: ScoringIntentModel.from_bytes(sparse),
    }
    result: dict[str, Any] = {
        "data": {"file": BANKING77_FILE, "rows_learned": len(train), "classes": len(model.labels), "seed": args.seed},
        "touched_rows": int(model._touched.sum()),
        "snapshot": {
            name: {
                "bytes": len(blob),
                "payload_bytes": len(snapshot_body(blob)),
                "publish": timed(fn, args.repeats),
            }
            for name, blob, fn in (
                ("sparse", sparse, lambda: dump_snapshot(*model.snapshot_parts())),
                ("dense", dense, lambda: dense_layout(model)),
            )
        },
        "load": {name: timed(fn, args.repeats) for name, fn in loads.items()},
        "load_in_a_thread": {name: loop_lag(fn, args.repeats) for name, fn in loads.items()},
        "predict": predict,
        "same_label": {"messages": len(texts), "same": same},
        "environment": {"python": sys.version.split()[0], "machine_speed": machine_speed()},
        "method": {
            "load": "wall time of the call alone (median and best of the repeats, after one call not counted)",
            "load_in_a_thread": "asyncio.to_thread(load) beside a loop ticking sleep(1 ms) + sum(range(2000)); "
            "max_lag_ms: the largest tick overrun, sum_lag_ms: all overruns (medians of the repeats)",
            "publish": "snapshot_parts() (the state copied) then dump_snapshot (zstd level 3), in one call",
            "predict": "predict_detail per message, the held rows, median of 3 passes",
        },
    }
    s, d = result["snapshot"], result["load"]
    result["ratios"] = {
        "payload_dense_to_sparse": round(s["dense"]["payload_bytes"] / s["sparse"]["payload_bytes"], 2),
        "publish_dense_to_sparse": round(s["dense"]["publish"]["median_ms"] / s["sparse"]["publish"]["median_ms"], 2),
        "load_learning_to_scoring": round(d["learning"]["median_ms"] / d["scoring"]["median_ms"], 2),
        "predict_learning_to_scoring": round(
            predict["learning"]["per_message_ms"] / predict["scoring"]["per_message_ms"], 2
        ),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"load": d, "ratios": result["ratios"], "same_label": result["same_label"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
