"""Live statistics per queue and per routing group.

Formulas (T = the queue's SLA target, short abandon = abandoned before ``short_abandon_s``):

- ``service_level`` = answered within T / (answered + abandoned - short abandons).
  Contacts still waiting are not counted; short abandons are excluded from numerator and
  denominator.  ``None`` until something has been answered or abandoned.
- ``asa_s`` = mean of (accepted - opened) over answered contacts.
- ``abandon_rate`` = abandoned / (answered + abandoned) (short abandons included).
- ``aht_s`` = mean of (completed - accepted) over completed contacts.
- ``occupancy`` = seconds advisors spent holding contacts of the queue / staffed seconds
  of the whole group (so the queues add up to the group's occupancy).
"""

from __future__ import annotations

import msgspec


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


def summary(s: QueueStats, waiting: int, longest_wait_s: float, staffed_s: float) -> dict[str, float | int | None]:
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
        "occupancy": s.handle_s / staffed_s if staffed_s > 0 else None,
        **{f: getattr(s, f) for f in s.__struct_fields__ if f not in ("wait_answered_s", "handle_s")},
    }
