"""Routing configuration: one :class:`RoutingConfig` per routing group.

Everything the router decides with is here, so a replay with the same config and
the same input stream gives the same outputs.  The config is stored inside the
router state (``Router.to_state``), so a restored router keeps deciding the same way.
"""

from __future__ import annotations

from typing import Literal

import msgspec

#: ``fifo``: first come first served, longest-idle eligible advisor, no priorities, no escalation.
#: ``skills``: ``fifo`` order, but the advisor with the best proficiency for the contact's skill
#: (configured 1-5 proficiency blended with handle times learned online) wins.
#: ``default``: predictive: the eligible free advisor with the shortest *expected* handle time
#: (learned online per advisor, call type/intent and channel), with idle-time fairness, a credit
#: for the customer's last advisor, priorities with aging, SLA escalation, and an SLA-bounded
#: hold of a contact for a faster advisor about to free up (see ``docs/ROUTING.md``).
PolicyName = Literal["fifo", "skills", "default"]
POLICIES: tuple[str, ...] = ("fifo", "skills", "default")


class Weights(msgspec.Struct, frozen=True, kw_only=True):
    """Weights of the advisor score (see ``docs/ROUTING.md``); each term is in [0, 1] before weighting."""

    proficiency: float = 0.4  #: configured proficiency (1-5) for the contact's intent/skills
    speed: float = 0.5  #: learned: group mean handle time / advisor's own, for this skill
    sticky: float = 0.5  #: the customer's last advisor
    idle: float = 0.15  #: longest idle first (saturates at ``idle_norm_s``)
    fairness: float = 0.1  #: fewer contacts handled today than the busiest advisor


class RoutingConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How one routing group routes.  All durations are seconds of event time.

    >>> RoutingConfig().sla_for("voice"), RoutingConfig().sla_for("email")
    (20.0, 14400.0)
    >>> RoutingConfig(sla_s={"voice": 30.0}).sla_for("voice")
    30.0
    """

    policy: PolicyName = "default"
    #: Service-level target per channel (answer within this many seconds).
    sla_s: dict[str, float] = msgspec.field(
        default_factory=lambda: {
            "voice": 20.0,
            "chat": 60.0,
            "email": 14400.0,
            "sms": 900.0,
            "social": 3600.0,
            "web": 60.0,
            "app": 60.0,
        }
    )
    #: SLA used for a channel missing from ``sla_s``.
    default_sla_s: float = 60.0
    #: Capacity per channel for advisors whose events do not say (voice blocks other work).
    default_capacity: dict[str, int] = msgspec.field(
        default_factory=lambda: {"voice": 1, "chat": 3, "email": 5, "sms": 3, "social": 3, "web": 3, "app": 3}
    )
    #: Channels whose contacts need the advisor's full attention: taken only when the advisor
    #: holds nothing, and while held they block every other channel.
    exclusive_channels: list[str] = msgspec.field(default_factory=lambda: ["voice"])
    #: Escalation steps, as multiples of the channel's SLA: step 1 drops secondary skills,
    #: step 2 widens to every advisor serving the channel and language (any skill, any team),
    #: step 3 overflows (callback / self-service offer is announced; the contact keeps its place).
    escalation_at: list[float] = msgspec.field(default_factory=lambda: [0.5, 1.0, 3.0])
    escalate: bool = True
    #: Queue ordering: effective priority = priority + tier bonus + churn_weight * churn_risk
    #: + waited / (aging_sla_multiple * SLA).  Higher first; ties by arrival order.
    use_priority: bool = True
    aging_sla_multiple: float = 1.0
    churn_weight: float = 3.0
    tier_bonus: dict[str, float] = msgspec.field(default_factory=lambda: {"vip": 4.0, "gold": 2.0, "silver": 1.0})
    #: A re-queued transfer gets this many priority points, and is held this long for
    #: the advisor it was transferred to (if any) before anyone eligible may take it.
    transfer_boost: float = 2.0
    transfer_hold_s: float = 60.0
    #: Offers not answered within this many seconds are withdrawn; the advisor is set away.
    offer_timeout_s: float = 30.0
    #: After this many offers of one contact, it escalates (at least to the widening step).
    max_offers: int = 3
    #: Queue capacity: the most contacts the group's router holds at once (waiting, offered or in
    #: service).  A new contact beyond it is rejected (a ``rejected`` routing event, ``queue_full``),
    #: as a contact centre's queue capacity sends the caller to a message: the router's state is
    #: saved whole after each batch that touches the group (~200 bytes a contact), so an unbounded
    #: queue would grow it past what the broker accepts in one record (the chaos run's overload
    #: stopped both workers with MessageSizeTooLargeError) and slow every batch.
    max_contacts: int = 20_000
    #: Hold a contact for the customer's last advisor this long (per channel; 0 = only a score bonus),
    #: if that advisor is logged in and serves the contact's language.
    sticky_wait_s: dict[str, float] = msgspec.field(default_factory=lambda: {"email": 1800.0, "chat": 30.0})
    idle_norm_s: float = 600.0
    weights: Weights = msgspec.field(default_factory=Weights)
    #: Online handle-time learning: a running mean until ``1 / learn_alpha`` samples, then a moving
    #: average with this factor; ``skills`` trusts an advisor's mean after ``learn_min_samples``.
    learn_alpha: float = 0.01
    learn_min_samples: int = 5
    #: The group's mean per key (the prior of every advisor) adapts more slowly: many advisors feed it.
    learn_group_alpha: float = 0.005
    #: ``default``: an advisor's expected handle time for a key is shrunk toward their prior (the
    #: key's group mean times their overall pace) with the weight of this many samples...
    shrink_samples: float = 10.0
    #: ...and their overall pace toward 1 (the group's mean) with the weight of this many samples.
    pace_shrink_samples: float = 5.0
    #: ``default``: seconds of expected handle time credited to the customer's last advisor.
    sticky_credit_s: float = 30.0
    #: ``default`` idle-time fairness: seconds of expected handle time credited per second idle,
    #: up to ``idle_credit_max_s`` (so of two advisors about as fast, the longer idle wins).
    idle_credit_per_s: float = 0.01
    idle_credit_max_s: float = 3.0
    #: ``default`` predictive hold: a contact the best free advisor could take now waits instead for
    #: a faster advisor expected to free up, if it would still be answered within
    #: ``hold_sla_fraction`` of its SLA and the expected handle time saved exceeds the expected extra
    #: wait by ``hold_min_saving_s``.  Once per contact; 0 turns it off.
    hold_sla_fraction: float = 0.5
    hold_min_saving_s: float = 10.0
    #: Abandons earlier than this are "short" and excluded from the service level.
    short_abandon_s: float = 5.0
    #: Skills a contact requires, by its intent, when the request names none (e.g.
    #: ``{"card_arrival": ["cards"], "refund": ["billing"]}``); the first is the queue's skill.
    intent_skills: dict[str, list[str]] = msgspec.field(default_factory=dict)
    #: Languages as skills: a contact whose language is known (the channel's tag, else the language the
    #: context stage detected in the customer's text) may go only to advisors who serve it (or list no
    #: languages), until the language fallback below.  False: the contact's language is not required.
    language_skills: bool = True
    #: The language fallback: once a contact has waited this multiple of its channel's SLA without an
    #: advisor who serves its language, anyone otherwise eligible may take it (``language_fallback`` 1 in
    #: the assignment's ``reasons``), so a language no logged-in advisor speaks strands no contact.
    #: 0: never (the language stays required however long the contact waits).
    language_fallback_sla: float = 0.5
    #: Number of recently applied input event ids remembered for idempotence.
    dedupe_window: int = 2000

    def skills_for(self, required: list[str], intent: str | None) -> list[str]:
        """The skills a contact requires: as requested, else from its intent.

        >>> RoutingConfig(intent_skills={"refund": ["billing"]}).skills_for([], "refund")
        ['billing']
        >>> RoutingConfig(intent_skills={"refund": ["billing"]}).skills_for(["fraud"], "refund")
        ['fraud']
        """
        if required or not intent:
            return list(required)
        return list(self.intent_skills.get(intent, ()))

    def language_fallback_due(self, channel: str, opened_at: float) -> float | None:
        """When a contact opened at *opened_at* stops requiring its language (None: never).

        >>> RoutingConfig().language_fallback_due("chat", 100.0), RoutingConfig(language_fallback_sla=0).language_fallback_due("chat", 0)
        (130.0, None)
        """
        if not self.language_skills or self.language_fallback_sla <= 0:
            return None
        return opened_at + self.language_fallback_sla * self.sla_for(channel)

    def sla_for(self, channel: str) -> float:
        """The SLA target of *channel* in seconds."""
        return float(self.sla_s.get(channel, self.default_sla_s))

    def capacity_for(self, channel: str) -> int:
        """Default capacity of an advisor on *channel*."""
        return int(self.default_capacity.get(channel, 0))
