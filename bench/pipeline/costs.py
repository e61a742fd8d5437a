"""What one input costs the engine, part by part: the hot path's pure functions timed in-process (issue 17).

The pipeline drain (``cxstream bench pipeline --drain-only``) gives the engine's whole cost per
record; a py-spy profile says where it goes but inflates what it samples.  This times each part
of the hot path alone, on the benchmark workload's own records (``cxstream.bench.workload``, the
Banking77 texts), with the models trained as the drain seeds them (intent: 3,000 Banking77 rows;
churn: 2,000 Telco rows), and weighs each by how often the pipeline calls it per input:

* ingest: ``route_customer_event`` (decode, validate, normalise identifiers, redact) per input;
* identity: ``Resolver.resolve`` per input (the pure resolver over a dict);
* context: ``apply_interaction``/``apply_outcome`` per input; the context's encode and decode
  (its table value, read and written per input);
* per inbound text (messages and contacts opened with text): intent (``Scorer.predict_intent``)
  and language (``Scorer.detect_language``);
* per interaction or outcome: churn (``Scorer.churn_risk``: the probability and its reasons)
  and health (``with_health``);
* per routable contact opened: the next-best action (``NBA.decide``, untrained policy).

Run alone (nothing else on the machine); each part is timed over the whole sample, twice, and the
faster pass is kept::

    .venv/bin/python bench/pipeline/costs.py --json bench/results/pipeline-costs.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from cxstream.agents.ingest import route_customer_event
from cxstream.agents.nba import NBA
from cxstream.agents.scoring import features_of, with_health
from cxstream.bench.contexts import resolve_request, trained_scorer, workload_inputs
from cxstream.bench.loadgen import machine_speed
from cxstream.context.model import CustomerContext, context_json, decode_context, encode_context
from cxstream.context.resolver import Resolver
from cxstream.context.update import ContextLimits, apply_interaction, apply_outcome
from cxstream.datasets import shared_data_dir
from cxstream.schemas import InteractionEvent
from cxstream.streams.codecs import encode


def timed(fn: Callable[[Any], Any], items: Sequence[Any], passes: int = 2) -> float:
    """µs per call of *fn* over *items*: the faster of *passes* passes."""
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, time.perf_counter() - started)
    return 1e6 * best / max(1, len(items))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--events", type=int, default=30_000, help="workload records (as the drain's --ref-events)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", dest="json_out", default=None)
    args = p.parse_args(argv)
    data = shared_data_dir()
    inputs = workload_inputs(args.customers, args.events, args.seed)
    raw = [(encode(e), type(e)) for e in inputs]
    reqs = [resolve_request(e) for e in inputs]

    resolver = Resolver({})
    owners = [resolver.resolve(q.event.customer.present(), event_id=q.event.event_id, at=q.event.occurred_at,
                               refused=q.refused).customer_id or "anon" for q in reqs]
    limits = ContextLimits()
    contexts: dict[str, CustomerContext] = {}
    before: list[CustomerContext | None] = []
    after: list[CustomerContext] = []
    for q, cid in zip(reqs, owners, strict=True):
        ev, old = q.event, contexts.get(cid)
        if isinstance(ev, InteractionEvent):
            new, _ = apply_interaction(old, ev, cid, limits, identifiers=ev.customer.present(), redacted_text=ev.text)
        else:
            new, _ = apply_outcome(old, ev, cid, limits, identifiers=ev.customer.present())
        before.append(old)
        after.append(new)
        contexts[cid] = new

    scorer, models = trained_scorer(data)
    texts = [q.event.text for q in reqs if isinstance(q.event, InteractionEvent) and q.event.text
             and q.event.direction == "inbound" and q.event.kind in ("message", "contact_opened")]
    opened = [(ctx, q.event) for ctx, q in zip(after, reqs, strict=True)
              if isinstance(q.event, InteractionEvent) and q.event.kind == "contact_opened" and q.event.needs_advisor]
    nba = NBA()

    def apply(i: int) -> None:
        ev, cid = reqs[i].event, owners[i]
        if isinstance(ev, InteractionEvent):
            apply_interaction(before[i], ev, cid, limits, identifiers=ev.customer.present(), redacted_text=ev.text)
        else:
            apply_outcome(before[i], ev, cid, limits, identifiers=ev.customer.present())

    def resolve_all(_: int) -> None:  # a fresh resolver over the same order: every decision made again
        r = Resolver({})
        for q in reqs:
            r.resolve(q.event.customer.present(), event_id=q.event.event_id, at=q.event.occurred_at, refused=q.refused)

    encoded = [encode_context(c) for c in after]
    json_decoder = msgspec.json.Decoder(CustomerContext)
    n = len(inputs)
    parts: list[tuple[str, str, float, float]] = [  # (part, per what, µs per call, calls per input)
        ("ingest: route_customer_event", "input", timed(lambda r: route_customer_event(r[0], r[1], 1 << 20), raw), 1.0),
        ("identity: Resolver.resolve", "input", timed(resolve_all, [0], passes=2) / n, 1.0),
        ("context: apply_interaction / apply_outcome", "input", timed(apply, range(n)), 1.0),
        ("context: decode_context (zstd, then JSON)", "input", timed(decode_context, encoded), 1.0),
        ("context: encode_context (JSON, then zstd)", "input", timed(encode_context, after), 1.0),
        ("context: of which JSON only (encode + decode, no zstd)", "input",
         timed(lambda c: json_decoder.decode(msgspec.json.encode(c)), after), 0.0),
        ("intent: Scorer.predict_intent", "inbound text", timed(scorer.predict_intent, texts), len(texts) / n),
        ("language: Scorer.detect_language", "inbound text", timed(scorer.detect_language, texts), len(texts) / n),
        ("churn: Scorer.churn_risk (probability and reasons)", "input", timed(scorer.churn_risk, after), 1.0),
        ("churn: probability only (predict_proba_one)", "input",
         timed(lambda c: scorer.churn.model.predict_proba_one(features_of(c)), after), 0.0),
        ("health: with_health", "input", timed(with_health, after), 1.0),
        ("nba: NBA.decide", "routable contact opened",
         timed(lambda x: nba.decide(x[0], source_id=x[1].event_id, at=x[1].occurred_at, channel=x[1].channel, contact_id=x[1].contact_id), opened),
         len(opened) / n),
    ]
    blobs = [encode_context(c) for c in contexts.values()]
    stored = [len(b) for b in blobs]
    plain = [len(context_json(b)) for b in blobs]
    state = {"customers": len(stored), "stored_bytes_mean": round(sum(stored) / len(stored), 1),
             "stored_bytes_p99": sorted(stored)[int(0.99 * len(stored))],
             "json_bytes_mean": round(sum(plain) / len(plain), 1), "json_bytes_p99": sorted(plain)[int(0.99 * len(plain))],
             "note": "the contexts after the sample, without scores (no churn reasons, health or next-best actions): "
                     "the drain's and the open-loop runs' contexts carry those too"}
    print(f"state: {state['stored_bytes_mean']:.0f} bytes stored per customer (zstd), {state['json_bytes_mean']:.0f} as JSON")
    rows = [{"part": name, "per": per, "us_per_call": round(us, 1), "calls_per_input": round(calls, 4),
             "us_per_input": round(us * calls, 1)} for name, per, us, calls in parts]
    total = sum(r["us_per_input"] for r in rows)
    for r in rows:
        print(f"{r['us_per_input']:7.1f} µs/input  ({r['us_per_call']:6.1f} µs x {r['calls_per_input']:.3f})  {r['part']}")
    print(f"{total:7.1f} µs/input in these parts")
    out = {
        "benchmark": "hot-path parts, in-process, per input",
        "command": "bench/pipeline/costs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "speed": machine_speed()},
        "inputs": n, "inbound_texts": len(texts), "routable_contacts": len(opened), "models": models,
        "parts": rows, "us_per_input_in_parts": round(total, 1), "state": state,
        "method": "each part timed alone over the sample (faster of two passes), weighted by calls per input; "
                  "what is left of the drain's CPU per record is I/O: Kafka fetch and produce, Redis, the runtime, metrics",
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
