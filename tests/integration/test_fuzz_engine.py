"""Fuzz the running engine's input path: over 100,000 broken events, and the valid ones between them.

Hypothesis draws event templates from the wire schemas (tests/fuzzing.py): valid events in
every encoding the contract allows, and events broken one way each (truncated, invalid
UTF-8 and other encodings, binary, wrong types, missing fields, out-of-range and far-future
times, NaN/inf tokens, unknown types, oversized, nested thousands deep, placeholder
identifiers, null bytes...).  Drawing is what costs (10-80 ms an event on a busy machine), so
each template is instantiated many times with its own event id and customer: over 100,000
invalid events from 288 templates (12 of each corruption, 24 valid), interleaved (seeded shuffle) with the valid ones
over the three input topics, with any key.  Derandomized hypothesis and a fixed seed: the same
corruptions in the same numbers on every run (event times are drawn relative to the run's
clock, so some values differ); the figures are printed.

Accounting, record by record: each invalid one has exactly one dead letter, found by its
coordinates (source topic, partition, offset), with a reason and an ``error_type`` its
corruption allows; no valid one has a dead letter; each valid customer event is in its
customer's context (the context of each customer holds exactly its valid events); no
record is a ``processing_error`` (an engine defect); the engine is alive, healthy, never
restarted a stage and logged no traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cxstream.schemas import DeadLetter
from cxstream.streams import topics as t
from cxstream.streams.admin import partitions_of
from tests.fuzzing import CORRUPTIONS, INPUTS, Case, corrupted_case, valid_case
from tests.integration.conftest import API_KEY, RunningEngine, start_engine, stop_engine
from tests.integration.test_pipeline import uid

pytestmark = pytest.mark.integration

SEED = 20261203
INVALID_TARGET = int(os.environ.get("CX_FUZZ_INVALID", "100000"))  # a smaller figure for a quick look
TEMPLATES = 300
MAX_EVENT_BYTES = 4096  # CX_MAX_EVENT_BYTES of the fuzzed engine: the oversized events stay small
SKEW_S = 3600.0  # CX_MAX_FUTURE_SKEW_S (the default)
PER_CUSTOMER = 12  # valid events per customer: below the context's 20 interactions and 64 remembered ids
EVENT_TOKEN, CUSTOMER_TOKEN = "EVT-000000000000", "fz-CUST00000000"  # fixed width: replaced per instance
TOPIC = {"interactions": t.INTERACTIONS, "outcomes": t.OUTCOMES, "advisor_events": t.ADVISOR_EVENTS}


def draw_templates(now: float) -> list[Case]:
    """About TEMPLATES cases drawn by hypothesis, derandomized: the same list on every run for the same *now*.

    As many of each corruption (hypothesis alone favours the first ones) and of valid events."""
    drawn: list[Case] = []
    kinds: list[str | None] = [*CORRUPTIONS, None, None]  # None: valid, twice the share of one corruption

    def strategy(how: str | None) -> st.SearchStrategy[Case]:
        def one(topic: str) -> st.SearchStrategy[Case]:
            if how is None:
                return valid_case(topic, CUSTOMER_TOKEN, EVENT_TOKEN, now, SKEW_S)
            return corrupted_case(topic, CUSTOMER_TOKEN, EVENT_TOKEN, now, SKEW_S, MAX_EVENT_BYTES, how)
        return st.sampled_from(INPUTS).flatmap(one)

    for how in kinds:
        @settings(max_examples=TEMPLATES // len(kinds), derandomize=True, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(strategy(how))
        def collect(c: Case) -> None:
            drawn.append(c)

        collect()
    return drawn


def instantiate(templates: list[Case]) -> tuple[list[Case], Counter[str]]:
    """Instances of the templates, each with its own event id (and customer when valid), until INVALID_TARGET invalid ones."""
    rnd = random.Random(SEED)
    out: list[Case] = []
    invalid = n = 0
    customers: Counter[str] = Counter()
    next_customer = 0
    while invalid < INVALID_TARGET:
        for tpl in templates:
            n += 1
            ev_id = f"EVT-{n:012d}"
            sub = {EVENT_TOKEN.encode(): ev_id.encode()}
            cust = tpl.customer
            if tpl.valid and tpl.topic != "advisor_events":
                cust = f"fz-CUST{next_customer:08d}"
                customers[cust] += 1
                if customers[cust] == PER_CUSTOMER:
                    next_customer += 1
            sub[CUSTOMER_TOKEN.encode()] = (cust or CUSTOMER_TOKEN).encode()
            value, key = tpl.value, tpl.key
            for old, new in sub.items():
                value = value.replace(old, new) if value is not None else None
                key = key.replace(old, new) if key is not None else None
            if tpl.valid:
                assert value is not None and ev_id.encode() in value, tpl
            out.append(Case(tpl.topic, key, value, tpl.expect, tpl.label, cust if tpl.valid else None, ev_id if tpl.valid else None))
            invalid += not tpl.valid
    # a payload just under the broker's record limit, of control characters: escaped into a dead letter it was
    # six times larger than the broker takes, and the stage stopped (the dead letter now keeps its start)
    out.append(Case("interactions", b"big", b"\x01" * 900_000, frozenset({"too_large"}), "near_broker_limit"))
    rnd.shuffle(out)
    return out, Counter(c.label.split(":")[0] for c in out)


async def produce_all(broker: str, prefix: str, cases: list[Case]) -> list[tuple[str, int, int]]:
    """Produce every case; their (topic, partition, offset), in the same order."""
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=20, max_request_size=2 * 1024 * 1024,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(prefix + TOPIC[c.topic].name, c.value, key=c.key) for c in cases]
        meta = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.topic, m.partition, m.offset) for m in meta]


async def dead_letters(broker: str, topic: str, want: int, timeout: float, stall: float) -> list[DeadLetter]:
    """Read the dead-letter topic from the start until *want* letters (or no progress for *stall* s, or *timeout*)."""
    decode = msgspec.json.Decoder(DeadLetter).decode
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, max_partition_fetch_bytes=8 * 2**20)
    await consumer.start()
    got: list[DeadLetter] = []
    try:
        tps = await partitions_of(consumer, topic, timeout=60)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started = last = time.monotonic()
        while len(got) < want and time.monotonic() - started < timeout and time.monotonic() - last < stall:
            batch = await consumer.getmany(timeout_ms=500, max_records=20000)
            for msgs in batch.values():
                got.extend(decode(m.value) for m in msgs)
                last = time.monotonic()
        # and a moment more: a letter too many (a duplicate, a valid event refused) must show
        batch = await consumer.getmany(timeout_ms=1000)
        got.extend(decode(m.value) for msgs in batch.values() for m in msgs)
    finally:
        await consumer.stop()
    return got


def get(engine: RunningEngine, path: str) -> tuple[int, Any]:
    req = urllib.request.Request(engine.http + path, headers={"X-API-Key": API_KEY})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if resp.headers.get_content_type() == "application/json" else body.decode()
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read()
            return exc.code, json.loads(body) if exc.headers.get_content_type() == "application/json" else body.decode()


@pytest.fixture(scope="module")
def fuzz_engine(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    tag = uid("f")[-8:]
    e = start_engine(servers[0], servers[1], tmp_path_factory.mktemp("fuzz"), f"f{tag}.", f"cxfuzz-{tag}",
                     CX_MAX_EVENT_BYTES=str(MAX_EVENT_BYTES), CX_MAX_FUTURE_SKEW_S=str(SKEW_S))
    yield e
    stop_engine(e)


def test_a_hundred_thousand_broken_events_are_each_dead_lettered_and_every_valid_one_is_processed(fuzz_engine: RunningEngine) -> None:
    e = fuzz_engine
    clock = time.monotonic()
    templates = draw_templates(time.time())
    drawn_s = time.monotonic() - clock
    cases, labels = instantiate(templates)
    print(f"\nfuzz: seed {SEED}, {len(templates)} hypothesis templates drawn in {drawn_s:.1f} s")
    invalid = [c for c in cases if not c.valid]
    valid = [c for c in cases if c.valid]
    clock = time.monotonic()
    coords = asyncio.run(produce_all(e.broker, e.prefix, cases))
    produced_s = time.monotonic() - clock
    by_coords = dict(zip(coords, cases, strict=True))

    clock = time.monotonic()
    letters = asyncio.run(dead_letters(e.broker, e.topic(t.DEAD_LETTER.name), len(invalid), timeout=900, stall=120))
    dead_s = time.monotonic() - clock
    print(f"fuzz: {len(cases)} events produced "
          f"({produced_s:.1f} s): {len(invalid)} invalid, {len(valid)} valid; {len(letters)} dead letters in {dead_s:.1f} s")
    print("fuzz: events by corruption:", dict(sorted(labels.items())))
    print("fuzz: dead letters by error_type:", dict(Counter(d.error_type for d in letters).most_common()))

    # what the engine said besides the dead letters, if anything fails below
    said = [line for line in e.output().splitlines() if "dead letter from" not in line]
    trace = next((i for i, line in enumerate(said) if line.startswith("Traceback")), len(said) - 15)
    print("fuzz: the engine's log without its dead-letter lines, from its first traceback if any:\n"
          + "\n".join(line[:300] for line in said[max(0, trace - 3): trace + 40]))

    # every dead letter is one invalid input, with a reason its corruption allows; no valid input has one
    seen: Counter[tuple[str, int, int]] = Counter()
    wrong = []
    for d in letters:
        where = (d.source_topic, d.partition, d.offset)
        seen[where] += 1
        c = by_coords.get(where)
        if c is None or c.valid or d.error_type not in c.expect or not d.reason or d.agent != "ingest":
            wrong.append((d.error_type, d.agent, d.reason[:160], c.label if c else None, (c.value or b"")[:160] if c else None))
    assert not wrong, f"{len(wrong)} dead letters that do not match their input: {wrong[:10]}"
    # delivery is at least once: after a rebalance a batch may be processed again, and its dead letters sent again
    twice = [w for w, n in seen.items() if n > 1]
    print(f"fuzz: {len(twice)} inputs dead-lettered twice (a batch redelivered after a rebalance: at least once)")
    assert len(twice) < len(invalid) // 10, f"{len(twice)} inputs dead-lettered more than once: {twice[:5]}"
    missing = [c for w, c in by_coords.items() if not c.valid and w not in seen]
    assert not missing, f"{len(missing)} invalid inputs without a dead letter: {[(m.label, (m.value or b'')[:120]) for m in missing[:10]]}"
    big = next(d for d in letters if by_coords[(d.source_topic, d.partition, d.offset)].label == "near_broker_limit")
    assert big.raw_truncated and big.raw_bytes == 900_000 and len(big.raw) <= 65536

    # every valid customer event is in its customer's context: each context holds exactly its valid events
    expected: dict[str, set[str]] = defaultdict(set)
    for c in valid:
        if c.customer is not None and c.event_id is not None:
            expected[c.customer].add(c.event_id)
    clock = time.monotonic()
    pending = dict(expected)
    last: dict[str, Any] = {}
    while pending and time.monotonic() - clock < 180:
        for cust, ids in list(pending.items()):
            status, body = get(e, f"/customers/{cust}/context")
            last[cust] = (status, body)
            if status == 200 and {r["event_id"] for r in body["recent"]} == ids:
                del pending[cust]
        if pending:
            time.sleep(1.0)
    print(f"fuzz: {len(expected)} customers' contexts hold exactly their {sum(map(len, expected.values()))} valid events "
          f"(checked in {time.monotonic() - clock:.1f} s)")
    assert not pending, {c: (ids, last.get(c)) for c, ids in list(pending.items())[:3]}

    # and the engine never failed: alive, healthy, no processing error, no restart, no traceback
    assert e.proc.poll() is None, e.output()[-3000:]
    status, health = get(e, "/healthz")
    assert status == 200, health
    status, metrics = get(e, "/metrics")
    assert status == 200
    assert 'error_type="processing_error"' not in metrics
    out = e.output()
    print(f"fuzz: the stages' consumer joined its group {out.count('Joined group')} time(s) "
          f"({out.count('Heartbeat session expired')} heartbeat session(s) expired)")
    assert "Traceback" not in out and "crash" not in out.lower(), out[-3000:]
