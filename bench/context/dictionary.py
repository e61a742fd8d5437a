"""The zstd dictionary of stored contexts: train it, and measure what it saves on contexts it was not trained on.

A stored context (table value and Redis copy) is its JSON in one zstd frame.  Small JSON
documents compress poorly alone: each frame has to spell out the field names and the common
values again.  A dictionary trained on contexts gives the compressor those up front.  This
trains one (``zstandard.train_dictionary``) on the contexts the context stage builds from the
benchmark workload with one seed (``cxstream.bench.contexts``: every fifth version of every
customer's context, so young and old contexts alike), and measures stored size and
compression time with and without it on two sets it was not trained on:

* ``workload``: the same generator with another seed (other customers, journeys and texts);
* ``twitter``: the same, with every customer text replaced by the customer turns of the IBM
  Twitter customer-care conversations (``twitter_customer_care_ibm/dev.json``): real text of
  other companies and other topics than the Banking77 utterances the dictionary saw.

``--uuid-ids`` measures the held-out sets with the workload's short event and contact ids
(``wl11-123``, ``k11-123``) replaced by UUIDs, as most channel systems send them (the same id the
same UUID within a context, so what repeats still repeats).

``--level N`` (again for several) measures at zstd level N, by default the engine's
(``cxstream.streams.codecs.CONTEXT_LEVEL``, 3).

``--write PATH`` writes the trained dictionary (``cxstream/streams/context-v1.zdict`` is the one
the engine ships; a dictionary once shipped is never replaced, see ``cxstream/streams/codecs.py``).
With ``--dictionary PATH`` it measures that dictionary instead of training one::

    .venv/bin/python bench/context/dictionary.py --dictionary cxstream/streams/context-v1.zdict \\
        --json bench/results/context-dictionary.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import zstandard

from cxstream.bench.contexts import build_contexts, resolve_requests, trained_scorer
from cxstream.bench.loadgen import machine_speed
from cxstream.datasets import shared_data_dir
from cxstream.intel.eval_assist import TWITTER_DEV, read_conversations
from cxstream.streams.codecs import CONTEXT_LEVEL

_json = msgspec.json.Encoder()


def twitter_texts(data: Path) -> tuple[str, ...]:
    """The customers' turns of the Twitter conversations, one text each (the brand handles left in, as sent)."""
    out = []
    for conv in read_conversations(data / TWITTER_DEV):
        for turn in conv.get("dialogContent") or []:
            if isinstance(turn, dict) and "client" in turn and str(turn.get("message") or "").strip():
                out.append(str(turn["message"]).strip())
    return tuple(out)


def percentile(values: Sequence[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


_WORKLOAD_ID = re.compile(rb"\bwl\d+-[\w-]*\d|\bk\d+-\d+")


def with_uuid_ids(doc: bytes) -> bytes:
    """*doc* with every workload event or contact id replaced by a UUID (one per distinct id).

    >>> out = with_uuid_ids(b'{"a":"wl7-12","b":["wl7-12","k7-3"],"c":"nba:wl7-12","d":"k7-3~ab"}')
    >>> ids = json.loads(out); ids["a"] == ids["b"][0] == ids["c"][4:] and ids["d"].startswith(ids["b"][1]), len(ids["a"])
    (True, 36)
    """
    seen: dict[bytes, bytes] = {}
    return _WORKLOAD_ID.sub(lambda m: seen.setdefault(m.group(), str(uuid.uuid4()).encode()), doc)


def measure(docs: Sequence[bytes], dictionary: zstandard.ZstdCompressionDict | None, level: int = CONTEXT_LEVEL) -> dict[str, Any]:
    """Stored bytes (mean, p99) and µs per compression and decompression of *docs* at *level*, with or without *dictionary*."""
    comp, dec = zstandard.ZstdCompressor(level=level, dict_data=dictionary), zstandard.ZstdDecompressor(dict_data=dictionary)
    frames = [comp.compress(d) for d in docs]
    assert all(dec.decompress(f) == d for f, d in zip(frames, docs, strict=True))

    def best_us(fn: Any, items: Sequence[bytes]) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            for x in items:
                fn(x)
            times.append(time.perf_counter() - started)
        return round(min(times) / len(items) * 1e6, 1)

    sizes = [len(f) for f in frames]
    return {"mean_bytes": round(sum(sizes) / len(sizes), 1), "p99_bytes": percentile(sizes, 0.99), "max_bytes": max(sizes),
            "compress_us": best_us(comp.compress, docs), "decompress_us": best_us(dec.decompress, frames)}


def final_contexts(customers: int, events: int, seed: int, scorer: Any, texts: tuple[str, ...] | None = None) -> list[bytes]:
    return [_json.encode(c) for c in build_contexts(resolve_requests(customers, events, seed, texts), scorer).values()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--train-events", type=int, default=40_000)
    p.add_argument("--test-events", type=int, default=80_000, help="more than for training: older, larger contexts too")
    p.add_argument("--train-seed", type=int, default=7)
    p.add_argument("--test-seed", type=int, default=11)
    p.add_argument("--size", type=int, default=16384, help="dictionary size, bytes")
    p.add_argument("--dictionary", default=None, help="measure this dictionary instead of training one")
    p.add_argument("--write", default=None, help="write the trained dictionary here")
    p.add_argument("--uuid-ids", action="store_true", help="the held-out sets with UUIDs for the workload's event and contact ids")
    p.add_argument("--level", type=int, action="append", default=None,
                   help=f"zstd level (default: the engine's, {CONTEXT_LEVEL}); again to measure several")
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args(argv)
    levels = args.level or [CONTEXT_LEVEL]
    data = shared_data_dir()
    scorer, models = trained_scorer(data)

    samples: list[bytes | bytearray | memoryview] = []
    if args.dictionary:
        dictionary = zstandard.ZstdCompressionDict(Path(args.dictionary).read_bytes())
        trained: dict[str, Any] = {"from": args.dictionary}
    else:
        versions = [0]

        def keep(ctx: Any) -> None:
            versions[0] += 1
            if versions[0] % 5 == 0:
                samples.append(_json.encode(ctx))

        build_contexts(resolve_requests(args.customers, args.train_events, args.train_seed), scorer, on_update=keep)
        started = time.perf_counter()
        dictionary = zstandard.train_dictionary(args.size, samples)
        trained = {"seed": args.train_seed, "customers": args.customers, "events": args.train_events,
                   "samples": len(samples), "seconds": round(time.perf_counter() - started, 1)}
        if args.write:
            Path(args.write).write_bytes(dictionary.as_bytes())
            print(f"wrote {args.write}: {len(dictionary.as_bytes())} bytes, id {dictionary.dict_id()}")
    sets = {"workload": final_contexts(args.customers, args.test_events, args.test_seed, scorer)}
    if (data / TWITTER_DEV).exists():
        sets["twitter"] = final_contexts(args.customers, args.test_events, args.test_seed, scorer, twitter_texts(data))
    if args.uuid_ids:
        sets = {name: [with_uuid_ids(d) for d in docs] for name, docs in sets.items()}
    results: dict[str, Any] = {}
    for name, docs in sets.items():
        json_sizes = [len(d) for d in docs]
        by_level = {}
        for level in levels:
            plain, with_dict = measure(docs, None, level), measure(docs, dictionary, level)
            by_level[str(level)] = {"zstd": plain, "zstd_with_dictionary": with_dict,
                                    "stored_ratio": round(with_dict["mean_bytes"] / plain["mean_bytes"], 3)}
            print(f"{name}, level {level}: {len(docs)} contexts, JSON mean {sum(json_sizes) / len(docs):.0f} B; stored mean / "
                  f"p99 {plain['mean_bytes']:.0f} / {plain['p99_bytes']} B without the dictionary, {with_dict['mean_bytes']:.0f} / "
                  f"{with_dict['p99_bytes']} B with it; compress {plain['compress_us']} / {with_dict['compress_us']} µs")
        results[name] = {"contexts": len(docs), "json_mean_bytes": round(sum(json_sizes) / len(docs), 1),
                         "json_p99_bytes": percentile(json_sizes, 0.99), **by_level[str(levels[0])]}
        if len(levels) > 1:
            results[name]["by_level"] = by_level
    out = {
        "benchmark": "zstd dictionary of stored contexts: stored size on contexts it was not trained on",
        "command": "bench/context/dictionary.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine_speed": machine_speed(), "models": models, "dictionary": {
            "bytes": len(dictionary.as_bytes()), "id": dictionary.dict_id(), "trained": trained},
        "held_out": results,
        "method": "contexts built in process as the context stage builds them (cxstream.bench.contexts), without what the "
                  "router and desktops add; each set's final contexts as JSON, compressed one by one at each level "
                  "(the first level's figures at the top of each set, all of them in by_level); times are the best of "
                  "three passes",
        "levels": levels,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
