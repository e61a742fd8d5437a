"""Fuzz the ingest stage's decode-and-validate functions (no broker): every input is routed or refused with its reason.

The strategies (tests/fuzzing.py) derive valid events from the wire schemas and break them
one way each; the test says which dead-letter ``error_type`` each corruption may get.  The
engine-level fuzz of 100,000 events is tests/integration/test_fuzz_engine.py.  The
examples kept below are the defects this fuzz found (each failed before its fix).
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxstream.agents.ingest import route_advisor_event, route_customer_event
from cxstream.schemas import DeadLetter, InteractionEvent, OutcomeEvent, ResolveRequest
from cxstream.streams.codecs import InvalidInput, decode
from cxstream.streams.deadletter import dead_letter_for
from tests.fuzzing import INPUTS, Case, case, from_msgspec

NOW = 1_764_000_000.0
SKEW = 3600.0
MAX_BYTES = 4096
FUZZ = settings(max_examples=150, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def route(c: Case) -> object:
    if c.topic == "advisor_events":
        return route_advisor_event(c.value, MAX_BYTES, SKEW, now=NOW)
    kind = InteractionEvent if c.topic == "interactions" else OutcomeEvent
    return route_customer_event(c.value, kind, MAX_BYTES, SKEW, now=NOW)


@FUZZ
@given(st.sampled_from(INPUTS).flatmap(lambda topic: case(topic, "fz-C1", "fz-e1", now=NOW, skew_s=SKEW, max_bytes=MAX_BYTES, valid_percent=25)))
def test_every_input_is_routed_or_refused_with_a_reason_its_corruption_allows(c: Case) -> None:
    try:
        routed = route(c)
    except InvalidInput as exc:
        assert not c.valid, (c.label, exc.error_type, exc.reason)
        assert exc.error_type in c.expect and exc.reason, (c.label, exc.error_type, exc.reason)
        # its dead letter encodes, decodes and stays far below the broker's record limit
        letter = dead_letter_for(exc, topic="t", partition=0, offset=1, agent="ingest", raw=c.value, key=c.key, max_raw=1024)
        back = msgspec.json.decode(msgspec.json.encode(letter), type=DeadLetter)
        assert back == letter and len(msgspec.json.encode(letter)) < 6 * 1024 + 4096
        assert back.raw_bytes == len(c.value or b"") and back.raw_truncated == (len(c.value or b"") > 1024)
        return
    assert c.valid, f"{c.label} was accepted: {(c.value or b'')[:300]!r}"
    if c.topic == "advisor_events":
        return
    req = decode(routed.value, ResolveRequest)  # type: ignore[attr-defined]
    assert (req.event.event_id, req.event.customer.customer_id) == (c.event_id, c.customer)


@FUZZ
@given(from_msgspec(InteractionEvent))
def test_the_schema_strategy_draws_valid_events(ev: dict[str, object]) -> None:
    msgspec.convert(ev, InteractionEvent)


BASE = b'{"event_id":"e1","occurred_at":1,"channel":"chat","kind":"message","customer":{"customer_id":"c1"}'


@pytest.mark.parametrize(("raw", "error_type"), [
    # invalid UTF-8 inside a string: msgspec raises UnicodeDecodeError, which became a processing_error
    (BASE.replace(b'"e1"', b'"e\xff1"') + b"}", "not_utf8"),
    (BASE.replace(b'"e1"', b'"e\xed\xa0\x80"') + b"}", "not_utf8"),
    # nested thousands deep in an unknown field: a RecursionError, a processing_error
    (BASE + b',"x":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", "not_json"),
    (BASE + b',"x":' + b"[" * 3000 + b"]" * 3000 + b"}", "not_json"),
    # the contract says at most 64 attributes; 65 were taken
    (BASE + b',"attributes":{' + b",".join(b'"k%d":1' % i for i in range(65)) + b"}}", "invalid"),
    # far-future event time (a producer clock or unit mistake) was taken and moved the router's clock
    (BASE.replace(b'"occurred_at":1', b'"occurred_at":%d' % (NOW + 86400)) + b"}", "future_dated"),
])
def test_found_by_the_fuzz(raw: bytes, error_type: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        route_customer_event(raw, InteractionEvent, 1_000_000, SKEW, now=NOW)
    assert refused.value.error_type == error_type, refused.value.reason


def test_late_and_slightly_early_events_are_valid() -> None:
    for at in (1, NOW - 86400 * 365, NOW + SKEW - 1):
        raw = BASE.replace(b'"occurred_at":1', b'"occurred_at":%r' % at) + b"}"
        route_customer_event(raw, InteractionEvent, MAX_BYTES, SKEW, now=NOW)
    # -1 turns the check off
    route_customer_event(BASE.replace(b'"occurred_at":1', b'"occurred_at":%d' % (NOW * 10)) + b"}", InteractionEvent, MAX_BYTES, -1, now=NOW)


def test_a_dead_letter_keeps_the_start_of_a_payload_near_the_broker_limit() -> None:
    # 900 kB of control characters: JSON-escaped, the whole payload made a 5.4 MB dead letter that the broker
    # refuses (1 MB records), and a dead letter that cannot be produced stops the stage
    raw = b"\x01" * 900_000
    letter = dead_letter_for(InvalidInput("too_large", "big"), topic="t", partition=0, offset=3, agent="ingest", raw=raw, key=b"k")
    encoded = msgspec.json.encode(letter)
    assert len(encoded) < 512 * 1024 and letter.raw_truncated and letter.raw_bytes == 900_000
    assert letter.raw == "\x01" * 65536


def test_a_flood_of_dead_letters_is_logged_as_a_burst_and_a_count(caplog: pytest.LogCaptureFixture) -> None:
    """One log line per dead letter was most of its cost; under the fuzz's flood the stage starved its heartbeats."""
    from cxstream.streams import deadletter

    deadletter._log_window[:] = [0.0, 0, 0]
    with caplog.at_level("WARNING", logger="cxstream.streams.deadletter"):
        for i in range(500):
            letter = dead_letter_for(InvalidInput("not_json", "bad"), topic="t", partition=0, offset=i, agent="ingest", raw=b"{", key=None)
            deadletter.count_dead_letter(letter)
        deadletter._log_window[0] -= deadletter.LOG_WINDOW_S  # the window is over: the next one sums it up
        deadletter.count_dead_letter(letter)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == deadletter.LOG_BURST + 2
    assert f"{500 - deadletter.LOG_BURST} more dead letters" in lines[-2]


def test_a_long_batch_lets_the_event_loop_run() -> None:
    """Handlers do not suspend: a batch of slow records starved the consumer's heartbeats (rebalance after rebalance)."""
    import asyncio
    import time
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from cxstream.streams.batch import YIELD_EVERY_S, BatchStage

    async def run() -> int:
        stage = BatchStage("s", ["t"], [], "dl", [])

        async def handler(rec: object) -> None:
            time.sleep(0.002)  # CPU-bound work: nothing awaits

        stage.handler = handler
        ticks = 0

        async def beat() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(beat())
        await asyncio.sleep(0)
        before = ticks
        records = [SimpleNamespace(offset=i, key=None, value=b"x", timestamp=None) for i in range(200)]
        started = time.perf_counter()
        await stage.process([(TopicPartition("t", 0), records)])
        spent = time.perf_counter() - started
        task.cancel()
        assert spent > 2 * YIELD_EVERY_S
        return ticks - before

    assert asyncio.run(run()) >= 2
