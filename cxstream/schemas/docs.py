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
    return head + "\n".join(record_markdown(r) for r in (*records, *nested))


def reference_markdown() -> str:
    """The reference page for every wire record and the records nested in them."""
    from cxstream.schemas import WIRE_RECORDS, Disposition, Identifiers

    return contract_markdown(WIRE_RECORDS, (Identifiers, Disposition))
