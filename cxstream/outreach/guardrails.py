"""Guardrails: what stops an outreach that a trigger recommended.  Pure functions.

Checked in this order; the first that blocks names the suppression:

==================  ==========  ================================================================
guardrail           kind        blocks when
==================  ==========  ================================================================
``erased``          final       the customer asked for erasure
``opted_out``       final       the customer opted out of outreach
``consent``         final       no outreach channel the customer consented to
``open_contact``    transient   the customer has a contact open (call, chat, thread) right now
``frequency_cap``   transient   ``cap_max`` outreach already sent within ``cap_window_s``
``quiet_hours``     transient   it is quiet hours in the customer's time zone
==================  ==========  ================================================================

A *final* block drops the recommendation; a *transient* one holds it (pending) until the
guardrail clears or the recommendation expires.  ``holdout`` is not a guardrail but is
reported like one: a control-group customer's outreach is recorded, never sent.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cxstream.outreach.config import OutreachConfig, parse_hhmm
from cxstream.outreach.view import ContextView

ERASED = "erased"
OPTED_OUT = "opted_out"
CONSENT = "consent"
OPEN_CONTACT = "open_contact"
FREQUENCY_CAP = "frequency_cap"
QUIET_HOURS = "quiet_hours"
HOLDOUT = "holdout"
#: Every guardrail, in the order they are checked.
GUARDRAILS: tuple[str, ...] = (ERASED, OPTED_OUT, CONSENT, OPEN_CONTACT, FREQUENCY_CAP, QUIET_HOURS)
FINAL: frozenset[str] = frozenset({ERASED, OPTED_OUT, CONSENT})


def channel_allowed(view: ContextView, channel: str, config: OutreachConfig) -> bool:
    """May outreach use *channel* for this customer?

    >>> channel_allowed(ContextView(customer_id="c", consent={"sms": True}), "sms", OutreachConfig())
    True
    >>> channel_allowed(ContextView(customer_id="c"), "sms", OutreachConfig())
    False
    >>> channel_allowed(ContextView(customer_id="c"), "sms", OutreachConfig(require_explicit_consent=False))
    True
    """
    if channel not in config.outreach_channels:
        return False
    given = view.consent.get(channel)
    return given is True if config.require_explicit_consent else given is not False


def choose_channel(view: ContextView, config: OutreachConfig, trigger: str | None = None) -> str | None:
    """The channel to use: the trigger's own, else the customer's preferred one, else the first
    consented channel in ``outreach_channels`` order; None when none is consented.

    >>> v = ContextView(customer_id="c", preferred_channel="email", consent={"email": True, "voice": True, "sms": True})
    >>> choose_channel(v, OutreachConfig(), "churn_risk"), choose_channel(v, OutreachConfig(), "abandoned_contact")
    ('email', 'voice')
    >>> choose_channel(ContextView(customer_id="c", preferred_channel="voice", consent={"sms": True}), OutreachConfig())
    'sms'
    """
    wanted = [config.trigger(trigger).channel if trigger else None, view.preferred_channel, *config.outreach_channels]
    for ch in wanted:
        if ch and channel_allowed(view, ch, config):
            return ch
    return None


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def customer_zone(view: ContextView, config: OutreachConfig) -> ZoneInfo:
    """The customer's time zone, or the configured default when absent or unknown.

    >>> customer_zone(ContextView(customer_id="c", timezone="Asia/Tokyo"), OutreachConfig()).key
    'Asia/Tokyo'
    >>> customer_zone(ContextView(customer_id="c", timezone="Mars/Olympus"), OutreachConfig()).key
    'UTC'
    """
    zone = _zone(view.timezone) if view.timezone else None
    if zone is None:
        zone = _zone(config.default_timezone) or ZoneInfo("UTC")
    return zone


def local_minutes(now: float, zone: ZoneInfo) -> int:
    """Minutes after local midnight at event time *now* in *zone*.

    >>> local_minutes(0.0, ZoneInfo("UTC")), local_minutes(0.0, ZoneInfo("America/New_York"))
    (0, 1140)
    """
    t = datetime.fromtimestamp(now, zone)
    return t.hour * 60 + t.minute


def in_quiet_hours(now: float, view: ContextView, config: OutreachConfig) -> bool:
    """Is it quiet hours for this customer (in their time zone) at event time *now*?

    1 January 2024 12:00 UTC is 21:00 in Tokyo (quiet) and 07:00 in New York (quiet), but
    noon in London:

    >>> noon = 1704110400.0
    >>> [in_quiet_hours(noon, ContextView(customer_id="c", timezone=tz), OutreachConfig())
    ...  for tz in ("Asia/Tokyo", "America/New_York", "Europe/London")]
    [True, True, False]
    """
    start, end = parse_hhmm(config.quiet_start), parse_hhmm(config.quiet_end)
    if start == end:
        return False
    m = local_minutes(now, customer_zone(view, config))
    return start <= m < end if start < end else (m >= start or m < end)


def quiet_hours_end(now: float, view: ContextView, config: OutreachConfig) -> float:
    """Event time at which the current quiet period ends (*now* if not in quiet hours).

    >>> noon = 1704110400.0  # 07:00 in New York, quiet until 08:00
    >>> quiet_hours_end(noon, ContextView(customer_id="c", timezone="America/New_York"), OutreachConfig()) - noon
    3600.0
    """
    if not in_quiet_hours(now, view, config):
        return now
    zone = customer_zone(view, config)
    end = parse_hhmm(config.quiet_end)
    t = datetime.fromtimestamp(now, zone)
    target = t.replace(hour=end // 60 % 24, minute=end % 60, second=0, microsecond=0)
    out = target.timestamp()
    if out <= now:
        out = datetime.fromtimestamp(now + 86400.0, zone).replace(hour=end // 60 % 24, minute=end % 60, second=0, microsecond=0).timestamp()
    return out


def sent_in_window(sent: list[float], now: float, config: OutreachConfig) -> int:
    """How many outreach were sent within the cap window before *now*.

    >>> sent_in_window([0.0, 500_000.0], 600_000.0, OutreachConfig())
    2
    >>> sent_in_window([0.0, 500_000.0], 700_000.0, OutreachConfig())
    1
    """
    return sum(1 for t in sent if 0.0 <= now - t < config.cap_window_s)


def in_holdout(customer_id: str, config: OutreachConfig) -> bool:
    """Is this customer in the control group (deterministic by id and salt)?

    >>> in_holdout("c1", OutreachConfig()), in_holdout("c1", OutreachConfig(holdout_fraction=1.0))
    (False, True)
    """
    if config.holdout_fraction <= 0.0:
        return False
    h = hashlib.blake2b(f"{config.holdout_salt}\x1f{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64 < config.holdout_fraction


def check(view: ContextView, sent: list[float], now: float, config: OutreachConfig) -> str | None:
    """The first guardrail that blocks an outreach to this customer now, or None.

    >>> ok = ContextView(customer_id="c", consent={"email": True}, timezone="Europe/London")
    >>> noon = 1704110400.0
    >>> check(ok, [], noon, OutreachConfig()) is None
    True
    >>> import msgspec
    >>> check(msgspec.structs.replace(ok, open_contacts=1), [], noon, OutreachConfig())
    'open_contact'
    >>> check(ok, [noon - 3600], noon, OutreachConfig())
    'frequency_cap'
    >>> check(msgspec.structs.replace(ok, erased=True, opted_out=True), [], noon, OutreachConfig())
    'erased'
    """
    if view.erased:
        return ERASED
    if view.opted_out:
        return OPTED_OUT
    if choose_channel(view, config) is None:
        return CONSENT
    if view.open_contacts > 0:
        return OPEN_CONTACT
    if sent_in_window(sent, now, config) >= config.cap_max:
        return FREQUENCY_CAP
    if in_quiet_hours(now, view, config):
        return QUIET_HOURS
    return None
