"""The per-customer context record, as kept in the ``customer_context`` table and copied to Redis.

It is the engine's own state, not a wire contract: fields may be added freely
(with defaults, so stored contexts keep decoding).  Its JSON form is what
``GET /customers/{id}/context`` returns.
"""

from __future__ import annotations

import msgspec


class InteractionSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One interaction as the context remembers it (newest first in ``CustomerContext.recent``)."""

    event_id: str
    at: float
    channel: str
    kind: str
    contact_id: str | None = None
    text: str | None = None  # redacted before it is stored
    direction: str = "inbound"


class OpenContact(msgspec.Struct, frozen=True, kw_only=True):
    """A contact that is open on some channel: waiting for an advisor, or with one."""

    contact_id: str
    channel: str
    opened_at: float
    routing_group: str = "default"
    state: str = "open"  # open | queued | assigned
    advisor_id: str | None = None
    needs_advisor: bool = False


class CustomerContext(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the engine keeps about one canonical customer."""

    customer_id: str
    created_at: float
    updated_at: float
    identifiers: dict[str, list[str]] = {}
    recent: list[InteractionSummary] = []
    open_contacts: dict[str, OpenContact] = {}  # by contact id
    last_advisor_id: str | None = None
    last_advisor_at: float | None = None
    last_channel: str | None = None
    language: str | None = None
    interactions_total: int = 0
    contacts_total: int = 0
    recent_event_ids: list[str] = []  # newest last; bounded; drops duplicates

    def open_by_channel(self) -> dict[str, list[str]]:
        """Open contact ids grouped by channel.

        >>> c = CustomerContext(customer_id="c1", created_at=0, updated_at=0,
        ...     open_contacts={"k1": OpenContact(contact_id="k1", channel="chat", opened_at=0)})
        >>> c.open_by_channel()
        {'chat': ['k1']}
        """
        out: dict[str, list[str]] = {}
        for c in self.open_contacts.values():
            out.setdefault(c.channel, []).append(c.contact_id)
        return out


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CustomerContext)


def encode_context(ctx: CustomerContext) -> bytes:
    """The context as JSON bytes (table value and Redis copy)."""
    return _encoder.encode(ctx)


def decode_context(raw: bytes) -> CustomerContext:
    """Inverse of :func:`encode_context`."""
    return _decoder.decode(raw)
