"""Outreach configuration: one :class:`OutreachConfig` per routing group.

Everything the outreach core decides with is here, so the same config and the same
input stream give the same outreach events (and ids).  All durations are seconds of
event time; the defaults below are the documented defaults (``docs/OUTREACH.md``).
"""

from __future__ import annotations

from typing import Literal

import msgspec

TriggerName = Literal[
    "churn_risk",
    "repeat_contact",
    "negative_sentiment",
    "abandoned_contact",
    "payment_failed",
    "business_event",
    "sla_breached",
]
#: Every trigger, in the order used to break priority ties.
TRIGGERS: tuple[str, ...] = (
    "abandoned_contact",
    "payment_failed",
    "sla_breached",
    "repeat_contact",
    "churn_risk",
    "business_event",
    "negative_sentiment",
)
#: Triggers that watch a condition of the context (re-checked on every evaluation; a
#: pending recommendation is cancelled when the condition clears).  The others fire on
#: one incoming event.
LEVEL_TRIGGERS: frozenset[str] = frozenset({"churn_risk", "repeat_contact", "negative_sentiment"})

HOUR = 3600.0
DAY = 86400.0


class TriggerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How one trigger behaves.

    ``expiry_s``: how long a recommendation stays valid after the trigger fired: it is the
    event's ``expires_at``, and a recommendation held back by a transient guardrail (open
    contact, frequency cap, quiet hours) is dropped when it expires unsent.
    ``cooldown_s``: the same trigger with the same key (contact, intent, business event...)
    does not fire again within this time.  ``channel``: a channel to prefer for this
    trigger over the customer's preferred one (e.g. ``voice`` for a call-back), used
    only when consented.
    """

    enabled: bool = True
    priority: int = 5
    expiry_s: float = 2 * DAY
    cooldown_s: float = 7 * DAY
    channel: str | None = None


def _default_triggers() -> dict[str, TriggerSettings]:
    return {
        "abandoned_contact": TriggerSettings(priority=8, expiry_s=4 * HOUR, cooldown_s=1 * DAY, channel="voice"),
        "payment_failed": TriggerSettings(priority=7, expiry_s=3 * DAY, cooldown_s=3 * DAY),
        "sla_breached": TriggerSettings(priority=6, expiry_s=1 * DAY, cooldown_s=1 * DAY),
        "repeat_contact": TriggerSettings(priority=6, expiry_s=2 * DAY, cooldown_s=3 * DAY),
        "churn_risk": TriggerSettings(priority=5, expiry_s=3 * DAY, cooldown_s=0.0),
        "business_event": TriggerSettings(priority=5, expiry_s=2 * DAY, cooldown_s=7 * DAY),
        "negative_sentiment": TriggerSettings(priority=4, expiry_s=3 * DAY, cooldown_s=0.0),
    }


class OutreachConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How one routing group reaches out.

    >>> c = OutreachConfig()
    >>> c.trigger("churn_risk").priority, c.churn_rearm_below
    (5, 0.5)
    >>> OutreachConfig(churn_threshold=0.7, churn_hysteresis=0.2).churn_rearm_below
    0.5
    """

    triggers: dict[str, TriggerSettings] = msgspec.field(default_factory=_default_triggers)

    # --- churn_risk: fires when churn_risk >= threshold, then not again until the risk
    # has fallen below threshold - hysteresis (re-armed) and crossed the threshold again.
    churn_threshold: float = 0.6
    churn_hysteresis: float = 0.1

    # --- repeat_contact: >= repeat_min_contacts contacts with the same intent opened within
    # repeat_window_s, none of them resolved (resolved is not True).
    repeat_window_s: float = 72 * HOUR
    repeat_min_contacts: int = 2

    # --- negative_sentiment: the last negative_streak inbound messages (within
    # negative_window_s) all scored <= negative_threshold (VADER compound; VADER calls
    # <= -0.05 negative).  Re-armed when a message scores above the threshold.
    negative_threshold: float = -0.05
    negative_streak: int = 3
    negative_window_s: float = 7 * DAY

    # --- payment_failed: fires on a payment_failed interaction/outcome when the customer
    # has at least this many recent failed payments (the event itself counts).
    payment_min_failures: int = 1

    # --- business_event: InteractionEvent kind=business_event whose attribute ``event``
    # (or ``name``) is listed here (empty: any), and OutcomeEvent kinds listed here.
    business_events: list[str] = msgspec.field(default_factory=list)
    business_outcome_kinds: list[str] = msgspec.field(default_factory=lambda: ["complaint"])

    # --- guardrails
    #: At most ``cap_max`` outreach events per customer within ``cap_window_s``.
    cap_max: int = 1
    cap_window_s: float = 7 * DAY
    #: Quiet hours in the customer's local time, "HH:MM" (may wrap midnight); equal = none.
    quiet_start: str = "21:00"
    quiet_end: str = "08:00"
    #: Time zone used when the customer's context has none (IANA name).
    default_timezone: str = "UTC"
    #: A channel may be used only when the context says consent[channel] is True (explicit
    #: opt-in).  False: any channel not explicitly refused (consent[channel] is False).
    require_explicit_consent: bool = True
    #: Consent keys which, when False, opt the customer out of all outreach.
    opt_out_keys: list[str] = msgspec.field(default_factory=lambda: ["outreach", "all", "contact"])
    #: Channels outreach can be sent on, in fallback order after the trigger's and the
    #: customer's preferred channel.
    outreach_channels: list[str] = msgspec.field(default_factory=lambda: ["email", "sms", "app", "voice", "chat", "social"])
    #: Share of customers kept as a control group (deterministic by customer id): triggers
    #: fire and guardrails apply, but nothing is sent; their outcomes measure lift.
    holdout_fraction: float = 0.0
    holdout_salt: str = "cx-outreach"

    # --- closing the loop
    #: Outcomes up to this long after an outreach are attributed to it.
    attribution_window_s: float = 30 * DAY

    # --- bounds on the per-customer state
    max_pending: int = 8
    max_open: int = 8
    max_marks: int = 16

    def trigger(self, name: str) -> TriggerSettings:
        """The settings of trigger *name* (documented defaults for a trigger not configured)."""
        got = self.triggers.get(name)
        if got is not None:
            return got
        return _default_triggers().get(name, TriggerSettings(enabled=False))

    def enabled(self, name: str) -> bool:
        """Is trigger *name* on?

        >>> OutreachConfig(triggers={"churn_risk": TriggerSettings(enabled=False)}).enabled("churn_risk")
        False
        """
        return self.trigger(name).enabled

    @property
    def churn_rearm_below(self) -> float:
        """Churn risk below which the churn trigger re-arms."""
        return round(self.churn_threshold - self.churn_hysteresis, 10)


class OutreachSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The outreach configs of every routing group, with a default for groups not listed.

    >>> s = OutreachSettings(groups={"vip": OutreachConfig(cap_max=2)})
    >>> s.for_group("vip").cap_max, s.for_group("other").cap_max
    (2, 1)
    """

    default: OutreachConfig = msgspec.field(default_factory=OutreachConfig)
    groups: dict[str, OutreachConfig] = msgspec.field(default_factory=dict)

    def for_group(self, group: str | None) -> OutreachConfig:
        return self.groups.get(group or "default", self.default)


def parse_hhmm(text: str) -> int:
    """Minutes after midnight of an ``"HH:MM"`` string.

    >>> parse_hhmm("21:30"), parse_hhmm("08:00"), parse_hhmm("24:00")
    (1290, 480, 1440)
    """
    hh, _, mm = text.strip().partition(":")
    minutes = int(hh) * 60 + int(mm or 0)
    if not 0 <= minutes <= 1440:
        raise ValueError(f"not a time of day: {text!r}")
    return minutes
