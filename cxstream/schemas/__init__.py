"""The wire contract v1: typed, versioned records, exportable as JSON Schema.

Channel systems in any language validate against the files written by
``cxstream schemas export DIR`` (see :func:`export_json_schemas`).
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from cxstream.schemas.common import CHANNELS, SCHEMA_VERSION, Channel, Identifiers, Record
from cxstream.schemas.events import AdvisorEvent, Disposition, InteractionEvent, OutcomeEvent
from cxstream.schemas.identity import (
    AuditRecord,
    ContextHandoff,
    CustomersMerged,
    EraseContext,
    IdentityErased,
    IdentityLinked,
    IdentityOutput,
    LinkRefused,
    MergeContext,
    RefusedIdentifier,
    ResolveRequest,
)
from cxstream.schemas.outputs import Assignment, DeadLetter, NextBestAction, OutreachEvent, RankedAction, RoutingEvent
from cxstream.schemas.routing import ContactRequest, ContactUpdate, RouterInput, RouterTick

__all__ = [
    "CHANNELS",
    "SCHEMA_VERSION",
    "WIRE_RECORDS",
    "AdvisorEvent",
    "Assignment",
    "AuditRecord",
    "Channel",
    "ContactRequest",
    "ContactUpdate",
    "ContextHandoff",
    "CustomersMerged",
    "DeadLetter",
    "Disposition",
    "EraseContext",
    "Identifiers",
    "IdentityErased",
    "IdentityLinked",
    "IdentityOutput",
    "InteractionEvent",
    "LinkRefused",
    "MergeContext",
    "NextBestAction",
    "OutcomeEvent",
    "OutreachEvent",
    "RankedAction",
    "Record",
    "RefusedIdentifier",
    "ResolveRequest",
    "RouterInput",
    "RouterTick",
    "RoutingEvent",
    "export_json_schemas",
]

#: The records that cross the engine's boundary, exported for other languages.
WIRE_RECORDS: tuple[type[Record], ...] = (
    InteractionEvent,
    AdvisorEvent,
    OutcomeEvent,
    Assignment,
    RoutingEvent,
    OutreachEvent,
    NextBestAction,
    DeadLetter,
    IdentityLinked,
    CustomersMerged,
    LinkRefused,
    IdentityErased,
    AuditRecord,
)


def schema_id(record: type[Record]) -> str:
    """The versioned id of a record type, also its ``type`` tag on the wire.

    >>> schema_id(InteractionEvent)
    'cx.InteractionEvent.v1'
    """
    tag = record.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def export_json_schemas(directory: str | Path) -> list[Path]:
    """Write one JSON Schema (draft 2020-12) file per wire record into *directory*.

    Returns the paths written, e.g. ``cx.InteractionEvent.v1.schema.json``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for record in WIRE_RECORDS:
        name = schema_id(record)
        (_, components) = msgspec.json.schema_components([record], ref_template="#/$defs/{name}")
        doc = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{name}.schema.json",
            **components[record.__name__],
            "title": name,
            "$defs": {k: v for k, v in components.items() if k != record.__name__},
        }
        if not doc["$defs"]:
            del doc["$defs"]
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
