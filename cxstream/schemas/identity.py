"""Identity resolution and privacy records.

Outputs (for CRM sync, data-protection officers and operators):

| record          | topic            | key                   |
|-----------------|------------------|-----------------------|
| IdentityLinked  | cx.identity.v1   | canonical customer id |
| CustomersMerged | cx.identity.v1   | surviving customer id |
| LinkRefused     | cx.identity.v1   | canonical customer id (or the event id) |
| IdentityErased  | cx.identity.v1   | erased customer id    |
| AuditRecord     | cx.audit.v1      | request id            |

These records never carry an identifier value in clear: an identifier appears as
its *fingerprint* (``kind:`` + the first 32 hex digits of SHA-256 of ``kind:value``
in normal form), so the identity and audit logs hold nothing readable of an erased
customer.  Compute a fingerprint with ``cxstream.context.resolver.fingerprint``.

Internal records (engine to engine, not exported as JSON Schema):

| record          | topic                  | key |
|-----------------|------------------------|-----|
| ResolveRequest  | cx.resolve.v1          | event id (one partition: one total order) |
| MergeContext    | cx.customer-events.v1  | the absorbed customer id |
| ContextHandoff  | cx.customer-events.v1  | the surviving customer id |
| EraseContext    | cx.customer-events.v1  | the customer id to erase |
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from cxstream.schemas.common import EventTime, Record
from cxstream.schemas.events import InteractionEvent, OutcomeEvent

IdentifierKind = Literal["customer_id", "account_number", "email", "phone", "social_handle", "device_id"]
Fingerprint = Annotated[
    str,
    msgspec.Meta(
        max_length=64,
        description="'kind:' + first 32 hex digits of SHA-256('kind:value') of the normalised value; never the value itself.",
    ),
]
RefusalReason = Literal[
    "blocked_value",  # a placeholder such as '0', 'null', 'anonymous', '0000000'
    "malformed",  # not an email address / not a possible phone number
    "too_many_values",  # the customer already holds the maximum number of values of this kind
    "conflicting_ids",  # merging would give one customer two values of a kind that allows one (CRM ids)
    "weak_identifier",  # a device id never merges two identified customers
    "shared_value",  # the value was presented by more customers than allowed: quarantined
]


class IdentityLinked(Record, frozen=True, tag="cx.IdentityLinked.v1", tag_field="type"):
    """An identifier value now resolves to a customer (``created``: a new customer started with it)."""

    event_id: Annotated[str, msgspec.Meta(description="The input event that carried the identifier.")]
    customer_id: Annotated[str, msgspec.Meta(description="Canonical customer id the value resolves to.")]
    kind: IdentifierKind
    fingerprint: Fingerprint
    at: EventTime
    created: Annotated[bool, msgspec.Meta(description="True when this value started a new customer.")] = False


class CustomersMerged(Record, frozen=True, tag="cx.CustomersMerged.v1", tag_field="type"):
    """Two known customers were found to be one: the absorbed one's history now belongs to the survivor."""

    merge_id: Annotated[str, msgspec.Meta(description="Deterministic id of this merge.")]
    survivor_id: Annotated[str, msgspec.Meta(description="The customer that remains (the first seen of the two).")]
    absorbed_id: Annotated[str, msgspec.Meta(description="The customer that was merged in; its id stays an alias.")]
    kind: Annotated[IdentifierKind, msgspec.Meta(description="Kind of the identifier that linked them.")]
    fingerprint: Fingerprint
    event_id: Annotated[str, msgspec.Meta(description="The input event that carried both customers' identifiers.")]
    at: EventTime


class LinkRefused(Record, frozen=True, tag="cx.LinkRefused.v1", tag_field="type"):
    """An identifier was not linked (or two customers not merged), and why: the guard against wrong merges."""

    event_id: str
    kind: IdentifierKind
    fingerprint: Fingerprint
    reason: RefusalReason
    at: EventTime
    detail: Annotated[str, msgspec.Meta(max_length=500, description="Human-readable explanation (no identifier values).")] = ""
    customer_id: Annotated[str | None, msgspec.Meta(description="The customer the event was attributed to, if any.")] = None
    other_customer_id: Annotated[str | None, msgspec.Meta(description="The customer the value already belongs to, if any.")] = None


class IdentityErased(Record, frozen=True, tag="cx.IdentityErased.v1", tag_field="type"):
    """A customer's identity links were deleted on an erasure request."""

    request_id: str
    customer_id: str
    at: EventTime
    absorbed_ids: list[str] = []
    identifiers_removed: int = 0


AuditAction = Literal["erasure_requested", "erasure_completed", "erased_record_suppressed"]


class AuditRecord(Record, frozen=True, tag="cx.AuditRecord.v1", tag_field="type"):
    """A privacy-relevant action, for the data-protection audit trail (no personal data)."""

    audit_id: Annotated[str, msgspec.Meta(description="Deterministic id of this record.")]
    action: AuditAction
    request_id: Annotated[str, msgspec.Meta(description="The erasure request (its event id), or the suppressed record's id.")]
    at: Annotated[EventTime, msgspec.Meta(description="Event time of the request (not the processing time).")]
    processed_at: Annotated[float, msgspec.Meta(description="Wall time at which the engine did it, seconds since the epoch.")] = 0.0
    agent: str = ""
    subjects: Annotated[
        list[str], msgspec.Meta(description="Fingerprints of the customer ids and identifiers concerned (never values).")
    ] = []
    parts: Annotated[int, msgspec.Meta(ge=0, description="erasure_requested: how many customer contexts are erased.")] = 0
    part: Annotated[int, msgspec.Meta(ge=0, description="erasure_completed: which of those this record confirms (1-based).")] = 0
    detail: str = ""


class RefusedIdentifier(msgspec.Struct, frozen=True, kw_only=True):
    """An identifier that ingest refused before resolution (placeholder or malformed)."""

    kind: IdentifierKind
    fingerprint: str
    reason: RefusalReason
    detail: str = ""


class ResolveRequest(Record, frozen=True, tag="cx.ResolveRequest.v1", tag_field="type"):
    """A validated customer event with normalised identifiers (and text already redacted), awaiting resolution."""

    event: InteractionEvent | OutcomeEvent
    refused: list[RefusedIdentifier] = []
    source: Annotated[str, msgspec.Meta(description="'api' for requests made through the HTTP API.")] = ""


class MergeContext(Record, frozen=True, tag="cx.MergeContext.v1", tag_field="type"):
    """To the absorbed customer's partition: hand your context over to the survivor and leave an alias."""

    merge_id: str
    survivor_id: str
    absorbed_id: str
    at: EventTime


class ContextHandoff(Record, frozen=True, tag="cx.ContextHandoff.v1", tag_field="type"):
    """To the survivor's partition: fold this absorbed context (JSON of ``CustomerContext``, or ``null``) into yours."""

    merge_id: str
    survivor_id: str
    absorbed_id: str
    at: EventTime
    context: msgspec.Raw = msgspec.Raw(b"null")


class EraseContext(Record, frozen=True, tag="cx.EraseContext.v1", tag_field="type"):
    """To a customer's partition: delete its context and Redis copy, and refuse it from now on."""

    request_id: str
    customer_id: str
    at: EventTime
    part: int = 1
    parts: int = 1
    requested_at: Annotated[float, msgspec.Meta(description="Wall time the identity stage handled the request.")] = 0.0


IdentityOutput = IdentityLinked | CustomersMerged | LinkRefused | IdentityErased
