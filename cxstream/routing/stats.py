"""Live statistics per queue and per routing group.

Formulas (T = the queue's SLA target, short abandon = abandoned before ``short_abandon_s``):

- ``service_level`` = answered within T / (answered + abandoned - short abandons).
  Contacts still waiting are not counted; short abandons are excluded from numerator and
  denominator.  ``None`` until something has been answered or abandoned.
- ``asa_s`` = mean of (accepted - opened) over answered contacts.
- ``abandon_rate`` = abandoned / (answered + abandoned) (short abandons included).
- ``aht_s`` = mean of (completed - accepted) over completed contacts.
- ``occupancy`` of the group = busy seconds / staffed seconds, up to now: staffed = logged in
  and available, busy or in wrap-up; busy = holding at least one contact (offered or accepted)
  or in busy / wrap-up presence.  Of a queue = the busy seconds spent holding its contacts /
  the same staffed seconds, a second holding k contacts counting 1/k to each one's queue; so
  the queues' occupancies add up to the group's, less the share of time busy or in wrap-up
  holding no contact.  Both are live (a contact still held counts) and rounded to 4 decimals.
- ``advisors``: the logged-in advisors, each counted once by presence: ``away`` (away, or not
  working), ``busy`` (holding a contact, or in busy / wrap-up presence), ``available`` (the
  others: available and holding nothing); they add up to ``logged_in``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from cxstream.routing.queue import ContactState
from cxstream.routing.roster import AdvisorState, holding_shares, is_busy, is_staffed

#: Decimals of an occupancy: sums of float seconds are not exact (no 0.99999 for "all the time").
OCCUPANCY_DECIMALS = 4


class QueueStats(msgspec.Struct, kw_only=True, array_like=True):
    """Counters of one queue, updated as the router decides (saved as an array, ``array_like``)."""

    offered: int = 0
    answered: int = 0
    answered_in_sla: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    closed_unanswered: int = 0
    wait_answered_s: float = 0.0
    completed: int = 0
    handle_s: float = 0.0
    sla_breaches: int = 0
    escalations: int = 0
    overflows: int = 0
    offers: int = 0
    offers_rejected: int = 0
    offer_timeouts: int = 0
    transfers: int = 0
    holds: int = 0  #: contacts held for a faster advisor about to free up (``default`` policy)
    #: contact requests the router could not take (a ``rejected`` routing event each, with the reason)
    rejected: int = 0
    #: requests for a contact the router already owns (the same customer's contact sent again): not a new contact
    duplicate_requests: int = 0
    #: contacts answered, transferred, then abandoned while waiting for the next advisor: counted answered, not abandoned
    abandoned_after_answer: int = 0

    def merge(self, other: QueueStats) -> None:
        """Add *other*'s counters to this one."""
        for f in self.__struct_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))


def service_level(s: QueueStats) -> float | None:
    """Answered within target / (answered + abandoned - short abandons).

    >>> service_level(QueueStats(answered=8, answered_in_sla=6, abandoned=3, short_abandoned=1))
    0.6
    """
    den = s.answered + s.abandoned - s.short_abandoned
    return s.answered_in_sla / den if den > 0 else None


def occupancy(busy_s: float, staffed_s: float) -> float | None:
    """Busy seconds / staffed seconds, rounded; None before anyone was staffed.

    >>> occupancy(0.1 + 0.2, 0.3), occupancy(299.997, 300.0), occupancy(0.0, 0.0)
    (1.0, 1.0, None)
    """
    return round(busy_s / staffed_s, OCCUPANCY_DECIMALS) if staffed_s > 0 else None


def summary(
    s: QueueStats, waiting: int, longest_wait_s: float, staffed_s: float, busy_s: float = 0.0
) -> dict[str, float | int | None]:
    """The figures an operator watches, from the counters of one queue (or the group).

    >>> summary(QueueStats(answered=2, wait_answered_s=10.0, abandoned=2), 1, 5.0, 0.0)["abandon_rate"]
    0.5
    """
    resolved = s.answered + s.abandoned
    return {
        "waiting": waiting,
        "longest_wait_s": round(longest_wait_s, 3),
        "service_level": service_level(s),
        "asa_s": s.wait_answered_s / s.answered if s.answered else None,
        "abandon_rate": s.abandoned / resolved if resolved else None,
        "aht_s": s.handle_s / s.completed if s.completed else None,
        "occupancy": occupancy(busy_s, staffed_s),
        **{f: getattr(s, f) for f in s.__struct_fields__ if f not in ("wait_answered_s", "handle_s")},
    }


def live(
    group: str, policy: str, now: float, advisors: Iterable[AdvisorState], contacts: Iterable[ContactState],
    queues: dict[str, QueueStats],
) -> dict[str, Any]:
    """A routing group's live statistics (``GET /queues``): per queue, the total and the advisors (formulas above)."""
    staffed = busy = 0.0
    busy_by_queue: dict[str, float] = {}
    counts = {"logged_in": 0, "available": 0, "busy": 0, "away": 0}
    for a in advisors:
        extra = max(0.0, now - a.mark) if is_staffed(a) else 0.0  # not accounted yet: since the advisor's last change
        live_busy = extra if is_busy(a) else 0.0
        staffed += a.staffed_s + extra
        busy += a.busy_s + live_busy
        for q, v in a.busy_queues_s.items():
            busy_by_queue[q] = busy_by_queue.get(q, 0.0) + v
        for q, v in holding_shares(a, live_busy).items():
            busy_by_queue[q] = busy_by_queue.get(q, 0.0) + v
        if a.logged_in:
            counts["logged_in"] += 1
            counts["away" if not is_staffed(a) else "busy" if is_busy(a) else "available"] += 1
    waiting: dict[str, list[float]] = {}
    for c in contacts:
        if not c.answered and c.status != "active":
            waiting.setdefault(c.queue, []).append(max(0.0, now - c.opened_at))
    per_queue: dict[str, Any] = {}
    total = QueueStats()
    for name in sorted(set(queues) | set(waiting)):
        st = queues.get(name, QueueStats())
        total.merge(st)
        w = waiting.get(name, [])
        per_queue[name] = summary(st, len(w), max(w, default=0.0), staffed, busy_by_queue.get(name, 0.0))
    all_w = [x for w in waiting.values() for x in w]
    return {
        "group": group,
        "policy": policy,
        "clock": now,
        "queues": per_queue,
        "total": summary(total, len(all_w), max(all_w, default=0.0), staffed, busy),
        "advisors": counts,
    }
