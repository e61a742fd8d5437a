"""The advisor roster: presence, skills, languages, per-channel capacity, load and time accounting.

Pure functions over :class:`AdvisorState` records (mutable ``msgspec`` structs that
are part of the router state and serialise with it).
"""

from __future__ import annotations

import msgspec
from river import stats

from cxstream.routing.config import RoutingConfig

#: Presences in which an advisor counts as staffed (logged in and working).
STAFFED_PRESENCE = frozenset({"available", "busy", "wrap_up"})


class Learned(msgspec.Struct, kw_only=True, array_like=True):
    """A running mean of handle time (seconds) that keeps adapting, and how many samples fed it.

    The arithmetic is River's :class:`river.stats.Mean`, restored from ``(mean_s, n)`` (a
    weighted update) so the state stays two JSON numbers: the mean of every sample while there
    are fewer than ``1 / alpha``, then an exponential moving average with factor *alpha*
    (each new sample weighs ``max(1 / n, alpha)``), so an advisor who improves is seen to.
    Saved as ``[mean_s, n]`` (``array_like``, like the other structs of the router state).
    """

    mean_s: float = 0.0
    n: int = 0

    def update(self, value: float, alpha: float) -> None:
        """Feed one handle time.

        >>> m = Learned(); m.update(100.0, 0.5); m.update(200.0, 0.5); (m.mean_s, m.n)
        (150.0, 2)
        >>> m.update(300.0, 0.5); m.mean_s  # past 1/alpha samples: moving average, new sample weighs 0.5
        225.0
        >>> m = Learned(); [m.update(x, 0.05) for x in (100.0, 200.0, 300.0)] and None; m.mean_s  # plain mean
        200.0
        """
        mean = stats.Mean()
        past = min(float(self.n), 1.0 / alpha - 1.0) if alpha > 0 else float(self.n)
        if self.n and past > 0:
            mean.update(self.mean_s, past)
        mean.update(value)
        self.mean_s = mean.get()
        self.n += 1


class AdvisorState(msgspec.Struct, kw_only=True, array_like=True):
    """What the router knows of one advisor (human agent).

    Saved as a JSON array in field order (``array_like``: no field names in the router state);
    a field added later must go at the end, with a default.
    """

    advisor_id: str
    logged_in: bool = False
    presence: str = "offline"
    skills: dict[str, int] = {}
    languages: list[str] = []
    capacity: dict[str, int] | None = None  #: None: the group's default capacity
    load: dict[str, int] = {}  #: channel -> contacts held (offered or active)
    held: list[str] = []  #: contact ids held, in the order taken
    idle_since: float = 0.0
    day: int = -1
    handled_today: int = 0
    handled: int = 0
    staffed_s: float = 0.0
    busy_s: float = 0.0
    mark: float = 0.0  #: time up to which staffed_s / busy_s are accounted
    learned: dict[str, Learned] = {}  #: skill key -> handle time learned online
    #: handle time / the group's mean for the same key at that time, over every key: how fast this
    #: advisor is overall (the prior of a key the advisor has few samples of; see ``policy.expected_handle``)
    pace: Learned = msgspec.field(default_factory=Learned)
    #: contact id -> its statistics queue, for the contacts held (``held``)
    held_queues: dict[str, str] = {}
    #: busy seconds spent holding contacts, by statistics queue: each second holding k contacts counts 1/k to each
    #: one's queue (so they add up to busy_s less the time busy or in wrap-up holding none)
    busy_queues_s: dict[str, float] = {}


def is_staffed(adv: AdvisorState) -> bool:
    """Logged in and in a working presence (not away/offline)."""
    return adv.logged_in and adv.presence in STAFFED_PRESENCE


def is_busy(adv: AdvisorState) -> bool:
    """Holding a contact, or in busy / wrap-up presence."""
    return bool(adv.held) or adv.presence in ("busy", "wrap_up")


def account(adv: AdvisorState, now: float) -> None:
    """Accumulate staffed and busy seconds up to *now* (call before every change)."""
    dt = now - adv.mark
    if dt > 0:
        if is_staffed(adv):
            adv.staffed_s += dt
            if is_busy(adv):
                adv.busy_s += dt
                for queue, share in holding_shares(adv, dt).items():
                    adv.busy_queues_s[queue] = adv.busy_queues_s.get(queue, 0.0) + share
        adv.mark = now
    elif adv.mark == 0.0:
        adv.mark = now


def holding_shares(adv: AdvisorState, busy_s: float) -> dict[str, float]:
    """*busy_s* busy seconds split over the queues of the contacts the advisor holds (equal shares per contact).

    >>> a = AdvisorState(advisor_id="a", held=["c1", "c2"], held_queues={"c1": "chat", "c2": "chat:cards"})
    >>> holding_shares(a, 10.0)
    {'chat': 5.0, 'chat:cards': 5.0}
    """
    out: dict[str, float] = {}
    for cid in adv.held:
        queue = adv.held_queues.get(cid, "")  # "": held before the router recorded queues
        out[queue] = out.get(queue, 0.0) + busy_s / len(adv.held)
    return out


def capacity(adv: AdvisorState, channel: str, cfg: RoutingConfig) -> int:
    """How many contacts of *channel* this advisor may hold at once."""
    if adv.capacity is None:
        return cfg.capacity_for(channel)
    return int(adv.capacity.get(channel, 0))


def has_room(adv: AdvisorState, channel: str, cfg: RoutingConfig) -> bool:
    """Free capacity on *channel*, honouring exclusive channels (voice blocks other work).

    >>> cfg = RoutingConfig()
    >>> a = AdvisorState(advisor_id="a", load={"chat": 1}, held=["c1"])
    >>> has_room(a, "chat", cfg), has_room(a, "voice", cfg)
    (True, False)
    """
    total = len(adv.held)
    if channel in cfg.exclusive_channels:
        return total == 0 and capacity(adv, channel, cfg) > 0
    if any(adv.load.get(ch, 0) > 0 for ch in cfg.exclusive_channels):
        return False
    return adv.load.get(channel, 0) < capacity(adv, channel, cfg)


def can_take_work(adv: AdvisorState) -> bool:
    """Logged in and available: the only state in which offers are made."""
    return adv.logged_in and adv.presence == "available"


def speaks(adv: AdvisorState, language: str | None) -> bool:
    """Does the advisor serve *language*?  An advisor with no languages listed serves any.

    Tags match on their primary subtag, case-insensitively ('en-GB' is served by 'en').

    >>> speaks(AdvisorState(advisor_id="a", languages=["en", "fr"]), "EN-gb")
    True
    >>> speaks(AdvisorState(advisor_id="a", languages=["fr"]), "en")
    False
    """
    if not language or not adv.languages:
        return True
    want = language.split("-")[0].lower()
    return any(lang.split("-")[0].lower() == want for lang in adv.languages)


def take(adv: AdvisorState, contact_id: str, channel: str, now: float, queue: str | None = None) -> None:
    """Reserve capacity for a contact (an offer or an accepted contact) of statistics *queue* (default: *channel*)."""
    account(adv, now)
    adv.held.append(contact_id)
    adv.held_queues[contact_id] = queue or channel
    adv.load[channel] = adv.load.get(channel, 0) + 1


def release(adv: AdvisorState, contact_id: str, channel: str, now: float) -> bool:
    """Free the capacity a contact held; returns False if the advisor did not hold it."""
    if contact_id not in adv.held:
        return False
    account(adv, now)
    adv.held.remove(contact_id)
    adv.held_queues.pop(contact_id, None)
    left = adv.load.get(channel, 0) - 1
    if left > 0:
        adv.load[channel] = left
    else:
        adv.load.pop(channel, None)
    if not adv.held:
        adv.idle_since = now
    return True


def roll_day(adv: AdvisorState, now: float) -> None:
    """Reset today's counters when the UTC day of *now* differs from the advisor's."""
    day = int(now // 86400)
    if day != adv.day:
        adv.day = day
        adv.handled_today = 0
