"""Recordings: parsing, pacing and re-stamping; the demo sample and simulated desktops."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxstream.replay.demo import SAMPLE, generate_sample
from cxstream.replay.desktop import DesktopProfile, respond
from cxstream.replay.publish import LatencySummary
from cxstream.replay.recording import RecordingError, parse_line, read_recording, schedule, write_recording
from cxstream.schemas import AdvisorEvent, Assignment, Identifiers, InteractionEvent, OutcomeEvent
from cxstream.streams import topics as t


def test_typed_records_go_to_their_input_topic_keyed_by_identifier(tmp_path: Path) -> None:
    ev = InteractionEvent(event_id="e1", occurred_at=5.0, channel="sms", kind="message", customer=Identifiers(phone="+447700900123"))
    adv = AdvisorEvent(event_id="a1", occurred_at=6.0, advisor_id="ann", kind="login")
    path = tmp_path / "r.jsonl"
    write_recording(path, [ev, adv, {"topic": "cx.interactions.v1", "key": None, "value": "{broken"}])
    p1, p2, p3 = read_recording(path)
    assert (p1.topic, p1.key, p1.at) == (t.INTERACTIONS.name, b"+447700900123", 5.0)
    assert (p2.topic, p2.key) == (t.ADVISOR_EVENTS.name, b"ann")
    assert (p3.value, p3.key, p3.at) == (b"{broken", None, None)


def test_bad_lines_say_where(tmp_path: Path) -> None:
    assert parse_line("   ") is None and parse_line("# comment") is None
    with pytest.raises(RecordingError, match=r"f\.jsonl:3: not JSON"):
        parse_line("{nope", "f.jsonl:3")
    with pytest.raises(RecordingError, match="not an input record"):
        parse_line('{"event_id": "x"}')


def test_restamping_changes_only_the_event_time() -> None:
    p = parse_line('{"type": "cx.AdvisorEvent.v1", "event_id": "a", "occurred_at": 1, "advisor_id": "x", "kind": "login"}')
    assert p is not None
    q = p.restamped(99.5)
    assert q.at == 99.5 and q.record is not None and q.record.occurred_at == 99.5 and q.record.event_id == "a"
    assert b'"occurred_at":99.5' in q.value


def test_schedule_paces_by_event_time_and_speed() -> None:
    recs = read_recording(SAMPLE)[:10]
    fast = [w for w, _ in schedule(recs, 0, 50.0)]
    assert set(fast) == {50.0}
    real = [w for w, _ in schedule(recs, 1.0, 0.0)]
    assert real == sorted(real) and real[-1] == pytest.approx(recs[-1].at - recs[0].at)


def test_bundled_sample_is_the_generator_output(tmp_path: Path) -> None:
    write_recording(tmp_path / "demo.jsonl", generate_sample())
    assert (tmp_path / "demo.jsonl").read_bytes() == SAMPLE.read_bytes(), "regenerate: python -m cxstream.replay.demo"
    recs = read_recording(SAMPLE)
    assert sum(1 for r in recs if r.record is None) == 1, "one malformed record shows the dead-letter path"


def test_desktops_answer_deterministically() -> None:
    a = Assignment(
        assignment_id="as-1", contact_id="k", customer_id="email:a@b.co", advisor_id="ann",
        routing_group="default", channel="voice", contact_opened_at=0, decided_at=0, waited_s=0,
    )
    assert respond(a) == respond(a)
    steps = respond(a)
    assert [s.after_s for s in steps] == sorted(s.after_s for s in steps)
    closed = steps[-1].record
    assert isinstance(closed, InteractionEvent) and closed.customer.email == "a@b.co"
    (reject,) = respond(a, DesktopProfile(reject_rate=1.0))
    assert reject.record.kind == "offer_rejected"


def test_latency_summary_percentiles() -> None:
    s = LatencySummary.of([i / 1000 for i in range(1, 1001)])
    assert s.count == 1000 and s.p50_ms == pytest.approx(500, rel=0.01) and s.p99_ms == pytest.approx(990, rel=0.01)
    assert LatencySummary.of([]).count == 0


def readme_example() -> str:
    """The record the README shows under "A contact that needs an advisor:", exactly as printed."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    after = readme.split("A contact that needs an advisor:", 1)[1]
    block = after.split("```json\n", 1)[1].split("```", 1)[0]
    return block


def test_the_readme_example_record_is_a_recording_as_printed(tmp_path: Path) -> None:
    """Copied from the README into a file, the example replays (it has no ``type`` and spans three lines)."""
    example = readme_example()
    assert '"type"' not in example and example.count("\n") > 1, "the test checks the README's untyped, pretty-printed form"
    path = tmp_path / "recording.jsonl"
    path.write_text(example)
    [p] = read_recording(path)
    assert isinstance(p.record, InteractionEvent) and p.topic == t.INTERACTIONS.name
    assert p.record.needs_advisor and p.record.contact_id and p.key == p.record.customer.email.encode()  # type: ignore[union-attr]
    # and on one line, as JSONL, twice, with a comment between
    one_line = " ".join(example.split("\n")).strip()
    path.write_text(f"{one_line}\n# the same again\n{one_line}\n")
    assert [r.record for r in read_recording(path)] == [p.record, p.record]


def test_untyped_records_are_read_as_the_record_their_fields_say() -> None:
    adv = parse_line('{"event_id": "a", "occurred_at": 1, "advisor_id": "ann", "kind": "login", "presence": "available"}')
    out = parse_line('{"event_id": "o", "occurred_at": 1, "customer": {"email": "a@b.co"}, "kind": "csat", "value": 5}')
    ev = parse_line('{"event_id": "p", "occurred_at": 1, "channel": "app", "kind": "payment_failed", "customer": {"phone": "+447700900123"}}')
    assert (type(adv.record), type(out.record), type(ev.record)) == (AdvisorEvent, OutcomeEvent, InteractionEvent)  # type: ignore[union-attr]
    assert (adv.topic, out.topic, ev.topic) == (t.ADVISOR_EVENTS.name, t.OUTCOMES.name, t.INTERACTIONS.name)  # type: ignore[union-attr]
    with pytest.raises(RecordingError, match="read as InteractionEvent"):
        parse_line('{"event_id": "p", "occurred_at": 1, "channel": "fax", "kind": "message", "customer": {}}')


def test_a_record_left_unfinished_says_where_it_began(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"event_id": "a", "occurred_at": 1, "advisor_id": "ann", "kind": "login"}\n{"event_id": "b",\n "occurred_at": 2,\n')
    with pytest.raises(RecordingError, match=r"r\.jsonl:2: not JSON"):
        read_recording(path)
