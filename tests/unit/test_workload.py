"""The synthetic workload of ``cxstream bench pipeline``: deterministic, and the mix the issue asks for."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec

from cxstream.bench.loadgen import accepted_inputs, parse_metrics
from cxstream.bench.workload import BUILTIN_TEXTS, Workload, WorkloadConfig, identities, load_texts, mix
from cxstream.context.identity import normalised
from cxstream.replay.recording import Planned
from cxstream.schemas import AdvisorEvent, InteractionEvent, OutcomeEvent
from cxstream.streams import topics as t

CFG = WorkloadConfig(customers=500, seed=3, advisors=20, shared_data_dir="/nonexistent")


def sample(n: int = 3000, cfg: WorkloadConfig = CFG) -> list:
    return list(Workload(cfg).events(n))


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a = [msgspec.json.encode(e) for e in sample(1000)]
    b = [msgspec.json.encode(e) for e in sample(1000)]
    other = WorkloadConfig(customers=500, seed=4, advisors=20, shared_data_dir="/nonexistent")
    c = [msgspec.json.encode(e) for e in sample(1000, other)]
    assert a == b
    assert a != c


def test_a_window_of_the_stream_is_the_same_as_the_whole_stream_sliced() -> None:
    w = Workload(CFG)
    whole = list(w.events(300))
    assert list(w.events(100, start=200)) == whole[200:]


def test_mix_has_a_third_messages_with_text_and_a_contact_every_few_events() -> None:
    events = sample(5000)
    shares = mix(events)
    messages = [e for e in events if isinstance(e, InteractionEvent) and e.kind == "message"]
    # the desktops add 3 answers per contact on top of the generated stream: still >= 1/3 messages
    assert len(messages) / (len(events) * (1 + 3 / CFG.contact_every)) >= 1 / 3
    assert all(m.text for m in messages)
    opened = [e for e in events if isinstance(e, InteractionEvent) and e.kind == "contact_opened"]
    assert all(o.needs_advisor and o.contact_id for o in opened)
    assert shares["InteractionEvent.contact_opened"] == 1 / CFG.contact_every
    assert any(isinstance(e, AdvisorEvent) for e in events)
    assert any(isinstance(e, OutcomeEvent) for e in events)
    channels = {e.channel for e in events if isinstance(e, InteractionEvent)}
    assert {"voice", "chat", "email", "sms", "web", "social", "app"} <= channels


def test_every_record_is_a_valid_wire_record_with_usable_identifiers() -> None:
    for e in sample(2000):
        raw = msgspec.json.encode(e)
        back = msgspec.json.decode(raw, type=InteractionEvent | AdvisorEvent | OutcomeEvent)
        assert back == e
        if not isinstance(e, AdvisorEvent):
            assert normalised(e.customer)  # no junk identifiers: nothing goes to the dead-letter topic


def test_switchers_use_their_phone_alone_on_voice_and_others_do_not() -> None:
    w = Workload(CFG)
    switchers = [c for c in range(CFG.customers) if w.is_switcher(c)]
    assert 0.15 < len(switchers) / CFG.customers < 0.35
    phone_only = [
        e for e in sample(5000)
        if isinstance(e, InteractionEvent) and e.channel in ("voice", "sms") and e.customer.customer_id is None
    ]
    assert phone_only
    assert all(e.customer.phone for e in phone_only)


def test_identifiers_are_stable_and_normalise() -> None:
    ids = identities(7)
    assert ids == identities(7)
    assert normalised(Workload(CFG).identifiers_on(7, "voice", random.Random(0)))["phone"].startswith("+44")


def test_logins_and_prefill() -> None:
    w = Workload(CFG)
    logins = w.advisor_logins()
    assert [a.advisor_id for a in logins] == [f"adv-{i:04d}" for i in range(20)]
    assert logins == w.advisor_logins()
    assert all(a.kind == "login" and a.presence == "available" and a.skills for a in logins)
    pre = list(w.prefill())
    assert len(pre) == CFG.customers
    assert len({p.customer.customer_id for p in pre}) == CFG.customers


def test_planned_records_go_to_the_input_topics_and_restamp() -> None:
    planned = list(Workload(CFG).planned(200))
    assert {p.topic for p in planned} <= {s.name for s in t.INPUTS}
    p: Planned = planned[0].restamped(1_800_000_000.5)
    assert msgspec.json.decode(p.value)["occurred_at"] == 1_800_000_000.5


def test_texts_fall_back_to_the_builtin_list() -> None:
    texts, source = load_texts(CFG)
    assert source == "builtin" and texts == BUILTIN_TEXTS


def test_banking77_texts_are_read_from_the_shared_data_dir(tmp_path: Path) -> None:
    (tmp_path / "banking77").mkdir()
    (tmp_path / "banking77" / "train.csv").write_text("text,category\nWhere is my card?,card_arrival\nHi,greeting\n")
    texts, source = load_texts(WorkloadConfig(shared_data_dir=str(tmp_path)))
    assert sorted(texts) == ["Hi", "Where is my card?"]
    assert source.endswith("train.csv")


def test_achieved_rate_counts_accepted_inputs_of_the_prefixed_input_topics() -> None:
    text = "\n".join([
        '# HELP cx_events_in_total x',
        'cx_events_in_total{outcome="accepted",topic="p.cx.interactions.v1"} 10.0',
        'cx_events_in_total{outcome="accepted",topic="p.cx.advisor-events.v1"} 5.0',
        'cx_events_in_total{outcome="dead_letter",topic="p.cx.interactions.v1"} 7.0',
        'cx_events_in_total{outcome="accepted",topic="q.cx.interactions.v1"} 100.0',
    ])
    assert accepted_inputs(parse_metrics(text), "p.") == 15.0
