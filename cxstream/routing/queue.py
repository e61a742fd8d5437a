"""Waiting contacts and their order: priority with aging, so priority wins over age but nothing starves."""

from __future__ import annotations

from typing import Literal

import msgspec

from cxstream.routing.config import RoutingConfig

ContactStatus = Literal["waiting", "offered", "active"]


class ContactState(msgspec.Struct, kw_only=True, array_like=True):
    """One contact the router owns, from request to completion.

    Saved as a JSON array in field order (``array_like``); a field added later goes at the end.
    """

    contact_id: str
    customer_id: str
    channel: str
    opened_at: float
    queue: str
    seq: int  #: arrival order in the router: the contact's queue position, kept across requeues
    language: str | None = None
    priority: int = 0  #: the business priority of the request (0-10), echoed on the Assignment
    points: float = 0.0  #: static priority points (see :func:`base_priority`); aging is added on top
    required_skills: list[str] = []
    intent: str | None = None
    churn_risk: float | None = None
    tier: str | None = None
    last_advisor_id: str | None = None
    status: ContactStatus = "waiting"
    advisor_id: str | None = None
    assignment_id: str | None = None
    offered_at: float | None = None
    offer_deadline: float | None = None
    accepted_at: float | None = None
    attempts: int = 0  #: offers made so far
    declined: list[str] = []  #: advisors who rejected or let an offer time out
    step: int = 0  #: escalation step reached (0 = none)
    sla_breached: bool = False
    answered: bool = False
    hold_for: str | None = None  #: only this advisor is eligible until ``hold_until``
    hold_until: float = 0.0
    esc_from: float = 0.0  #: escalation timers count from here (opened_at; reset by a transfer)
    #: the router's key of the contact (its dict key; ``contact_key`` on the outputs): the request's
    #: ``contact_key``, else ``contact_id`` (or, when another customer's contact holds that id,
    #: ``schemas.routing.contact_key``).  "" in a state saved before keys: the contact id.
    key: str = ""
    language_relaxed: bool = False  #: past the language fallback: its language is no longer required


def queue_name(channel: str, required_skills: list[str]) -> str:
    """The statistics queue of a contact: its channel and primary skill.

    >>> queue_name("voice", ["cards", "fraud"]), queue_name("chat", [])
    ('voice:cards', 'chat')
    """
    return f"{channel}:{required_skills[0]}" if required_skills else channel


def base_priority(priority: float, tier: str | None, churn_risk: float | None, cfg: RoutingConfig) -> float:
    """Static priority points: business priority + tier bonus + weighted churn risk.

    >>> base_priority(2, "vip", 0.5, RoutingConfig())
    7.5
    """
    points = float(priority) + cfg.tier_bonus.get((tier or "").lower(), 0.0)
    if churn_risk is not None:
        points += cfg.churn_weight * churn_risk
    return points


def effective_priority(c: ContactState, now: float, cfg: RoutingConfig) -> float:
    """Priority points now: static points plus one point per ``aging_sla_multiple`` SLA waited.

    Aging is linear, so a contact with *k* fewer static points overtakes after waiting
    ``k * aging_sla_multiple * SLA`` seconds longer: priority wins, but no one starves.

    >>> cfg = RoutingConfig()
    >>> c = ContactState(contact_id="c", customer_id="u", channel="voice", opened_at=0.0, queue="voice", seq=0, points=1)
    >>> effective_priority(c, 40.0, cfg)
    3.0
    """
    if not cfg.use_priority or cfg.policy == "fifo" or cfg.policy == "skills":
        return 0.0
    waited = max(0.0, now - c.opened_at)
    return c.points + waited / (cfg.aging_sla_multiple * cfg.sla_for(c.channel))


def order(waiting: list[ContactState], now: float, cfg: RoutingConfig) -> list[ContactState]:
    """Waiting contacts in the order they are served: highest effective priority, then arrival.

    >>> cfg = RoutingConfig()
    >>> mk = lambda i, p, t: ContactState(contact_id=i, customer_id="u", channel="voice", opened_at=t, queue="voice", seq=int(t), points=p)
    >>> [c.contact_id for c in order([mk("old", 0, 0.0), mk("vip", 2, 10.0)], 20.0, cfg)]
    ['vip', 'old']
    >>> [c.contact_id for c in order([mk("old", 0, 0.0), mk("vip", 2, 50.0)], 60.0, cfg)]
    ['old', 'vip']
    """
    return sorted(waiting, key=lambda c: (-effective_priority(c, now, cfg), c.seq))
