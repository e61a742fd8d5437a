"""What the outreach core reads about a customer: a small, stable view of the context.

The context record (``cxstream.context.model.CustomerContext``) grows as the engine
learns more; the outreach core reads only :class:`ContextView`, built by
:func:`view_from_dict` from the context's JSON form (``msgspec.to_builtins(ctx)``),
tolerant of missing keys, so the two can change independently.  The engine builds the same
view straight from the struct (:func:`view_of_context`), which is cheaper.

Keys read (all optional; first match wins):

==========================  =====================================================================
view field                  context keys
==========================  =====================================================================
``preferred_channel``       ``preferred_channel``, else ``last_channel``
``language``                ``preferred_language``, else ``language`` (kept only if BCP 47-like)
``timezone``                ``timezone``, ``time_zone``, ``tz``, or the same inside ``profile`` /
                            ``attributes`` (validated later; unknown zones use the default)
``consent``                 ``consent`` (``{key: bool}``); channel names are channel consents
``opted_out``               ``opted_out`` / ``opt_out`` true, or ``consent[k] is False`` for an
                            opt-out key of the config (``outreach``, ``all``, ``contact``)
``erased``                  ``erased`` / ``erasure_requested`` true, or an ``erasure_requested``
                            milestone
``open_contacts``           ``len(open_contacts)``, or ``open_contacts_count``
``churn_risk``              ``churn_risk``
``sentiments``              ``sentiment_recent`` (``[at, score]`` pairs or ``{at, score}``), oldest first
``contacts``                ``contacts`` (contact log); a contact without an intent gets it from
                            ``intent_history`` points carrying its ``contact_id``
``failed_payments``         ``failed_payments``, else 1 if a ``payment_failed`` milestone exists
==========================  =====================================================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from cxstream.context.model import CustomerContext

_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class ContactView(msgspec.Struct, frozen=True, kw_only=True):
    """One contact of the customer's contact log."""

    contact_id: str
    opened_at: float
    channel: str | None = None
    intent: str | None = None
    closed_at: float | None = None
    resolved: bool | None = None


class ContextView(msgspec.Struct, frozen=True, kw_only=True):
    """The facts about one customer that the outreach triggers and guardrails use."""

    customer_id: str
    routing_group: str = "default"
    preferred_channel: str | None = None
    language: str | None = None
    timezone: str | None = None
    consent: dict[str, bool] = {}
    opted_out: bool = False
    erased: bool = False
    open_contacts: int = 0
    churn_risk: float | None = None
    #: (event time, VADER compound score) of recent inbound messages, oldest first.
    sentiments: list[tuple[float, float]] = []
    #: The contact log, oldest first.
    contacts: list[ContactView] = []
    failed_payments: int = 0


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    x = float(v)
    return x if math.isfinite(x) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v.strip() else None


def _first(d: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        v = d.get(k)
        if v is not None:
            return v
    return None


def _timezone(d: Mapping[str, Any]) -> str | None:
    keys = ("timezone", "time_zone", "tz")
    found = _str(_first(d, *keys))
    if found:
        return found
    for nest in ("profile", "attributes"):
        sub = d.get(nest)
        if isinstance(sub, Mapping):
            found = _str(_first(sub, *keys))
            if found:
                return found
    return None


def _sentiments(raw: Any) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for p in raw if isinstance(raw, list) else ():
        if isinstance(p, list | tuple) and len(p) >= 2:
            at, score = _num(p[0]), _num(p[1])
        elif isinstance(p, Mapping):
            at, score = _num(p.get("at")), _num(p.get("score"))
        else:
            continue
        if at is not None and score is not None:
            out.append((at, score))
    out.sort(key=lambda x: x[0])
    return out


def _contacts(raw: Any, history: Any) -> list[ContactView]:
    intents: dict[str, str] = {}
    for p in history if isinstance(history, list) else ():
        if isinstance(p, Mapping) and _str(p.get("contact_id")) and _str(p.get("intent")):
            intents[p["contact_id"]] = p["intent"]  # newest last wins
    out: list[ContactView] = []
    for c in raw if isinstance(raw, list) else ():
        if not isinstance(c, Mapping):
            continue
        cid, opened = _str(c.get("contact_id")), _num(c.get("opened_at"))
        if cid is None or opened is None:
            continue
        resolved = c.get("resolved")
        out.append(
            ContactView(
                contact_id=cid,
                opened_at=opened,
                channel=_str(c.get("channel")),
                intent=_str(c.get("intent")) or intents.get(cid),
                closed_at=_num(c.get("closed_at")),
                resolved=resolved if isinstance(resolved, bool) else None,
            )
        )
    out.sort(key=lambda c: (c.opened_at, c.contact_id))
    return out


#: Keys :func:`view_from_dict` reads that ``CustomerContext`` does not have (so :func:`view_of_context`
#: does not look for them); a test keeps this true.
NOT_IN_CONTEXT = ("time_zone", "tz", "profile", "attributes", "opted_out", "opt_out", "erased",
                  "erasure_requested", "routing_group", "failed_payments", "open_contacts_count")


def view_of_context(ctx: CustomerContext, *, opt_out_keys: tuple[str, ...] | list[str] = ("outreach", "all", "contact")) -> ContextView:
    """:func:`view_from_dict` of ``msgspec.to_builtins(ctx)``, read from the struct without converting it.

    The engine evaluates outreach after every update; converting the whole context to builtins
    first cost more than the evaluation.  ``tests/unit/outreach/test_view.py`` checks that both
    give the same view on contexts the engine builds.
    """
    consent = {str(k): v for k, v in ctx.consent.items() if isinstance(v, bool)}
    milestones = ctx.milestones
    groups = sorted({g for c in ctx.open_contacts.values() if (g := _str(c.routing_group))})
    lang = _str(ctx.preferred_language if ctx.preferred_language is not None else ctx.language)
    risk = _num(ctx.churn_risk)
    intents: dict[str, str] = {}
    for p in ctx.intent_history:
        if (cid := _str(p.contact_id)) and _str(p.intent):
            intents[cid] = p.intent  # newest last wins
    contacts = []
    for c in ctx.contacts:
        cid, opened = _str(c.contact_id), _num(c.opened_at)
        if cid is None or opened is None:
            continue
        contacts.append(ContactView(
            contact_id=cid, opened_at=opened, channel=_str(c.channel), intent=_str(c.intent) or intents.get(cid),
            closed_at=_num(c.closed_at), resolved=c.resolved if isinstance(c.resolved, bool) else None,
        ))
    contacts.sort(key=lambda c: (c.opened_at, c.contact_id))
    sentiments = [(p.at, p.score) for p in ctx.sentiment_recent if _num(p.at) is not None and _num(p.score) is not None]
    sentiments.sort(key=lambda x: x[0])
    return ContextView(
        customer_id=str(ctx.customer_id or ""),
        routing_group=groups[0] if groups else "default",
        preferred_channel=_str(ctx.preferred_channel if ctx.preferred_channel is not None else ctx.last_channel),
        language=lang if lang and _LANG.match(lang) and len(lang) <= 35 else None,
        timezone=_str(ctx.timezone),
        consent=consent,
        opted_out=any(consent.get(k) is False for k in opt_out_keys),
        erased="erasure_requested" in milestones,
        open_contacts=len(ctx.open_contacts),
        churn_risk=None if risk is None else min(1.0, max(0.0, risk)),
        sentiments=sentiments,
        contacts=contacts,
        failed_payments=1 if "payment_failed" in milestones else 0,
    )


def view_from_dict(
    d: Mapping[str, Any], *, opt_out_keys: tuple[str, ...] | list[str] = ("outreach", "all", "contact")
) -> ContextView:
    """Build a :class:`ContextView` from a context's JSON form; missing keys get safe defaults.

    >>> v = view_from_dict({"customer_id": "c1", "preferred_channel": "sms", "language": "en",
    ...     "consent": {"sms": True, "email": False}, "open_contacts": {"k1": {}}, "churn_risk": 0.8,
    ...     "sentiment_recent": [[1.0, -0.5], [2.0, -0.6]], "milestones": {"payment_failed": 3.0}})
    >>> v.preferred_channel, v.consent, v.open_contacts, v.churn_risk, v.sentiments[-1], v.failed_payments
    ('sms', {'sms': True, 'email': False}, 1, 0.8, (2.0, -0.6), 1)
    >>> view_from_dict({"customer_id": "c2", "consent": {"outreach": False}}).opted_out
    True
    >>> view_from_dict({}).customer_id
    ''
    """
    consent_raw = d.get("consent")
    consent = {str(k): v for k, v in consent_raw.items() if isinstance(v, bool)} if isinstance(consent_raw, Mapping) else {}
    ms = d.get("milestones")
    milestones: Mapping[str, Any] = ms if isinstance(ms, Mapping) else {}
    opted_out = bool(d.get("opted_out") is True or d.get("opt_out") is True or any(consent.get(k) is False for k in opt_out_keys))
    erased = bool(d.get("erased") is True or d.get("erasure_requested") is True or "erasure_requested" in milestones)
    oc = d.get("open_contacts")
    if isinstance(oc, Mapping | list):
        open_contacts = len(oc)
    else:
        open_contacts = int(_num(d.get("open_contacts_count")) or 0)
    group = _str(d.get("routing_group"))
    if group is None and isinstance(oc, Mapping):
        groups = sorted({g for c in oc.values() if isinstance(c, Mapping) and (g := _str(c.get("routing_group")))})
        group = groups[0] if groups else None
    fp = _num(d.get("failed_payments"))
    failed = int(fp) if fp is not None else (1 if "payment_failed" in milestones else 0)
    lang = _str(_first(d, "preferred_language", "language"))
    risk = _num(d.get("churn_risk"))
    return ContextView(
        customer_id=str(d.get("customer_id") or ""),
        routing_group=group or "default",
        preferred_channel=_str(_first(d, "preferred_channel", "last_channel")),
        language=lang if lang and _LANG.match(lang) and len(lang) <= 35 else None,
        timezone=_timezone(d),
        consent=consent,
        opted_out=opted_out,
        erased=erased,
        open_contacts=max(0, open_contacts),
        churn_risk=None if risk is None else min(1.0, max(0.0, risk)),
        sentiments=_sentiments(d.get("sentiment_recent")),
        contacts=_contacts(d.get("contacts"), d.get("intent_history")),
        failed_payments=max(0, failed),
    )
