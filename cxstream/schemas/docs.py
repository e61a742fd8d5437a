"""Markdown reference of the wire contract, generated from the records themselves (docs/EVENTS.md)."""

from __future__ import annotations

import inspect

import msgspec.inspect as mi

from cxstream.schemas.common import Record


def _type_name(t: mi.Type) -> str:
    if isinstance(t, mi.Metadata):
        return _type_name(t.type)
    if isinstance(t, mi.StrType):
        return "string"
    if isinstance(t, mi.IntType):
        return "integer"
    if isinstance(t, mi.FloatType):
        return "number"
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.NoneType):
        return "null"
    if isinstance(t, mi.LiteralType):
        return " \\| ".join(f"`{v}`" for v in t.values)
    if isinstance(t, mi.UnionType):
        return " or ".join(_type_name(x) for x in t.types)
    if isinstance(t, mi.ListType):
        return f"list of {_type_name(t.item_type)}"
    if isinstance(t, mi.DictType):
        return f"map {_type_name(t.key_type)} → {_type_name(t.value_type)}"
    if isinstance(t, mi.StructType):
        return f"`{t.cls.__name__}`"
    return type(t).__name__


def _constraints(t: mi.Type) -> str:
    if isinstance(t, mi.Metadata):
        return _constraints(t.type)
    if isinstance(t, mi.UnionType):
        return "; ".join(c for c in (_constraints(x) for x in t.types) if c)
    parts = []
    for attr, label in (("min_length", "min length"), ("max_length", "max length"), ("ge", "≥"), ("le", "≤"), ("pattern", "pattern")):
        v = getattr(t, attr, None)
        if v is not None:
            parts.append(f"{label} {v}" if attr != "pattern" else f"pattern `{v}`")
    return ", ".join(parts)


def _description(t: mi.Type) -> str:
    if isinstance(t, mi.Metadata):
        return str((t.extra_json_schema or {}).get("description", "")) or _description(t.type)
    if isinstance(t, mi.UnionType):
        return next((d for d in (_description(x) for x in t.types) if d), "")
    return ""


def record_markdown(record: type[Record]) -> str:
    """One record as a markdown section: its docstring and a field table."""
    info = mi.type_info(record)
    assert isinstance(info, mi.StructType)
    tag = record.__struct_config__.tag
    lines = [f"## {record.__name__}" + (f" (`{tag}`)" if tag else ""), "", inspect.cleandoc(record.__doc__ or ""), ""]
    lines += ["| field | type | required | constraints | meaning |", "|---|---|---|---|---|"]
    for f in info.fields:
        required = "yes" if f.required else f"no (default `{f.default!r}`)" if f.default is not mi.NODEFAULT else "no"
        desc = _description(f.type).replace("|", "\\|")
        lines.append(f"| `{f.name}` | {_type_name(f.type)} | {required} | {_constraints(f.type)} | {desc} |")
    return "\n".join(lines) + "\n"


def contract_markdown(records: tuple[type[Record], ...], nested: tuple[type[Record], ...]) -> str:
    """The whole reference page."""
    head = (
        "# The event contract (v1)\n\n"
        "Generated from `cxstream/schemas/` by `cxstream schemas docs docs/EVENTS.md`; a unit test keeps it current.\n"
        "JSON Schema files for other languages: `cxstream schemas export DIR`.\n"
        "On the wire a record may carry `\"type\": \"<its tag>\"`; on single-type input topics it is optional.\n"
        "Unknown fields are ignored (forward compatibility); times are seconds since the Unix epoch (UTC).\n\n"
    )
    return head + BAD_INPUT + "\n" + "\n".join(record_markdown(r) for r in (*records, *nested))


BAD_INPUT = """\
## Bad input: the dead-letter policy

The ingest stage validates every record of `cx.interactions.v1`, `cx.outcomes.v1` and
`cx.advisor-events.v1`.  One it cannot use goes to `cx.dead-letter.v1` (key: the source topic) as
a `DeadLetter`: its coordinates (source topic, partition, offset), the stage, an `error_type` and a
human `reason` (redacted; for schema errors it names the field path, e.g. `$.customer.email`), and
the payload (its first `CX_DEAD_LETTER_MAX_RAW_BYTES`, 64 KiB, with `raw_truncated` and
`raw_bytes` when longer: the whole payload stays at its coordinates).  The stream goes on; nothing
is dropped silently.  Each one is counted in `cx_dead_letters_total{topic,error_type,stage}`; the
log shows the first 20 in each 10 s and a count of the others (a flood of bad input is not a flood
of log lines).  The checks, in order:

| error_type | the input |
|---|---|
| `empty` | has no value (a tombstone) |
| `too_large` | is larger than `CX_MAX_EVENT_BYTES` (64 KiB), whatever else is wrong with it |
| `not_utf8` | has a string that is not UTF-8 (JSON on the wire is UTF-8: Latin-1, cp1252, Shift JIS... are refused) |
| `not_json` | is not one JSON value: truncated, trailing bytes, raw control characters or null bytes, `NaN`/`Infinity` tokens, UTF-16/32, a byte-order mark, nested deeper than the decoder goes |
| `invalid` | breaks the schema: a wrong type, a missing field, a value out of range (a negative time, milliseconds, after the year 3000, `1e999`), too long, not matching its pattern, an unknown `type` tag, more than 64 attributes |
| `future_dated` | has an `occurred_at` more than `CX_MAX_FUTURE_SKEW_S` (3600 s) after the engine's clock |
| `no_identifier` | is an outcome without any customer identifier |
| `bad_identifier` | carries identifiers, but only placeholders or malformed ones |
| `processing_error` | made a stage fail: an engine defect, logged with its traceback (the fuzz tests assert there is none) |

**Event time.**  Late and out-of-order events are valid and processed (in arrival order: a
context's `recent` list is newest-arrived first, `updated_at` and milestones keep the latest
time; the router's clock is the latest event time it has seen and never goes back).  Events dated
in the future are refused beyond the tolerance: event time drives the router's clock, so one event
dated next year would fire every SLA and offer timer of its routing group at once.  Clocks that
disagree by less than the tolerance are normal; `CX_MAX_FUTURE_SKEW_S=-1` turns the check off
(e.g. to replay a recording with its own future times).

Keys of input records are not checked: the engine routes by the payload (customer identifiers,
routing group), whatever the key says.  Unknown fields are ignored, duplicate JSON keys take
the last value.  Duplicates of an `event_id` are valid input and dropped (counted) downstream.
"""


def reference_markdown() -> str:
    """The reference page for every wire record and the records nested in them."""
    from cxstream.schemas import WIRE_RECORDS, Disposition, Identifiers

    return contract_markdown(WIRE_RECORDS, (Identifiers, Disposition))
