"""Per-customer outreach state: trigger arming, pending recommendations, sends, open outreach.

One :class:`OutreachState` per customer, kept by the outreach agent in its own table
(key = customer id).  Every list is bounded by the config (``max_pending``,
``max_open``, ``max_marks``, ``cap_max``), so the state's size is flat however long
the customer lives; it encodes to compact JSON with :func:`encode_state`.
"""

from __future__ import annotations

import msgspec


class Pending(msgspec.Struct, frozen=True, kw_only=True):
    """A trigger that fired and whose outreach has not been sent yet (held by a guardrail)."""

    outreach_id: str
    trigger: str
    key: str
    fired_at: float
    expires_at: float
    priority: int
    facts: dict[str, str | int | float | bool | None] = {}
    #: The transient guardrail currently holding it back (None: not blocked yet).
    blocked_by: str | None = None


class Mark(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A trigger fired with this key at this time: no re-fire within the trigger's cooldown."""

    trigger: str
    key: str
    at: float


class OpenOutreach(msgspec.Struct, frozen=True, kw_only=True):
    """An outreach sent (or held out as control) whose outcome is awaited."""

    outreach_id: str
    trigger: str
    sent_at: float
    attribute_until: float
    control: bool = False
    responded: bool = False
    success: bool = False  # a positive outcome (response, conversion, retention) was attributed


class OutreachState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the outreach core remembers about one customer.

    >>> s = OutreachState(customer_id="c1")
    >>> decode_state(encode_state(s)) == s
    True
    """

    customer_id: str
    #: churn_risk trigger: armed (may fire) and how many times it has been (re-)armed.
    churn_armed: bool = True
    churn_epoch: int = 0
    #: negative_sentiment trigger: same, re-armed by a non-negative message.
    sentiment_armed: bool = True
    sentiment_epoch: int = 0
    pending: list[Pending] = []
    marks: list[Mark] = []
    #: Event times of outreach sent, newest last (for the frequency cap).
    sent: list[float] = []
    open: list[OpenOutreach] = []
    #: Totals, for observability.
    sent_total: int = 0
    suppressed_total: int = 0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(OutreachState)


def encode_state(state: OutreachState) -> bytes:
    """The state as JSON bytes (table value)."""
    return _encoder.encode(state)


def decode_state(raw: bytes) -> OutreachState:
    """Inverse of :func:`encode_state`."""
    return _decoder.decode(raw)


def new_state(customer_id: str) -> OutreachState:
    """A fresh state: every trigger armed, nothing pending or sent."""
    return OutreachState(customer_id=customer_id)
