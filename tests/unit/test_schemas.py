"""The wire contract: every record round-trips, validates its constraints, and exports as JSON Schema."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxstream.schemas import (
    WIRE_RECORDS,
    AdvisorEvent,
    ContactRequest,
    ContactUpdate,
    InteractionEvent,
    RouterTick,
    export_json_schemas,
)
from cxstream.schemas import schema_id as schema_id_of
from cxstream.streams.codecs import InvalidInput, decode, encode

ALL_RECORDS = (*WIRE_RECORDS, ContactRequest, ContactUpdate, RouterTick)


def strategy(t: mi.Type) -> st.SearchStrategy[Any]:
    """Values valid for a msgspec type, constraints included (derived from msgspec's type info)."""
    if isinstance(t, mi.Metadata):
        return strategy(t.type)
    if isinstance(t, mi.StrType):
        if t.pattern:
            return st.from_regex(t.pattern, fullmatch=True).filter(lambda s: len(s) <= (t.max_length or 10**6))
        return st.text(min_size=t.min_length or 0, max_size=min(t.max_length or 30, 30))
    if isinstance(t, mi.IntType):
        return st.integers(min_value=t.ge if t.ge is not None else -(2**31), max_value=t.le if t.le is not None else 2**31)
    if isinstance(t, mi.FloatType):
        return st.floats(
            min_value=t.ge if t.ge is not None else -1e12, max_value=t.le if t.le is not None else 1e12,
            allow_nan=False, allow_infinity=False,
        )
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.UnionType):
        return st.one_of(*(strategy(x) for x in t.types))
    if isinstance(t, mi.ListType):
        return st.lists(strategy(t.item_type), max_size=min(t.max_length or 4, 4))
    if isinstance(t, mi.DictType):
        return st.dictionaries(strategy(t.key_type), strategy(t.value_type), max_size=4)
    if isinstance(t, mi.StructType):
        fields = {f.name: strategy(f.type) for f in t.fields}
        return st.fixed_dictionaries(fields).map(lambda kw: t.cls(**kw))
    raise NotImplementedError(t)


@pytest.mark.parametrize("record", ALL_RECORDS, ids=lambda r: r.__name__)
def test_every_record_round_trips(record: type[msgspec.Struct]) -> None:
    @settings(max_examples=60, deadline=None)
    @given(strategy(mi.type_info(record)))
    def check(x: msgspec.Struct) -> None:
        assert decode(encode(x), record) == x  # type: ignore[arg-type]

    check()


def test_records_are_frozen() -> None:
    ev = AdvisorEvent(event_id="e", occurred_at=1.0, advisor_id="a", kind="login")
    with pytest.raises(AttributeError):
        ev.advisor_id = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"channel": "fax"}, "$.channel"),
        ({"occurred_at": 1_764_151_200_000}, "$.occurred_at"),  # milliseconds, not seconds
        ({"priority": 11}, "$.priority"),
        ({"event_id": ""}, "$.event_id"),
        ({"language": "english please"}, "$.language"),
        ({"customer": {"email": "x" * 300}}, "$.customer.email"),
    ],
)
def test_invalid_fields_are_refused_with_their_path(payload: dict[str, Any], fragment: str) -> None:
    good = {"event_id": "e1", "occurred_at": 1.0, "channel": "chat", "kind": "message", "customer": {"email": "a@b.co"}}
    with pytest.raises(InvalidInput) as exc:
        decode(json.dumps({**good, **payload}).encode(), InteractionEvent)
    assert exc.value.error_type == "invalid" and fragment in exc.value.reason


def test_type_tag_is_optional_on_input_and_checked_when_present() -> None:
    raw = {"event_id": "e1", "occurred_at": 1.0, "advisor_id": "a", "kind": "login"}
    assert decode(json.dumps(raw).encode(), AdvisorEvent).advisor_id == "a"
    with pytest.raises(InvalidInput):
        decode(json.dumps({**raw, "type": "cx.InteractionEvent.v1"}).encode(), AdvisorEvent)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    raw = {"event_id": "e1", "occurred_at": 1.0, "advisor_id": "a", "kind": "login", "added_in_v1_1": 3}
    assert decode(json.dumps(raw).encode(), AdvisorEvent).event_id == "e1"


def test_export_writes_a_json_schema_per_wire_record(tmp_path: Path) -> None:
    paths = export_json_schemas(tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{schema_id_of(r)}.schema.json" for r in WIRE_RECORDS)
    doc = json.loads((tmp_path / "cx.InteractionEvent.v1.schema.json").read_text())
    assert doc["$schema"].endswith("2020-12/schema") and doc["title"] == "cx.InteractionEvent.v1"
    assert set(doc["required"]) >= {"event_id", "occurred_at", "channel", "kind", "customer"}
    assert doc["properties"]["channel"]["description"]
    assert "Identifiers" in doc["$defs"]
    assert math.isclose(doc["properties"]["occurred_at"]["maximum"], 32503680000)
