"""Hypothesis strategies for fuzzing the engine's input path: valid events derived from the wire schemas, then corrupted.

:func:`from_msgspec` builds a strategy of valid JSON values for any ``msgspec`` type from what
``msgspec.inspect`` says about it (lengths, ranges, patterns, literals), so the valid events
follow the schemas in ``cxstream/schemas`` as they change.  :func:`cases` draws one input
record (:class:`Case`) for one of the three input topics: a valid event (in any key order,
with unknown fields, escaped, with any key, out of order, a little in the future) or one of
the corruptions in :data:`CORRUPTIONS`, each with the dead-letter ``error_type`` s it may
get.  The unit fuzz (tests/unit/test_fuzz_ingest.py) runs them through the decode and
validate functions; the integration fuzz (tests/integration/test_fuzz_engine.py) through a
running engine on the embedded Kafka.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import strategies as st

from cxstream.schemas import AdvisorEvent, InteractionEvent, OutcomeEvent

INPUTS = ("interactions", "outcomes", "advisor_events")
RECORD_OF = {"interactions": InteractionEvent, "outcomes": OutcomeEvent, "advisor_events": AdvisorEvent}
#: Outcome kinds a valid fuzz event may have: an erasure request would delete the context it is checked against.
OUTCOME_KINDS = ("churned", "retained", "csat", "nps", "payment_failed", "complaint", "converted", "outreach_response", "profile", "consent")


@dataclass(frozen=True)
class Case:
    """One input record and what the engine must do with it."""

    topic: str  #: one of :data:`INPUTS`
    key: bytes | None
    value: bytes | None
    #: the dead-letter error types it may get; empty: it is valid and must be processed
    expect: frozenset[str]
    label: str  #: the corruption applied, or ``valid:...``
    customer: str | None = None  #: valid customer events: the customer id whose context must hold it
    event_id: str | None = None  #: valid events: its event id

    @property
    def valid(self) -> bool:
        return not self.expect


# -- valid JSON values of a msgspec type --------------------------------------------------------

_SHORT = 12  # longest string/collection drawn for an unbounded field: the corruptions make the big ones


@functools.cache
def from_msgspec(t: Any) -> st.SearchStrategy[Any]:
    """A strategy of JSON values (dicts, lists, str, numbers...) that decode as the msgspec type *t*."""
    return _of(msgspec.inspect.type_info(t))


def _of(ti: Any) -> st.SearchStrategy[Any]:
    mi = msgspec.inspect
    if isinstance(ti, mi.Metadata):
        return _of(ti.type)
    if isinstance(ti, mi.NoneType):
        return st.none()
    if isinstance(ti, mi.BoolType):
        return st.booleans()
    if isinstance(ti, mi.LiteralType):
        return st.sampled_from(ti.values)
    if isinstance(ti, mi.StrType):
        if ti.pattern:
            s = st.from_regex(ti.pattern, fullmatch=True)
            return s.filter(lambda v: ti.max_length is None or len(v) <= ti.max_length)
        return st.text(min_size=ti.min_length or 0, max_size=min(ti.max_length or _SHORT, _SHORT))
    if isinstance(ti, mi.IntType):
        lo = ti.ge if ti.ge is not None else (ti.gt + 1 if ti.gt is not None else -(2**53))
        hi = ti.le if ti.le is not None else (ti.lt - 1 if ti.lt is not None else 2**53)
        return st.integers(lo, hi)
    if isinstance(ti, mi.FloatType):
        return st.floats(ti.ge, ti.le, allow_nan=False, allow_infinity=False)
    if isinstance(ti, mi.ListType):
        return st.lists(_of(ti.item_type), min_size=ti.min_length or 0, max_size=min(ti.max_length or 2, 2))
    if isinstance(ti, mi.DictType):
        return st.dictionaries(_of(ti.key_type), _of(ti.value_type), max_size=min(ti.max_length or 2, 2))
    if isinstance(ti, mi.UnionType):
        return st.one_of(*[_of(x) for x in ti.types])
    if isinstance(ti, mi.StructType):
        required = {f.encode_name: _of(f.type) for f in ti.fields if f.required}
        optional = {f.encode_name: _of(f.type) for f in ti.fields if not f.required}
        return st.fixed_dictionaries(required, optional=optional)
    raise NotImplementedError(f"no strategy for {ti!r}")


# -- valid events ---------------------------------------------------------------------------------


@st.composite
def valid_event(draw: st.DrawFn, topic: str, customer: str, event_id: str, now: float, skew_s: float) -> dict[str, Any]:
    """A valid event of *topic* as a JSON object, for *customer*, dated anywhere in the past year (out of order) or a
    little in the future (within *skew_s*)."""
    ev: dict[str, Any] = draw(from_msgspec(RECORD_OF[topic]))
    ev["event_id"] = event_id
    ev["occurred_at"] = draw(st.one_of(
        st.floats(now - 365 * 86400, now, allow_nan=False),
        st.floats(now, now + 0.5 * skew_s, allow_nan=False),
        st.integers(int(now) - 86400, int(now)),
    ))
    if topic == "advisor_events":
        ev["advisor_id"] = customer
        return ev
    ev["customer"] = {"customer_id": customer}
    if topic == "interactions":
        ev["needs_advisor"] = False  # no routing: the fuzz checks contexts, not queues
    else:
        ev["kind"] = draw(st.sampled_from(OUTCOME_KINDS))
    return ev


_JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=_SHORT))
JSON_VALUE = st.recursive(_JSON_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                          max_leaves=8)


@st.composite
def valid_case(draw: st.DrawFn, topic: str, customer: str, event_id: str, now: float, skew_s: float) -> Case:
    """A valid event, encoded in one of the ways the contract allows, with any key."""
    ev = draw(valid_event(topic, customer, event_id, now, skew_s))
    how = draw(st.sampled_from(["plain", "tagged", "unknown_fields", "shuffled", "ascii_escaped", "pretty"]))
    if how == "tagged":
        ev = {"type": RECORD_OF[topic].__struct_config__.tag, **ev}
    elif how == "unknown_fields":
        known = {f.encode_name for f in msgspec.inspect.type_info(RECORD_OF[topic]).fields} | {"type"}
        extra = draw(st.dictionaries(st.text(min_size=1, max_size=12).filter(lambda k: k not in known), JSON_VALUE, min_size=1, max_size=4))
        ev = {**ev, **extra}
    elif how == "shuffled":
        ev = dict(draw(st.permutations(list(ev.items()))))
    raw = json.dumps(ev, ensure_ascii=how == "ascii_escaped", indent=2 if how == "pretty" else None).encode()
    key = draw(st.one_of(st.none(), st.just(customer.encode()), st.binary(max_size=16), st.just(event_id.encode())))
    return Case(topic, key, raw, frozenset(), f"valid:{how}", customer if topic != "advisor_events" else None, event_id)


# -- corruptions ----------------------------------------------------------------------------------

#: Values of the wrong JSON type for a field, by what the field expects.
WRONG = {
    "str": [123, 1.5, True, None, [], {}, ["x"]],
    "num": ["1700000000", None, True, [], {}, "now"],
    "obj": ["c1", 5, [], True],
    "enum": [5, None, "fax", "", "MESSAGE", []],
}
REQUIRED_KIND = {"event_id": "str", "occurred_at": "num", "channel": "enum", "kind": "enum", "customer": "obj", "advisor_id": "str"}
#: Optional fields and values of them that break the contract (type, length, range, pattern).
BAD_OPTIONAL = {
    "interactions": {
        "priority": ["high", 1.5, -1, 11, None], "text": [5, {}, "x" * 8001], "required_skills": ["vip", [1], [""], ["s"] * 17],
        "attributes": [[], {"k": [1]}, {"k": None}, {"k": {}}, {f"k{i}": i for i in range(65)}], "language": ["english!", "e", 7],
        "routing_group": ["a b", "", "x" * 65, "g/1"], "direction": ["sideways", 0], "contact_id": ["c" * 129, 5], "needs_advisor": ["yes", 1],
        "customer": [{"email": 5}, {"phone": ["+44"]}, {"customer_id": "c" * 129}],
    },
    "outcomes": {
        "value": ["4", True, [], {}], "attributes": [[], {"k": [1]}, {f"k{i}": i for i in range(65)}], "outreach_id": [5, "o" * 129],
        "customer": [{"email": 5}, "c1"],
    },
    "advisor_events": {
        "presence": ["sleeping", 1], "skills": [{"billing": 0}, {"billing": 6}, {"billing": "5"}, []], "capacity": [{"fax": 1}, {"voice": 51}, {"voice": -1}],
        "languages": ["en", ["english!"], ["en"] * 17], "routing_group": ["a b", ""], "disposition": ["resolved", {"resolved": "yes"}],
    },
}


def _json(ev: Any) -> bytes:
    return json.dumps(ev, separators=(",", ":")).encode()


def _put_bytes(raw: bytes, field: str, junk: bytes) -> bytes:
    """*raw* with *junk* spliced into the string value of *field* (right after its opening quote)."""
    marker = f'"{field}":"'.encode()
    at = raw.find(marker)
    assert at >= 0, (field, raw[:200])
    at += len(marker)
    return raw[:at] + junk + raw[at:]


@st.composite
def corrupted_case(
    draw: st.DrawFn, topic: str, customer: str, event_id: str, now: float, skew_s: float, max_bytes: int, how: str | None = None
) -> Case:
    """A valid event of *topic* broken by one corruption (*how*, else drawn); ``expect`` says which dead-letter types it may get."""
    ev = draw(valid_event(topic, customer, event_id, now, skew_s))
    raw = _json(ev)
    how = how or draw(st.sampled_from(CORRUPTIONS))
    expect = {"invalid"}
    value: bytes | None
    if how == "null_payload":
        value, expect = None, {"empty"}
    elif how == "truncated":
        value, expect = raw[: draw(st.integers(0, len(raw) - 1))], {"not_json"}
    elif how == "invalid_utf8":
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\xe2\x82", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"]))
        value, expect = _put_bytes(raw, "event_id", junk), {"not_utf8"}
    elif how == "other_encoding":
        enc, accent = draw(st.sampled_from(ENCODINGS))
        ev["event_id"] = event_id + accent
        value = json.dumps(ev, ensure_ascii=False).encode(enc, errors="replace")
        expect = {"not_json", "not_utf8"}
    elif how == "binary":
        value, expect = draw(st.binary(max_size=64)), {"not_json", "not_utf8", "invalid"}
    elif how == "not_an_object":
        value = _json(draw(st.one_of(_JSON_SCALAR, st.just([ev]), st.just(json.dumps(ev)))))
    elif how == "trailing_garbage":
        value, expect = raw + draw(st.sampled_from([b"}", b" x", b",", b"{}", b"\x00", b"]"])), {"not_json"}
    elif how == "raw_control_char":
        value, expect = _put_bytes(raw, "event_id", draw(st.sampled_from([b"\x00", b"\x01", b"\n", b"\x1f"]))), {"not_json"}
    elif how == "nul_around":
        value, expect = draw(st.sampled_from([b"\x00" + raw, raw.replace(b"{", b"{\x00", 1), b"\x00" * 8])), {"not_json"}
    elif how == "missing_field":
        required = [k for k in REQUIRED_KIND if k in ev]
        del ev[draw(st.sampled_from(required))]
        value = _json(ev)
    elif how == "wrong_type":
        field = draw(st.sampled_from([k for k in REQUIRED_KIND if k in ev]))
        ev[field] = draw(st.sampled_from(WRONG[REQUIRED_KIND[field]]))
        value = _json(ev)
    elif how == "bad_optional":
        field = draw(st.sampled_from(sorted(BAD_OPTIONAL[topic])))
        ev[field] = draw(st.sampled_from(BAD_OPTIONAL[topic][field]))
        value = _json(ev)
    elif how == "number_token":
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf", b"1e999", b"-1e999", b"9" * 400, b"0x10", b"01"]))
        value = raw.replace(_json(ev["occurred_at"]), token, 1) if b'"occurred_at":' in raw else raw
        expect = {"invalid"} if token in (b"1e999", b"-1e999", b"9" * 400) else {"not_json"}
    elif how == "bad_time":
        ev["occurred_at"] = draw(st.one_of(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False), st.just(-1),
                                           st.just(now * 1000), st.just(now * 1e6), st.floats(32503680000.5, 1e300)))
        value = _json(ev)
    elif how == "future_dated":
        ev["occurred_at"] = draw(st.one_of(st.floats(now + 2 * skew_s, now + 20 * 365 * 86400), st.just(32503680000)))
        value, expect = _json(ev), {"future_dated"}
    elif how == "unknown_type":
        others = [r.__struct_config__.tag for t, r in RECORD_OF.items() if t != topic]
        ev = {"type": draw(st.one_of(st.sampled_from([*others, "cx.Foo.v9", "", "InteractionEvent"]), st.text(max_size=12))), **ev}
        if ev["type"] == RECORD_OF[topic].__struct_config__.tag:
            ev["type"] = "cx.Foo.v9"
        value = _json(ev)
    elif how == "too_long_field":
        field = "event_id" if topic != "advisor_events" or draw(st.booleans()) else "advisor_id"
        ev[field] = draw(st.sampled_from(["", "x" * 129, "é" * 200]))
        value = _json(ev)
    elif how == "oversized":
        pad = max_bytes - len(raw) + draw(st.integers(1, 2048))
        filler = draw(st.sampled_from(["text", "huge_array", "unknown_field", "attributes"]))
        if filler == "text":
            ev["text" if topic == "interactions" else "notes"] = draw(st.sampled_from(["x", "é", "\u0000", "😀"])) * pad
        elif filler == "huge_array":
            ev["required_skills" if topic != "outcomes" else "tags"] = ["s"] * (pad // 4 + 1)
        elif filler == "attributes":
            ev["attributes"] = {f"k{i:06d}": i for i in range(pad // 10 + 1)}
        else:
            ev["blob"] = {"a": [1] * (pad // 2 + 1)}  # an unknown field: ignored, but counted in the size
        value, expect = _json(ev), {"too_large"}
    elif how == "deep_nesting":
        depth = draw(st.sampled_from([2_000, 5_000, 20_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        value = raw[:-1] + b',"nested":' + opener * depth + b"1" + closer * depth + b"}"
        expect = {"not_json"} if len(value) <= max_bytes else {"too_large"}
    elif how == "duplicate_keys_bad":
        field = draw(st.sampled_from([k for k in ("event_id", "occurred_at") if k in ev]))
        value = raw[:-1] + b',"' + field.encode() + b'":' + _json(draw(st.sampled_from(WRONG[REQUIRED_KIND[field]]))) + b"}"
    elif how == "no_identifier" and topic == "outcomes":  # an interaction without identifiers is anonymous: valid
        ev["customer"] = draw(st.sampled_from([{}, {"email": None}, {"customer_id": ""}]))
        value, expect = _json(ev), {"no_identifier"}
    elif how == "junk_identifier" and topic != "advisor_events":
        ev["customer"] = draw(st.sampled_from([{"phone": "0"}, {"email": "not-an-email"}, {"phone": "abc", "email": "none"}, {"customer_id": "null"}]))
        value, expect = _json(ev), {"bad_identifier"}
    else:  # an identifier corruption drawn for a topic it does not apply to: a missing id instead
        del ev["event_id"]
        value = _json(ev)
    if value is not None and len(value) > max_bytes:
        expect = {"too_large"}  # the size is checked first, whatever else is wrong
    key = draw(st.one_of(st.none(), st.binary(max_size=16), st.just(event_id.encode())))
    if value is None and key is None:
        key = event_id.encode()  # a Kafka record has a key or a value
    return Case(topic, key, value, frozenset(expect), how)


#: (encoding, a character that makes the event's bytes differ from its UTF-8)
ENCODINGS = [("latin-1", "é"), ("latin-1", "ß"), ("cp1252", "€"), ("utf-16", ""), ("utf-16-le", "ø"), ("utf-32", ""),
             ("shift_jis", "日本"), ("utf-8-sig", "")]

CORRUPTIONS = (
    "null_payload", "truncated", "invalid_utf8", "other_encoding", "binary", "not_an_object", "trailing_garbage",
    "raw_control_char", "nul_around", "missing_field", "wrong_type", "bad_optional", "number_token", "bad_time",
    "future_dated", "unknown_type", "too_long_field", "oversized", "deep_nesting", "duplicate_keys_bad", "no_identifier",
    "junk_identifier",
)


def case(topic: str, customer: str, event_id: str, *, now: float, skew_s: float, max_bytes: int, valid_percent: int = 20) -> st.SearchStrategy[Case]:
    """One input of *topic*: valid about *valid_percent* % of the time, else corrupted."""
    return st.integers(0, 99).flatmap(
        lambda r: valid_case(topic, customer, event_id, now, skew_s) if r < valid_percent
        else corrupted_case(topic, customer, event_id, now, skew_s, max_bytes)
    )
