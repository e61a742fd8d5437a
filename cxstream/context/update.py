"""Pure context updates: (old context, event) -> (new context, effects).

No I/O and no clock: every time comes from the events, so a replay rebuilds the
same contexts.  The caller (``cxstream.agents.context``) persists the new
context and publishes the effects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cxstream.context.language import SENTIMENT_LANGUAGES, UNKNOWN, Detection, primary
from cxstream.context.model import (
    ACCOUNT_FLAGS,
    ACCOUNT_NUMBERS,
    ACCOUNT_STRINGS,
    NBA_PENDING_MAX,
    ChurnReason,
    ContactRecord,
    CustomerContext,
    IntentPoint,
    InteractionSummary,
    OpenContact,
    SentimentPoint,
    SurveyPoint,
)
from cxstream.context.sentiment import label as sentiment_label
from cxstream.context.sentiment import sentiment as vader_sentiment
from cxstream.context.sentiment import trend
from cxstream.schemas import Assignment, ContactRequest, ContactUpdate, InteractionEvent, OutcomeEvent, RoutingEvent
from cxstream.schemas.routing import contact_key

replace = msgspec.structs.replace


@dataclass(frozen=True)
class ContextLimits:
    """Bounds that keep a context's memory flat however long a customer lives."""

    max_interactions: int = 20
    max_event_ids: int = 64
    max_text_chars: int = 500
    max_identifiers_per_kind: int = 8
    max_contacts: int = 32  # contact log (counts, repeat contacts)
    max_open_contacts: int = 16  # contacts never closed must not grow the context forever
    max_intents: int = 10
    max_sentiments: int = 10
    max_merged_from: int = 16
    max_languages: int = 8
    max_surveys: int = 32  # CSAT/NPS answers remembered by event id (a customer answers few)
    sentiment_alpha: float = 0.3
    repeat_window_s: float = 7 * 86400.0
    sentiment_languages: frozenset[str] = SENTIMENT_LANGUAGES  # what VADER scores (primary subtags)


@dataclass(frozen=True)
class Prediction:
    """The intent model's answer for one text: ``intent`` is None when it said "unknown"."""

    intent: str | None
    confidence: float
    model_version: str


@dataclass
class Effects:
    """What an update asks the caller to publish."""

    duplicate: bool = False
    routing: list[ContactRequest | ContactUpdate] = field(default_factory=list)


def _new(customer_id: str, at: float, anonymous: bool = False) -> CustomerContext:
    return CustomerContext(customer_id=customer_id, created_at=at, updated_at=at, anonymous=anonymous)


def _seen(ctx: CustomerContext, event_id: str, limits: ContextLimits) -> tuple[bool, list[str]]:
    if event_id in ctx.recent_event_ids:
        return True, ctx.recent_event_ids
    ids = [*ctx.recent_event_ids, event_id]
    return False, ids[-limits.max_event_ids :]


def _merge_identifiers(ctx: CustomerContext, found: dict[str, str], limits: ContextLimits) -> dict[str, list[str]]:
    if all(v in ctx.identifiers.get(k, ()) for k, v in found.items()):
        return ctx.identifiers
    out = {k: list(v) for k, v in ctx.identifiers.items()}
    for kind, value in found.items():
        values = out.setdefault(kind, [])
        if value not in values:
            values.append(value)
            del values[: -limits.max_identifiers_per_kind]
    return out


def _bump(counts: dict[str, int], key: str | None, limit: int) -> dict[str, int]:
    if not key:
        return counts
    out = dict(counts)
    out[key] = out.get(key, 0) + 1
    if len(out) > limit:  # forget the rarest
        del out[min(out, key=lambda k: (out[k], k))]
    return out


def _argmax(counts: dict[str, int], tie: str | None) -> str | None:
    if not counts:
        return None
    best = max(counts.values())
    if tie is not None and counts.get(tie) == best:
        return tie
    return min(k for k, v in counts.items() if v == best)


def _attr_str(attrs: Mapping[str, object], key: str, max_len: int = 128) -> str | None:
    v = attrs.get(key)
    return v[:max_len] if isinstance(v, str) and v.strip() else None


def _attr_float(attrs: Mapping[str, object], key: str) -> float | None:
    v = attrs.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def account_facts(attrs: Mapping[str, object]) -> dict[str, str | float | bool]:
    """The account facts (``ACCOUNT_*`` keys) of a ``profile`` outcome's attributes; anything else is ignored.

    >>> account_facts({"tenure_months": 14, "contract": "One year", "paperless_billing": "Yes", "colour": "red"})
    {'tenure_months': 14.0, 'contract': 'One year', 'paperless_billing': True}
    >>> account_facts({"tenure_months": "14", "monthly_charges": float("nan"), "plan": "   "})
    {}
    """
    out: dict[str, str | float | bool] = {}
    for key in ACCOUNT_NUMBERS:
        v = _attr_float(attrs, key)
        if v is not None and math.isfinite(v):
            out[key] = v
    for key in ACCOUNT_STRINGS:
        s = _attr_str(attrs, key, 256 if key == "products" else 64)
        if s is not None:
            out[key] = s
    for key in ACCOUNT_FLAGS:
        flag = attrs.get(key)
        if isinstance(flag, str) and flag.strip().lower() in ("yes", "no", "true", "false"):
            flag = flag.strip().lower() in ("yes", "true")
        if isinstance(flag, bool):
            out[key] = flag
    return out


def _with_intent(
    ctx: CustomerContext, point: IntentPoint, limits: ContextLimits
) -> tuple[list[IntentPoint], list[ContactRecord]]:
    history = [*ctx.intent_history, point][-limits.max_intents :]
    contacts = ctx.contacts
    if point.contact_id:
        contacts = [replace(c, intent=point.intent) if c.contact_id == point.contact_id else c for c in contacts]
    return history, contacts


def journey_stage(ctx: CustomerContext, now: float | None = None) -> str:
    """Where the customer is in their journey, from what the context knows (rules, first match wins).

    ``churned`` (a churn outcome not followed by retained/converted), ``at_risk`` (churn
    risk >= 0.5, a payment failure in the last 30 days, a repeat contact, or a sentiment
    average <= -0.3 over 3+ messages), ``anonymous`` (only device/session known),
    ``customer`` (a CRM id, account number, tier or conversion), ``new`` (one interaction
    so far), else ``prospect``.

    >>> journey_stage(CustomerContext(customer_id="c", created_at=0, updated_at=0, milestones={"churned": 5.0}))
    'churned'
    >>> journey_stage(CustomerContext(customer_id="c", created_at=0, updated_at=0, identifiers={"customer_id": ["C1"]}))
    'customer'
    """
    now = ctx.updated_at if now is None else now
    m = ctx.milestones
    churned = m.get("churned")
    if churned is not None and churned >= max(m.get("retained", -1.0), m.get("converted", -1.0)):
        return "churned"
    failed = m.get("payment_failed")
    if (
        (ctx.churn_risk is not None and ctx.churn_risk >= 0.5)
        or (failed is not None and now - failed <= 30 * 86400)
        or ctx.repeat_contact
        or (ctx.sentiment_avg is not None and ctx.sentiment_avg <= -0.3 and len(ctx.sentiment_recent) >= 3)
    ):
        return "at_risk"
    kinds = {k for k, v in ctx.identifiers.items() if v}
    if ctx.anonymous or (kinds and kinds <= {"device_id"}):
        return "anonymous"
    if kinds & {"customer_id", "account_number"} or ctx.tier or "converted" in m:
        return "customer"
    return "new" if ctx.interactions_total <= 1 else "prospect"


def _derive(ctx: CustomerContext, limits: ContextLimits) -> CustomerContext:
    """Recompute the derived fields: preferences, contact counts, repeat flag, journey stage."""
    now = ctx.updated_at
    contacts_24h = sum(1 for c in ctx.contacts if now - c.opened_at <= 86400)
    contacts_7d = sum(1 for c in ctx.contacts if now - c.opened_at <= 7 * 86400)
    repeat_of = None
    if ctx.contacts and ctx.contacts[-1].intent:
        latest = ctx.contacts[-1]
        for c in reversed(ctx.contacts[:-1]):
            if latest.opened_at - c.opened_at > limits.repeat_window_s:
                break
            if c.intent == latest.intent and c.resolved is not True:
                repeat_of = c.contact_id
                break
    ctx = replace(
        ctx,
        preferred_channel=_argmax(ctx.channel_counts, ctx.last_channel),
        preferred_language=_argmax(ctx.language_counts, ctx.language),
        contacts_24h=contacts_24h,
        contacts_7d=contacts_7d,
        repeat_contact=repeat_of is not None,
        repeat_of=repeat_of,
    )
    return replace(ctx, journey_stage=journey_stage(ctx))


def apply_interaction(
    ctx: CustomerContext | None,
    ev: InteractionEvent,
    customer_id: str,
    limits: ContextLimits = ContextLimits(),
    *,
    identifiers: dict[str, str] | None = None,
    redacted_text: str | None = None,
    anonymous: bool = False,
    predicted: Prediction | None = None,
    detected: Detection | None = None,
) -> tuple[CustomerContext, Effects]:
    """Fold one interaction into the customer's context.

    *detected* is the language detector's answer for this event's text (the context stage runs
    it on inbound text; :func:`message_language` says which language the message is then in).
    Sentiment is scored only in a language VADER supports (``limits.sentiment_languages``):
    a message in another language, or in one neither the channel nor the detector could tell
    (and the customer's usual language is not one either), has sentiment "unknown".

    *predicted* is the intent model's answer for this event's text (the scoring
    stage's), used when the channel sent no ``intent`` attribute; it reaches the
    contact request of a ``contact_opened`` that carries text (first message, IVR
    utterance), so the router sees the intent.

    *identifiers* are the event's normalised identifiers; *redacted_text* the
    message text with personal data removed (the raw text is never stored).  An
    inbound message's sentiment is scored with VADER; an ``intent`` attribute (from an
    IVR menu or a bot's NLU, with optional ``intent_confidence``) joins the intent
    history; ``resolved`` on ``contact_closed`` marks the contact resolved or not.

    >>> from cxstream.schemas import Identifiers
    >>> ev = InteractionEvent(event_id="e1", occurred_at=10.0, channel="chat", kind="contact_opened",
    ...     customer=Identifiers(customer_id="c1"), contact_id="k1", needs_advisor=True)
    >>> ctx, fx = apply_interaction(None, ev, "c1")
    >>> sorted(ctx.open_contacts), [type(r).__name__ for r in fx.routing]
    (['k1'], ['ContactRequest'])
    >>> ctx2, fx2 = apply_interaction(ctx, ev, "c1")
    >>> fx2.duplicate, ctx2 is ctx
    (True, True)
    """
    if ctx is None:
        ctx = _new(customer_id, ev.occurred_at, anonymous)
    dup, event_ids = _seen(ctx, ev.event_id, limits)
    if dup:
        return ctx, Effects(duplicate=True)
    fx = Effects()
    text = redacted_text
    if text is not None and len(text) > limits.max_text_chars:
        text = text[: limits.max_text_chars] + "…"
    inbound = ev.direction == "inbound"
    language = message_language(ev.language, detected)
    score = label = None
    if text and inbound and ev.kind == "message":
        # detection off and no language given: scored as before; otherwise only in a supported language
        judged = language or (ctx.preferred_language if detected is not None else None)
        if (judged is None and detected is None) or primary(judged) in limits.sentiment_languages:
            score = vader_sentiment(text)
            label = sentiment_label(score)
        else:
            label = UNKNOWN
    summary = InteractionSummary(
        event_id=ev.event_id,
        at=ev.occurred_at,
        channel=ev.channel,
        kind=ev.kind,
        contact_id=ev.contact_id,
        text=text,
        direction=ev.direction,
        sentiment=score,
        language=language,
        language_detected=detected.language if detected is not None else None,
        language_confidence=detected.confidence if detected is not None else None,
        sentiment_label=label,
    )
    recent = [summary, *ctx.recent][: limits.max_interactions]
    open_contacts = ctx.open_contacts
    contacts = ctx.contacts
    contacts_total = ctx.contacts_total
    cid = ev.contact_id
    attrs = ev.attributes
    # the same contact sent again (new event id, same contact and opening time) after it ended: not a new contact
    again = ev.kind == "contact_opened" and any(
        c.contact_id == cid and c.closed_at is not None and c.opened_at == ev.occurred_at for c in contacts
    )
    if ev.kind == "contact_opened" and cid and cid not in open_contacts and not again:
        open_contacts = {
            **open_contacts,
            cid: OpenContact(
                contact_id=cid,
                channel=ev.channel,
                opened_at=ev.occurred_at,
                routing_group=ev.routing_group,
                state="queued" if ev.needs_advisor else "open",
                needs_advisor=ev.needs_advisor,
                contact_key=contact_key(customer_id, cid) if ev.needs_advisor else None,
            ),
        }
        if len(open_contacts) > limits.max_open_contacts:
            oldest = sorted(open_contacts.values(), key=lambda c: (c.opened_at, c.contact_id))
            open_contacts = {c.contact_id: c for c in oldest[-limits.max_open_contacts :]}
        if not any(c.contact_id == cid for c in contacts):
            contacts = [*contacts, ContactRecord(contact_id=cid, channel=ev.channel, opened_at=ev.occurred_at)][-limits.max_contacts :]
        contacts_total += 1
    elif ev.kind in ("contact_closed", "contact_abandoned") and cid:
        resolved = attrs.get("resolved")
        flag = resolved if isinstance(resolved, bool) else None
        if any(c.contact_id == cid for c in contacts):
            contacts = [
                replace(c, closed_at=ev.occurred_at, resolved=flag if flag is not None else c.resolved) if c.contact_id == cid else c
                for c in contacts
            ]
        else:  # opened under another customer id, whose context is on its way (a merge hand-off): remember the close
            contacts = [*contacts, ContactRecord(contact_id=cid, channel=ev.channel, opened_at=ev.occurred_at, closed_at=ev.occurred_at, resolved=flag)][-limits.max_contacts :]
        if cid in open_contacts:
            closing = open_contacts[cid]
            open_contacts = {k: v for k, v in open_contacts.items() if k != cid}
            if closing.needs_advisor:
                fx.routing.append(
                    ContactUpdate(
                        event_id=ev.event_id,
                        contact_id=cid,
                        routing_group=closing.routing_group,
                        kind="abandoned" if ev.kind == "contact_abandoned" else "closed",
                        at=ev.occurred_at,
                        contact_key=closing.contact_key,
                    )
                )
    new = replace(
        ctx,
        updated_at=max(ctx.updated_at, ev.occurred_at),
        identifiers=_merge_identifiers(ctx, identifiers or {}, limits),
        recent=recent,
        open_contacts=open_contacts,
        contacts=contacts,
        last_channel=ev.channel,
        language=language or ctx.language,
        interactions_total=ctx.interactions_total + 1,
        contacts_total=contacts_total,
        recent_event_ids=event_ids,
        channel_counts=_bump(ctx.channel_counts, ev.channel, 16) if inbound else ctx.channel_counts,
        language_counts=_bump(ctx.language_counts, language, limits.max_languages),
    )
    if score is not None:
        points = [*ctx.sentiment_recent, SentimentPoint(at=ev.occurred_at, score=score)][-limits.max_sentiments :]
        avg = score if ctx.sentiment_avg is None else (1 - limits.sentiment_alpha) * ctx.sentiment_avg + limits.sentiment_alpha * score
        new = replace(
            new, sentiment_last=score, sentiment_avg=round(avg, 4), sentiment_recent=points,
            sentiment_trend=trend([p.score for p in points]),
        )
    intent = _attr_str(attrs, "intent")
    point = None
    if intent is not None:
        point = IntentPoint(
            at=ev.occurred_at, intent=intent, confidence=_attr_float(attrs, "intent_confidence"), source="channel",
            contact_id=cid, channel=ev.channel,
        )
    elif predicted is not None and predicted.intent is not None:
        point = IntentPoint(
            at=ev.occurred_at, intent=predicted.intent, confidence=predicted.confidence, source="model",
            contact_id=cid, channel=ev.channel,
        )
        new = replace(new, model_version=predicted.model_version, scored_at=ev.occurred_at)
    if point is not None:
        history, contacts = _with_intent(new, point, limits)
        new = replace(new, intent_history=history, contacts=contacts, latest_intent=point.intent, intent_confidence=point.confidence)
    new = _derive(new, limits)
    if ev.kind == "contact_opened" and cid and ev.needs_advisor and cid in open_contacts and cid not in ctx.open_contacts:
        fx.routing.append(
            ContactRequest(
                event_id=ev.event_id,
                contact_id=cid,
                customer_id=customer_id,
                routing_group=ev.routing_group,
                channel=ev.channel,
                opened_at=ev.occurred_at,
                language=language or new.preferred_language or ctx.language,
                priority=ev.priority,
                required_skills=list(ev.required_skills),
                intent=new.latest_intent,
                intent_confidence=new.intent_confidence,
                churn_risk=new.churn_risk,
                tier=new.tier,
                last_advisor_id=ctx.last_advisor_id,
                contact_key=open_contacts[cid].contact_key,
            )
        )
    return new, fx


def message_language(reported: str | None, detected: Detection | None) -> str | None:
    """The language a message is in: the detector's when it is confident and disagrees with the
    channel's tag (what the customer wrote beats the channel's locale), else the channel's.

    >>> message_language("en-GB", Detection("en", 0.9)), message_language("en", Detection("fr", 0.95))
    ('en-GB', 'fr')
    >>> message_language(None, Detection("unknown", 0.3)), message_language("de", None)
    (None, 'de')
    """
    if detected is None or detected.language == UNKNOWN or primary(reported) == detected.language:
        return reported
    return detected.language


def apply_assignment(ctx: CustomerContext | None, a: Assignment, limits: ContextLimits = ContextLimits()) -> CustomerContext:
    """Record that an advisor was assigned to one of the customer's contacts.

    >>> a = Assignment(assignment_id="a1", contact_id="k1", customer_id="c1", advisor_id="adv1",
    ...     routing_group="default", channel="voice", contact_opened_at=1.0, decided_at=3.0, waited_s=2.0)
    >>> apply_assignment(None, a).last_advisor_id
    'adv1'
    """
    if ctx is None:
        ctx = _new(a.customer_id, a.decided_at)
    dup, event_ids = _seen(ctx, a.assignment_id, limits)
    if dup:
        return ctx
    open_contacts = ctx.open_contacts
    mine = open_contacts.get(a.contact_id)
    if mine is not None and not (mine.contact_key and a.contact_key and mine.contact_key != a.contact_key):
        open_contacts = {
            **open_contacts,
            a.contact_id: replace(open_contacts[a.contact_id], state="assigned", advisor_id=a.advisor_id),
        }
    contacts = [replace(c, advisor_id=a.advisor_id) if c.contact_id == a.contact_id else c for c in ctx.contacts]
    return replace(
        ctx,
        updated_at=max(ctx.updated_at, a.decided_at),
        open_contacts=open_contacts,
        contacts=contacts,
        last_advisor_id=a.advisor_id,
        last_advisor_at=a.decided_at,
        recent_event_ids=event_ids,
    )


def _running_mean(avg: float | None, count: int, value: float) -> float:
    return round(value if avg is None or count == 0 else (avg * count + value) / (count + 1), 4)


def apply_outcome(
    ctx: CustomerContext | None,
    ev: OutcomeEvent,
    customer_id: str,
    limits: ContextLimits = ContextLimits(),
    *,
    identifiers: dict[str, str] | None = None,
) -> tuple[CustomerContext, bool]:
    """Fold a business outcome into the context; returns (context, was_duplicate).

    ``csat``/``nps`` update the last value and the running mean; ``consent`` sets the
    boolean attributes as consent flags; ``profile`` sets ``tier`` (attribute),
    ``value`` (attribute or the event's value), the account facts (:func:`account_facts`)
    and ``timezone`` (attribute, an IANA name; outreach checks it and falls back to its
    default zone); every kind records its latest time in ``milestones``.

    >>> o = OutcomeEvent(event_id="o1", occurred_at=5, customer={"customer_id": "c1"}, kind="csat", value=4)
    >>> ctx, _ = apply_outcome(None, o, "c1")
    >>> ctx.csat_last, ctx.csat_count
    (4.0, 1)
    """
    if ctx is None:
        ctx = _new(customer_id, ev.occurred_at)
    dup, event_ids = _seen(ctx, ev.event_id, limits)
    if dup or (ev.kind in ("csat", "nps") and any(p.event_id == ev.event_id for p in ctx.surveys)):
        return ctx, True  # (a survey is remembered longer than the ring of recent ids)
    summary = InteractionSummary(
        event_id=ev.event_id, at=ev.occurred_at, channel="business", kind=f"outcome:{ev.kind}", contact_id=ev.contact_id
    )
    new = replace(
        ctx,
        updated_at=max(ctx.updated_at, ev.occurred_at),
        identifiers=_merge_identifiers(ctx, identifiers or {}, limits),
        recent=[summary, *ctx.recent][: limits.max_interactions],
        recent_event_ids=event_ids,
        milestones={**ctx.milestones, ev.kind: max(ev.occurred_at, ctx.milestones.get(ev.kind, ev.occurred_at))},
    )
    v = ev.value
    if ev.kind in ("csat", "nps") and v is not None:
        point = SurveyPoint(event_id=ev.event_id, at=ev.occurred_at, kind=ev.kind, value=float(v))
        surveys = sorted([*ctx.surveys, point], key=lambda p: (p.at, p.event_id))[-limits.max_surveys :]
        new = replace(new, surveys=surveys)
        if ev.kind == "csat":
            new = replace(new, csat_last=float(v), csat_avg=_running_mean(ctx.csat_avg, ctx.csat_count, v), csat_count=ctx.csat_count + 1)
        else:
            new = replace(new, nps_last=float(v), nps_avg=_running_mean(ctx.nps_avg, ctx.nps_count, v), nps_count=ctx.nps_count + 1)
    elif ev.kind == "consent":
        flags = {k[:64]: v for k, v in ev.attributes.items() if isinstance(v, bool)}
        if flags and (ctx.consent_at is None or ev.occurred_at >= ctx.consent_at):
            consent = {**ctx.consent, **flags}
            new = replace(new, consent=dict(list(consent.items())[-32:]), consent_at=ev.occurred_at)
    elif ev.kind == "profile":
        tier = _attr_str(ev.attributes, "tier", 32)
        value = _attr_float(ev.attributes, "value")
        new = replace(new, tier=tier or ctx.tier, value=value if value is not None else (v if v is not None else ctx.value))
        facts = account_facts(ev.attributes)
        if facts:
            new = replace(new, account={**ctx.account, **facts})
        zone = _attr_str(ev.attributes, "timezone", 64)
        if zone is not None:
            new = replace(new, timezone=zone.strip())
    elif ev.kind == "complaint" and ev.contact_id:
        new = replace(new, contacts=[replace(c, resolved=False) if c.contact_id == ev.contact_id else c for c in ctx.contacts])
    return _derive(new, limits), False


def set_scores(
    ctx: CustomerContext,
    *,
    at: float,
    intent: str | None = None,
    intent_confidence: float | None = None,
    churn_risk: float | None = None,
    model_version: str | None = None,
    contact_id: str | None = None,
    limits: ContextLimits = ContextLimits(),
    churn_reasons: list[ChurnReason] | None = None,
) -> CustomerContext:
    """The context with the scoring stage's latest intent and churn scores (``model_version`` stamped).

    For the intent/churn scorer: a predicted intent joins the intent history (source
    ``model``) and, with *contact_id*, labels that contact (which may make it a repeat).

    >>> ctx = CustomerContext(customer_id="c", created_at=0, updated_at=0)
    >>> s = set_scores(ctx, at=1, intent="card_lost", intent_confidence=0.9, churn_risk=0.7, model_version="m3")
    >>> (s.latest_intent, s.churn_risk, s.model_version, s.journey_stage)
    ('card_lost', 0.7, 'm3', 'at_risk')
    """
    new = replace(
        ctx,
        updated_at=max(ctx.updated_at, at),
        churn_risk=churn_risk if churn_risk is not None else ctx.churn_risk,
        churn_reasons=churn_reasons if churn_risk is not None and churn_reasons is not None else ctx.churn_reasons,
        model_version=model_version or ctx.model_version,
        scored_at=at,
    )
    if intent is not None:
        point = IntentPoint(at=at, intent=intent, confidence=intent_confidence, source="model", contact_id=contact_id)
        history, contacts = _with_intent(new, point, limits)
        new = replace(new, intent_history=history, contacts=contacts, latest_intent=intent, intent_confidence=intent_confidence)
    return _derive(new, limits)


def set_churn(ctx: CustomerContext, *, churn_risk: float, model_version: str, churn_reasons: list[ChurnReason]) -> CustomerContext:
    """``set_scores(ctx, at=ctx.updated_at, churn_risk=..., model_version=..., churn_reasons=...)`` for a context
    fresh from :func:`apply_interaction` or :func:`apply_outcome` (the context stage's churn score of each update).

    Those end with :func:`_derive`, whose fields read nothing a churn score changes (the same ``updated_at``,
    contacts and counts), so only the journey stage (which reads ``churn_risk``) is evaluated again.

    >>> from cxstream.schemas import Identifiers
    >>> ev = InteractionEvent(event_id="e1", occurred_at=10.0, channel="chat", kind="contact_opened",
    ...     customer=Identifiers(customer_id="c1"), contact_id="k1", needs_advisor=True)
    >>> ctx, _ = apply_interaction(None, ev, "c1")
    >>> reasons = [ChurnReason(factor="contacts_30d", value="1", weight=0.4)]
    >>> set_churn(ctx, churn_risk=0.7, model_version="churn-3", churn_reasons=reasons) == set_scores(
    ...     ctx, at=ctx.updated_at, churn_risk=0.7, model_version="churn-3", churn_reasons=reasons)
    True
    """
    new = replace(ctx, churn_risk=churn_risk, churn_reasons=churn_reasons,
                  model_version=model_version or ctx.model_version, scored_at=ctx.updated_at)
    return replace(new, journey_stage=journey_stage(new))


def _merge_contact_logs(a: list[ContactRecord], b: list[ContactRecord], limit: int) -> list[ContactRecord]:
    by_id: dict[str, ContactRecord] = {}
    for c in [*a, *b]:
        old = by_id.get(c.contact_id)
        if old is None:
            by_id[c.contact_id] = c
            continue
        by_id[c.contact_id] = replace(
            old,
            opened_at=min(old.opened_at, c.opened_at),
            channel=old.channel,
            closed_at=max((x for x in (old.closed_at, c.closed_at) if x is not None), default=None),
            intent=old.intent or c.intent,
            resolved=old.resolved if old.resolved is not None else c.resolved,
            advisor_id=old.advisor_id or c.advisor_id,
        )
    return sorted(by_id.values(), key=lambda c: (c.opened_at, c.contact_id))[-limit:]


def _merge_event_ids(survivor: list[str], absorbed: list[str], merge_id: str, limit: int) -> list[str]:
    """The ring of recent event ids after a merge: the newest of both sides (alternately) and the merge id.

    Both sides' recent events can be redelivered after the merge (they then resolve to the survivor),
    so neither side's ids may push out all of the other's.

    >>> _merge_event_ids(["a1", "a2", "a3"], ["b1", "b2"], "m", 4)
    ['b2', 'a2', 'a3', 'm']
    """
    keep_s: list[str] = []
    keep_b: list[str] = []
    i, j = len(survivor), len(absorbed)
    while len(keep_s) + len(keep_b) < limit - 1 and (i or j):
        if i:
            i -= 1
            keep_s.append(survivor[i])
        if j and len(keep_s) + len(keep_b) < limit - 1:
            j -= 1
            keep_b.append(absorbed[j])
    return [*reversed(keep_b), *reversed(keep_s), merge_id]


def _merge_sorted(a: list, b: list, key, limit: int, newest_first: bool = False, unique: bool = False) -> list:  # type: ignore[no-untyped-def, type-arg]
    items = sorted({key(x): x for x in [*a, *b]}.values() if unique else [*a, *b], key=key, reverse=newest_first)
    return items[:limit] if newest_first else items[-limit:]


def merge_contexts(
    survivor: CustomerContext | None,
    absorbed: CustomerContext | None,
    survivor_id: str,
    absorbed_id: str,
    merge_id: str,
    at: float,
    limits: ContextLimits = ContextLimits(),
    routing: list[ContactRequest | ContactUpdate] | None = None,
) -> CustomerContext:
    """One context from two customers found to be one person (pure; order-independent for the history).

    A contact open on one side and closed on the other (its close reached the survivor
    before the hand-off did) ends up closed, and, if it was routed, a ``ContactUpdate``
    for the router is appended to *routing*.

    Histories interleave by event time and stay bounded; counters add up; a field known
    to only one side is kept; for single facts the more recent side wins.  The merge id
    joins ``recent_event_ids``, so a re-delivered hand-off is not applied twice.

    >>> a = CustomerContext(customer_id="A", created_at=1, updated_at=5, interactions_total=2, last_advisor_id="ann", last_advisor_at=4)
    >>> b = CustomerContext(customer_id="B", created_at=3, updated_at=9, interactions_total=1, language="fr")
    >>> m = merge_contexts(a, b, "A", "B", "m1", 10)
    >>> (m.customer_id, m.created_at, m.interactions_total, m.last_advisor_id, m.language, m.merged_from)
    ('A', 1, 3, 'ann', 'fr', ['B'])
    """
    s = survivor or _new(survivor_id, at)
    if merge_id in s.recent_event_ids:
        return s
    event_ids = [*s.recent_event_ids, merge_id][-limits.max_event_ids :]
    merged_from = [*s.merged_from, absorbed_id][-limits.max_merged_from :]
    if absorbed is None:
        return replace(s, recent_event_ids=event_ids, merged_from=merged_from)
    b = absorbed
    newer = b if b.updated_at > s.updated_at else s
    older = s if newer is b else b
    identifiers = {k: list(v) for k, v in s.identifiers.items()}
    for kind, values in b.identifiers.items():
        mine = identifiers.setdefault(kind, [])
        for value in values:
            if value not in mine:
                mine.append(value)
        del mine[: -limits.max_identifiers_per_kind]
    seen_ids = set(s.recent_event_ids)
    s_recent = {y.event_id for y in s.recent}
    # An interaction both sides applied: redelivered after a crash, it reached the survivor
    # (resolved there now) before the hand-off of the context it had already been applied to.
    # The merged counters must count it once.
    twice = [x for x in b.recent if x.event_id in s_recent]
    recent = _merge_sorted(s.recent, [x for x in b.recent if x.event_id not in s_recent], lambda x: (x.at, x.event_id), limits.max_interactions, newest_first=True)
    open_contacts = {**b.open_contacts, **s.open_contacts}
    for cid in b.open_contacts.keys() & s.open_contacts.keys():
        # the same contact open on both sides (the channel sent it under two identifiers before they were
        # found to be one customer): one contact; a second routed copy leaves the router (closed)
        ours, other = s.open_contacts[cid], b.open_contacts[cid]
        kept, dropped = (other, ours) if other.state == "assigned" and ours.state != "assigned" else (ours, other)
        open_contacts[cid] = kept
        if dropped.needs_advisor and dropped.contact_key != kept.contact_key and routing is not None:
            routing.append(ContactUpdate(event_id=f"{merge_id}:{cid}:duplicate", contact_id=cid, routing_group=dropped.routing_group,
                                         kind="closed", at=at, contact_key=dropped.contact_key))
    if len(open_contacts) > limits.max_open_contacts:
        keep = sorted(open_contacts.values(), key=lambda c: (c.opened_at, c.contact_id))[-limits.max_open_contacts :]
        open_contacts = {c.contact_id: c for c in keep}
    contacts = _merge_contact_logs(s.contacts, b.contacts, limits.max_contacts)
    closed = {c.contact_id: c for c in contacts if c.closed_at is not None}
    for cid in [k for k in open_contacts if k in closed]:  # closed on one side while open on the other: closed wins
        gone = open_contacts.pop(cid)
        if gone.needs_advisor and routing is not None:
            routing.append(ContactUpdate(event_id=f"{merge_id}:{cid}", contact_id=cid, routing_group=gone.routing_group,
                                         kind="closed", at=closed[cid].closed_at or at, contact_key=gone.contact_key))
    intents = _merge_sorted(s.intent_history, b.intent_history, lambda p: (p.at, p.intent), limits.max_intents, unique=bool(twice))
    sentiments = _merge_sorted(s.sentiment_recent, b.sentiment_recent, lambda p: (p.at, p.score), limits.max_sentiments, unique=bool(twice))
    channel_counts: dict[str, int] = dict(s.channel_counts)
    for k, v in b.channel_counts.items():
        channel_counts[k] = channel_counts.get(k, 0) + v
    language_counts: dict[str, int] = dict(s.language_counts)
    for k, v in b.language_counts.items():
        language_counts[k] = language_counts.get(k, 0) + v
    contacts_twice = 0
    for x in twice:
        if x.direction == "inbound" and channel_counts.get(x.channel, 0) > 0:
            channel_counts[x.channel] -= 1
        if x.language and language_counts.get(x.language, 0) > 0:
            language_counts[x.language] -= 1
        contacts_twice += x.kind == "contact_opened" and x.contact_id is not None
    adv_side = max((x for x in (s, b) if x.last_advisor_at is not None), key=lambda x: x.last_advisor_at or 0.0, default=s)
    scored_side = max((x for x in (s, b) if x.scored_at is not None), key=lambda x: x.scored_at or 0.0, default=newer)
    risk_side = scored_side if scored_side.churn_risk is not None else (s if s.churn_risk is not None else b)
    latest_intent_side = max((x for x in (s, b) if x.intent_history), key=lambda x: x.intent_history[-1].at, default=newer)
    milestones = dict(older.milestones)
    for k, when in newer.milestones.items():
        milestones[k] = max(when, milestones.get(k, when))

    def mean(a_avg: float | None, a_n: int, b_avg: float | None, b_n: int) -> float | None:
        if a_n + b_n == 0:
            return a_avg if a_avg is not None else b_avg
        return round(((a_avg or 0.0) * a_n + (b_avg or 0.0) * b_n) / (a_n + b_n), 4)

    # CSAT/NPS: a survey both sides applied (redelivered, resolved to the survivor before the hand-off)
    # is counted once; "last" is the newest answer by event time, whichever side it came from
    s_surveys = {p.event_id for p in s.surveys}
    survey_twice = [p for p in b.surveys if p.event_id in s_surveys]
    surveys = sorted({p.event_id: p for p in [*b.surveys, *s.surveys]}.values(), key=lambda p: (p.at, p.event_id))

    def survey_figures(kind: str, s_avg: float | None, s_n: int, b_avg: float | None, b_n: int, fallback_last: float | None) -> dict[str, Any]:
        twice = [p.value for p in survey_twice if p.kind == kind]
        n = s_n + b_n - len(twice)
        if twice and n > 0:
            avg: float | None = round(((s_avg or 0.0) * s_n + (b_avg or 0.0) * b_n - sum(twice)) / n, 4)
        else:
            avg = mean(s_avg, s_n, b_avg, b_n)
        mine = [p for p in surveys if p.kind == kind]
        return {f"{kind}_count": max(0, n), f"{kind}_avg": avg, f"{kind}_last": mine[-1].value if mine else fallback_last}

    merged = replace(
        s,
        created_at=min(s.created_at, b.created_at),
        updated_at=max(s.updated_at, b.updated_at, at),
        identifiers=identifiers,
        recent=recent,
        open_contacts=open_contacts,
        last_advisor_id=adv_side.last_advisor_id,
        last_advisor_at=adv_side.last_advisor_at,
        last_channel=newer.last_channel or older.last_channel,
        language=newer.language or older.language,
        interactions_total=s.interactions_total + b.interactions_total - len(twice),
        contacts_total=max(0, s.contacts_total + b.contacts_total - contacts_twice),
        recent_event_ids=_merge_event_ids(s.recent_event_ids, [x for x in b.recent_event_ids if x not in seen_ids], merge_id, limits.max_event_ids),
        anonymous=s.anonymous and b.anonymous,
        merged_from=[*merged_from, *[x for x in b.merged_from if x not in merged_from]][-limits.max_merged_from :],
        channel_counts={k: v for k, v in channel_counts.items() if v > 0},
        language_counts=dict(sorted(((k, v) for k, v in language_counts.items() if v > 0), key=lambda kv: -kv[1])[: limits.max_languages]),
        sentiment_last=sentiments[-1].score if sentiments else None,
        sentiment_avg=mean(s.sentiment_avg, len(s.sentiment_recent), b.sentiment_avg, len(b.sentiment_recent)),
        sentiment_trend=trend([p.score for p in sentiments]),
        sentiment_recent=sentiments,
        latest_intent=latest_intent_side.latest_intent if latest_intent_side.intent_history else (s.latest_intent or b.latest_intent),
        intent_confidence=latest_intent_side.intent_confidence,
        intent_history=intents,
        churn_risk=risk_side.churn_risk,
        churn_reasons=risk_side.churn_reasons,
        model_version=scored_side.model_version or s.model_version or b.model_version,
        scored_at=scored_side.scored_at,
        contacts=contacts,
        milestones=milestones,
        nba=sorted({d.decision_id: d for d in [*b.nba, *s.nba]}.values(), key=lambda d: d.decided_at)[-NBA_PENDING_MAX:],
        consent={**older.consent, **newer.consent} if older.consent_at is None or newer.consent_at is None or (newer.consent_at or 0) >= (older.consent_at or 0) else {**newer.consent, **older.consent},
        consent_at=max((x for x in (s.consent_at, b.consent_at) if x is not None), default=None),
        surveys=surveys[-limits.max_surveys :],
        **survey_figures("csat", s.csat_avg, s.csat_count, b.csat_avg, b.csat_count,
                         newer.csat_last if newer.csat_last is not None else older.csat_last),
        **survey_figures("nps", s.nps_avg, s.nps_count, b.nps_avg, b.nps_count,
                         newer.nps_last if newer.nps_last is not None else older.nps_last),
        tier=newer.tier or older.tier,
        value=newer.value if newer.value is not None else older.value,
        account={**older.account, **newer.account},
        timezone=newer.timezone or older.timezone,
    )
    return _derive(merged, limits)


def apply_rejection(ctx: CustomerContext | None, ev: RoutingEvent, limits: ContextLimits = ContextLimits()) -> CustomerContext | None:
    """Record that the router could not take one of the customer's contacts: its state becomes ``rejected``.

    Returns None when there is nothing to record (no context, no such open contact, seen already).

    >>> from cxstream.context.model import OpenContact
    >>> ctx = CustomerContext(customer_id="c", created_at=0, updated_at=0,
    ...     open_contacts={"k1": OpenContact(contact_id="k1", channel="chat", opened_at=0, state="queued", needs_advisor=True)})
    >>> ev = RoutingEvent(event_id="r1", kind="rejected", routing_group="g", contact_id="k1", at=5, detail="contact_key_in_use")
    >>> c = apply_rejection(ctx, ev).open_contacts["k1"]
    >>> c.state, c.reason
    ('rejected', 'contact_key_in_use')
    """
    if ctx is None or ev.kind != "rejected":
        return None
    c = ctx.open_contacts.get(ev.contact_id)
    if c is None or (c.contact_key and ev.contact_key and c.contact_key != ev.contact_key):
        return None
    dup, event_ids = _seen(ctx, ev.event_id, limits)
    if dup:
        return None
    open_contacts = {**ctx.open_contacts, ev.contact_id: replace(c, state="rejected", reason=ev.detail)}
    return replace(ctx, updated_at=max(ctx.updated_at, ev.at), open_contacts=open_contacts, recent_event_ids=event_ids)


def apply_disposition(
    ctx: CustomerContext | None, ev: RoutingEvent, limits: ContextLimits = ContextLimits()
) -> tuple[CustomerContext | None, str]:
    """Record an advisor's wrap-up of a contact: its true intent and whether it was resolved.

    Returns the new context (``None`` if there was none: nothing to record) and the
    contact's inbound message texts, newest last, joined: what the intent label is
    learned from ("" when the context kept none).

    >>> from cxstream.schemas import Disposition
    >>> ctx = CustomerContext(customer_id="c", created_at=0, updated_at=0,
    ...     contacts=[ContactRecord(contact_id="k1", channel="chat", opened_at=0)],
    ...     recent=[InteractionSummary(event_id="m", at=1, channel="chat", kind="message", contact_id="k1", text="lost card")])
    >>> ev = RoutingEvent(event_id="r1", kind="completed", routing_group="g", contact_id="k1", at=5, advisor_id="ann",
    ...     customer_id="c", disposition=Disposition(intent="lost_card", resolved=True))
    >>> new, text = apply_disposition(ctx, ev)
    >>> (new.contacts[0].intent, new.contacts[0].resolved, new.latest_intent, text)
    ('lost_card', True, 'lost_card', 'lost card')
    """
    if ctx is None or ev.disposition is None:
        return ctx, ""
    dup, event_ids = _seen(ctx, ev.event_id, limits)
    if dup:
        return ctx, ""
    d = ev.disposition
    texts = [
        s.text for s in reversed(ctx.recent)
        if s.contact_id == ev.contact_id and s.text and s.direction == "inbound" and s.kind in ("message", "contact_opened")
    ]
    contacts = [
        replace(c, resolved=d.resolved, advisor_id=ev.advisor_id or c.advisor_id) if c.contact_id == ev.contact_id else c
        for c in ctx.contacts
    ]
    new = replace(ctx, updated_at=max(ctx.updated_at, ev.at), contacts=contacts, recent_event_ids=event_ids)
    if d.intent:
        point = IntentPoint(at=ev.at, intent=d.intent, source="advisor", contact_id=ev.contact_id)
        history, contacts = _with_intent(new, point, limits)
        new = replace(new, intent_history=history, contacts=contacts, latest_intent=d.intent, intent_confidence=1.0)
    return _derive(new, limits), " ".join(texts)
