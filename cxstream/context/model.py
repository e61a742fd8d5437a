"""The per-customer context record, as kept in the ``customer_context`` table and copied to Redis.

It is the engine's own state, not a wire contract: fields may be added freely
(with defaults, so stored contexts keep decoding).  Its JSON form is what
``GET /customers/{id}/context`` returns; the table and Redis hold that JSON zstd-compressed
(:func:`encode_context`, :func:`context_json`).
"""

from __future__ import annotations

import msgspec

from cxstream.schemas.outputs import NextBestAction
from cxstream.streams.codecs import ZSTD_MAGIC as ZSTD_MAGIC  # the first bytes of a stored context
from cxstream.streams.codecs import compress_context, decompressed


class InteractionSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One interaction as the context remembers it (newest first in ``CustomerContext.recent``)."""

    event_id: str
    at: float
    channel: str
    kind: str
    contact_id: str | None = None
    text: str | None = None  # redacted before it is stored
    direction: str = "inbound"
    sentiment: float | None = None  # VADER compound score of an inbound message, -1..1 (None: not scored)
    #: the language of the message: as detected from its text when the detector was confident and
    #: disagreed with the channel, else as the channel reported it
    language: str | None = None
    language_detected: str | None = None  # the detector's answer (an ISO 639-1 code or "unknown"); None: not run
    language_confidence: float | None = None  # lingua's confidence in it, 0..1
    #: an inbound message's sentiment: positive / neutral / negative (VADER), or "unknown" when its language
    #: is one VADER does not score (English only) or could not be told; None: not a scored message
    sentiment_label: str | None = None


class OpenContact(msgspec.Struct, frozen=True, kw_only=True):
    """A contact that is open on some channel: waiting for an advisor, or with one."""

    contact_id: str
    channel: str
    opened_at: float
    routing_group: str = "default"
    state: str = "open"  # open | queued | assigned | rejected (the router could not take it: ``reason``)
    advisor_id: str | None = None
    needs_advisor: bool = False
    #: the router's key of the contact (``schemas.routing.contact_key``), made when it was requested and
    #: sent on its ContactUpdates: it names this customer's contact even after an identity merge changed the id
    contact_key: str | None = None
    reason: str | None = None  #: why the router rejected it (its ``rejected`` routing event's detail)


class ContactRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One contact in the customer's contact log (newest last, bounded): counts and repeat contacts."""

    contact_id: str
    channel: str
    opened_at: float
    closed_at: float | None = None
    intent: str | None = None
    resolved: bool | None = None  # from contact_closed attributes.resolved; None = not reported
    advisor_id: str | None = None


class IntentPoint(msgspec.Struct, frozen=True, kw_only=True):
    """An intent the customer expressed (newest last in ``CustomerContext.intent_history``)."""

    at: float
    intent: str
    confidence: float | None = None
    source: str = "channel"  # channel (IVR menu, bot NLU) | model | advisor
    contact_id: str | None = None
    channel: str | None = None


class SentimentPoint(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One inbound message's sentiment: [at, score] (compact on the wire)."""

    at: float
    score: float


class SurveyPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One CSAT or NPS answer counted in the context (``CustomerContext.surveys``, newest last).

    Kept by event id so a redelivered survey is recognised however many events came between,
    and a merge counts a survey both customers' contexts applied once.
    """

    event_id: str
    at: float
    kind: str  # csat | nps
    value: float


class ChurnReason(msgspec.Struct, frozen=True, kw_only=True):
    """A context fact that raises the customer's churn risk, as the churn model scored it.

    ``weight`` is its share of the risk's log-odds (0.7 roughly doubles the odds); ``value``
    is the fact as the model read it (``contract`` "month-to-month", ``complaints`` 2...).
    """

    factor: str
    value: str | None = None
    weight: float


class HealthFactor(msgspec.Struct, frozen=True, kw_only=True):
    """One factor of the customer's health score (:mod:`cxstream.intel.health`), named like the churn reasons.

    ``points`` is its contribution on the score's 0-100 scale (negative lowers health; 10 points are a
    factor e on the odds that the customer stays); ``value`` the fact as the score read it.
    """

    factor: str
    value: str | None = None
    points: float


#: The account facts a ``profile`` outcome's attributes may carry, kept in ``CustomerContext.account``:
#: what the churn model reads when business systems send it (numbers, short strings; ``products`` is
#: a "|"-separated list; ``paperless_billing`` a boolean or yes/no).
ACCOUNT_NUMBERS = ("tenure_months", "monthly_charges", "monthly_value", "total_charges", "lifetime_value")
ACCOUNT_STRINGS = ("contract", "payment_method", "plan", "products", "segment")
ACCOUNT_FLAGS = ("paperless_billing",)


#: Next-best-action decisions a context keeps while they await their outcome (``CustomerContext.nba``).
NBA_PENDING_MAX = 8


class CustomerContext(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the engine keeps about one canonical customer.

    Every collection is bounded (``cxstream.context.update.ContextLimits``), so a
    context's size is flat however long the customer lives; ``bench context``
    reports the encoded bytes per customer.
    """

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
    anonymous: bool = False  # keyed by a session/contact, not by a customer identifier
    merged_from: list[str] = []  # customer ids merged into this one (bounded)
    # channels and language, learned from history
    channel_counts: dict[str, int] = {}  # inbound interactions per channel
    preferred_channel: str | None = None
    language_counts: dict[str, int] = {}
    preferred_language: str | None = None
    # sentiment (VADER compound, -1..1) of inbound messages
    sentiment_last: float | None = None
    sentiment_avg: float | None = None  # exponentially weighted (alpha 0.3)
    sentiment_trend: float | None = None  # least-squares slope per message over sentiment_recent
    sentiment_recent: list[SentimentPoint] = []
    # intents and scores (channel intents now; the scoring stage fills the model's via set_scores)
    latest_intent: str | None = None
    intent_confidence: float | None = None
    intent_history: list[IntentPoint] = []
    churn_risk: float | None = None
    churn_reasons: list[ChurnReason] = []  # the facts that raise churn_risk most, largest first (up to 3)
    # customer health (cxstream.intel.health): 0-100, higher is healthier; None until first computed
    health: int | None = None
    health_band: str | None = None  # healthy (70+) / watch (50+) / at_risk (30+) / critical
    health_factors: list[HealthFactor] = []  # the factors that move it most, largest |points| first (up to 3)
    model_version: str | None = None
    scored_at: float | None = None
    # contacts
    contacts: list[ContactRecord] = []  # contact log, newest last
    contacts_24h: int = 0  # as of updated_at
    contacts_7d: int = 0
    repeat_contact: bool = False  # the latest contact repeats an unresolved one with the same intent (7 days)
    repeat_of: str | None = None
    # journey, consent, satisfaction, value
    journey_stage: str = "new"
    milestones: dict[str, float] = {}  # outcome kind -> latest event time (churned, converted, payment_failed...)
    consent: dict[str, bool] = {}
    consent_at: float | None = None
    csat_last: float | None = None
    csat_avg: float | None = None
    csat_count: int = 0
    nps_last: float | None = None
    nps_avg: float | None = None
    nps_count: int = 0
    surveys: list[SurveyPoint] = []  # the CSAT/NPS answers counted above (bounded, newest last): dedupe across merges
    tier: str | None = None
    value: float | None = None
    account: dict[str, str | float | bool] = {}  # account facts from ``profile`` outcomes (the ACCOUNT_* keys), for churn risk
    timezone: str | None = None  # IANA name from a ``profile`` outcome (``attributes.timezone``): outreach quiet hours
    # next-best-action decisions awaiting their outcome (cxstream.agents.nba), newest last, bounded;
    # the desk shows the one of its contact
    nba: list[NextBestAction] = []

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
# A stored context is its JSON in one zstd frame with the shipped context dictionary
# (codecs.compress_context, level 3): 13-18 % of the JSON's bytes, 35-45 % less than zstd alone, for
# ~23 µs to compress and ~10 to decompress a context of ~8 KB of JSON
# (bench/context/dictionary.py, bench/results/context-dictionary.json).


def context_json(raw: bytes) -> bytes:
    """The JSON of a stored context (a table value or Redis copy): what ``GET /customers/{id}/context`` answers.

    A value written before contexts were compressed is plain JSON and comes back as it is.

    >>> ctx = CustomerContext(customer_id="c1", created_at=1.0, updated_at=2.0)
    >>> stored = encode_context(ctx)
    >>> stored[:4] == ZSTD_MAGIC, context_json(stored) == msgspec.json.encode(ctx)
    (True, True)
    >>> context_json(b'{"customer_id":"c1"}')
    b'{"customer_id":"c1"}'
    """
    return decompressed(raw)


def decode_context_or_none(raw: bytes | None) -> CustomerContext | None:
    """:func:`decode_context` of a table value, None for a missing one."""
    return _decoder.decode(context_json(raw)) if raw else None


def encode_context(ctx: CustomerContext) -> bytes:
    """The context as stored (table value and Redis copy): its JSON, zstd-compressed with the context dictionary (:func:`context_json` reads it)."""
    return compress_context(_encoder.encode(ctx))


def decode_context(raw: bytes) -> CustomerContext:
    """Inverse of :func:`encode_context` (a plain JSON value, from an older engine, decodes too)."""
    return _decoder.decode(context_json(raw))
