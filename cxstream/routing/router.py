"""The router of one routing group: a deterministic state machine over :data:`RouterInput`.

``Router.apply(msg)`` returns the outputs the input caused (assignments = offers, and
routing events).  The clock is event time only: the maximum time carried by the inputs
seen so far.  Timers (SLA breach, escalation steps, sticky/transfer holds, offer timeouts)
fire in time order as the clock passes them, each at its own due time, whatever input
advanced the clock; ``next_deadline()`` says when the next one is due so a driver can
send a :class:`RouterTick` then.

Idempotence: input event ids seen recently (a bounded ring, ``dedupe_window``) are
ignored, so an at-least-once redelivery never assigns a contact twice.  Output ids are
hashes of their content, so a replay gives byte-identical outputs.

Cost per input.  Besides the state (:class:`RouterState`) the router keeps indexes derived
from it, never saved and rebuilt by ``from_state``/``reconfigure``:

* per channel, the advisors who could take a contact of it now (logged in, available, room on
  the channel), so a dispatch never scans the roster;
* the waiting contacts, and what changed since the last dispatch: contacts that became waiting
  or whose eligibility widened (escalation step, hold ended) and advisors who gained room or
  became available (or changed skills/languages).  After a dispatch no waiting contact has an
  eligible advisor, so a new offer needs one of those changes: a dispatch looks only at the
  changed contacts against every advisor with room on their channel, and at the changed
  advisors against every waiting contact, in queue order; with nothing changed it offers
  nothing and is skipped.  The winner is the same as a scan of all advisors would pick (score,
  then lowest advisor id: an order-independent maximum);
* a heap of timer due times (lazily invalidated), instead of a scan of every contact per input;
* the encoded JSON of every advisor, contact and queue, re-encoded only when it changed, and the
  dedupe ring in compressed chunks of :data:`RING_CHUNK` ids, each compressed once: ``to_state``
  mostly concatenates cached bytes.
"""

from __future__ import annotations

import functools
import heapq
import zlib
from collections import deque
from collections.abc import Iterable
from itertools import islice
from operator import attrgetter
from typing import Any

import msgspec

from cxstream.routing.config import RoutingConfig
from cxstream.routing.ids import short_id
from cxstream.routing.policy import (
    best_advisor,
    eligible,
    hold_target,
    learn_completion,
    learn_key,
    required_language,
    required_now,
    resolution_key,
    score,
    why_queued,
)
from cxstream.routing.queue import ContactState, base_priority, effective_priority, queue_name
from cxstream.routing.roster import (
    AdvisorState,
    Learned,
    account,
    can_take_work,
    release,
    roll_day,
    speaks,
    take,
)
from cxstream.routing.stats import QueueStats, live
from cxstream.schemas.events import AdvisorEvent, Disposition
from cxstream.schemas.outputs import Assignment, QueuedReason, RoutingEvent
from cxstream.schemas.routing import ContactRequest, ContactUpdate, RouterInput, RouterTick, contact_key

Output = Assignment | RoutingEvent

#: Version of the saved state; 2: advisors/contacts/queues as arrays, the dedupe ring in chunks.
STATE_VERSION = 2

#: Ids per compressed chunk of the dedupe ring in the saved state.
RING_CHUNK = 512


class RouterState(msgspec.Struct, kw_only=True):
    """Everything the router decides with (the dedupe ring aside); :meth:`Router.to_state` saves it."""

    version: int = STATE_VERSION
    group: str
    config: RoutingConfig
    clock: float = 0.0
    seq: int = 0  #: contacts accepted so far (queue positions)
    out_seq: int = 0  #: routing events emitted so far
    advisors: dict[str, AdvisorState] = {}
    contacts: dict[str, ContactState] = {}
    queues: dict[str, QueueStats] = {}
    learned: dict[str, Learned] = {}  #: group mean handle time per skill key


class SavedState(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The saved form (JSON) of a router: :class:`RouterState` plus the dedupe ring.

    Advisors and contacts are lists in the order of their dicts (each an array, see
    :class:`AdvisorState`); the ring is ``ring_chunks`` (each zlib-compressed JSON of
    :data:`RING_CHUNK` ids, oldest first) minus their first ``ring_skip`` ids, then ``ring_tail``.
    """

    version: int
    group: str
    config: RoutingConfig
    clock: float
    seq: int
    out_seq: int
    advisors: list[AdvisorState]
    contacts: list[ContactState]
    queues: dict[str, QueueStats]
    learned: dict[str, Learned]
    ring_skip: int
    ring_chunks: list[bytes]
    ring_tail: list[str]


class _Version(msgspec.Struct):
    version: Any = None


_NONE: frozenset[str] = frozenset()
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(SavedState)
_IDS = msgspec.json.Decoder(list[str])


def _tail_json(ids: list[str]) -> bytearray:
    """*ids* encoded, each after a comma (the JSON array without its brackets, after a comma)."""
    return bytearray(b"," + _ENCODER.encode(ids)[1:-1]) if ids else bytearray()


class _Ring:
    """The last input event ids (a deque and a set), and their saved form kept up to date in chunks.

    Invariant: ``ids`` == the ids of ``chunks`` (decoded, concatenated) minus the first ``skip``,
    then ``tail``; ``chunks`` hold the encoded JSON string (base64 of the zlib-compressed JSON
    array) of :data:`RING_CHUNK` ids each, made once when the tail fills up.
    """

    __slots__ = ("chunks", "ids", "seen", "skip", "tail", "tail_json")

    def __init__(self) -> None:
        self.ids: deque[str] = deque()
        self.seen: set[str] = set()
        self.chunks: deque[bytes] = deque()
        self.skip = 0
        self.tail: list[str] = []
        self.tail_json = bytearray()  #: the tail's ids encoded, each after a comma

    def add(self, event_id: str, window: int) -> None:
        self.ids.append(event_id)
        self.seen.add(event_id)
        self.tail.append(event_id)
        self.tail_json += b"," + _ENCODER.encode(event_id)
        if len(self.tail) >= RING_CHUNK:
            self.chunks.append(_ENCODER.encode(zlib.compress(_ENCODER.encode(self.tail), 6)))
            self.tail = []
            self.tail_json = bytearray()
        while len(self.ids) > window:
            self.seen.discard(self.ids.popleft())
            if self.chunks:
                self.skip += 1
                if self.skip >= RING_CHUNK:
                    self.chunks.popleft()
                    self.skip = 0
            else:
                del self.tail[0]
                self.tail_json = _tail_json(self.tail)

    def parts(self, out: list[bytes]) -> None:
        """Append the ring's fields (``ring_skip``, ``ring_chunks``, ``ring_tail``) to *out*."""
        out.append(b'"ring_skip":%d,"ring_chunks":[' % self.skip)
        out.append(b",".join(self.chunks))
        out.append(b'],"ring_tail":[')
        out.append(bytes(self.tail_json[1:]))
        out.append(b"]")

    @classmethod
    def restore(cls, skip: int, chunks: list[bytes], tail: list[str]) -> _Ring:
        ring = cls()
        ids: list[str] = []
        for raw in chunks:
            try:
                part = _IDS.decode(zlib.decompress(raw))
            except (zlib.error, msgspec.DecodeError) as exc:
                raise ValueError(f"not a router state: a dedupe ring chunk is corrupt ({exc})") from exc
            if len(part) != RING_CHUNK:
                raise ValueError(f"not a router state: a dedupe ring chunk holds {len(part)} ids, not {RING_CHUNK}")
            ids.extend(part)
            ring.chunks.append(_ENCODER.encode(raw))
        if not 0 <= skip < (RING_CHUNK if chunks else 1) or len(tail) >= RING_CHUNK:
            raise ValueError(f"not a router state: dedupe ring skip {skip} / tail {len(tail)} out of range")
        ids.extend(tail)
        ring.ids = deque(ids[skip:])
        ring.seen = set(ring.ids)
        ring.skip = skip
        ring.tail = list(tail)
        ring.tail_json = _tail_json(ring.tail)
        return ring


class _Block:
    __slots__ = ("items", "joined")

    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}  #: key -> encoded item
        self.joined = b""  #: the items, each after a comma


_JOINED = attrgetter("joined")


class _Section:
    """The encoded items of one list (or object) of the saved state, in insertion order.

    Items sit in blocks of :attr:`BLOCK`; each block keeps its items joined, so a change
    costs one block's join, and the state is assembled from a few dozen blocks.
    """

    __slots__ = ("blocks", "changed", "where")

    BLOCK = 32

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self.blocks: list[_Block] = []
        self.where: dict[str, _Block] = {}
        keys = list(keys)
        for i in range(0, len(keys), self.BLOCK):
            block = _Block()
            block.items = dict.fromkeys(keys[i : i + self.BLOCK], b"")
            self.blocks.append(block)
            self.where.update(dict.fromkeys(block.items, block))
        self.changed: set[_Block] = set(self.blocks)

    def add(self, key: str) -> None:
        """Append *key* (its bytes set later with :meth:`set`)."""
        if not self.blocks or len(self.blocks[-1].items) >= self.BLOCK:
            self.blocks.append(_Block())
        block = self.blocks[-1]
        block.items[key] = b""
        self.changed.add(block)
        self.where[key] = block

    def set(self, key: str, data: bytes) -> None:
        block = self.where[key]
        block.items[key] = data
        self.changed.add(block)

    def remove(self, key: str) -> None:
        block = self.where.pop(key)
        del block.items[key]
        if block.items:
            self.changed.add(block)
        else:
            self.blocks.remove(block)  # by identity
            self.changed.discard(block)

    def parts(self, out: list[bytes]) -> None:
        """Append the items, comma-separated, to *out* (for one final join)."""
        for block in self.changed:
            block.joined = b"," + b",".join(block.items.values())
        self.changed.clear()
        if self.blocks:
            out.append(self.blocks[0].joined[1:])
            out.extend(map(_JOINED, islice(self.blocks, 1, None)))


@functools.lru_cache(maxsize=1024)
def _primaries(languages: tuple[str, ...]) -> tuple[str, ...]:
    """The primary subtags of *languages*, lower case, each once (what ``roster.speaks`` compares)."""
    return tuple(dict.fromkeys(lang.split("-")[0].lower() for lang in languages))


def _keyed(c: ContactState) -> ContactState:
    """*c* with its key set (a state saved before keys has none: the contact id was the key)."""
    if not c.key:
        c.key = c.contact_id
    return c


def input_time(msg: RouterInput) -> float:
    """The event time an input carries."""
    if isinstance(msg, ContactRequest):
        return msg.opened_at
    if isinstance(msg, AdvisorEvent):
        return msg.occurred_at
    return msg.at


class Router:
    """Routes the contacts of one routing group to its advisors.  See the module docstring."""

    def __init__(self, group: str = "default", config: RoutingConfig | None = None) -> None:
        self._s = RouterState(group=group, config=config or RoutingConfig())
        self._ring = _Ring()
        self._derive()

    def _derive(self) -> None:
        """(Re)build every index and cache from the state (init, restore, reconfigure)."""
        s = self._s
        self._config_json = _ENCODER.encode(s.config)
        self._exclusive = frozenset(s.config.exclusive_channels)
        #: channel -> advisors who could take a contact of it now (available, room on the channel)
        self._avail: dict[str, dict[str, AdvisorState]] = {}
        self._chans: dict[str, tuple[str, ...]] = {}  #: advisor -> the channels it is indexed under
        self._free: dict[str, AdvisorState] = {}  #: available with room on some channel
        #: skill -> advisors with it; language (primary subtag) -> advisors serving it; advisors serving any
        self._by_skill: dict[str, set[str]] = {}
        self._by_lang: dict[str, set[str]] = {}
        self._any_lang: set[str] = set()
        #: advisor -> (its skills dict, languages list, primary subtags) as indexed
        self._indexed: dict[str, tuple[dict[str, int], list[str], tuple[str, ...]]] = {}
        self._today: dict[tuple[int, int], int] = {}  #: (day, handled_today) -> logged-in advisors
        self._today_key: dict[str, tuple[int, int]] = {}
        self._roll_check: set[str] = set()  #: became free since the last dispatch rolled the day
        self._rolled_day: int | None = None
        self._dirty_adv: set[str] = set()  #: gained room / availability / skills since the last dispatch
        self._dirty_con: set[str] = set()  #: became waiting or eligible to more since the last dispatch
        self._waiting: dict[str, ContactState] = {}
        self._waiting_on: dict[str, dict[str, ContactState]] = {}  #: channel -> its waiting contacts
        self._due: dict[str, float] = {}  #: contact -> its timer (``_timer``), for contacts that have one
        self._heap: list[tuple[float, str]] = []  #: (due, contact); stale entries skipped lazily
        self._touched: set[str] = set()  #: contacts whose timer must be recomputed
        #: contact id -> the keys of the contacts the router owns with that id (usually one)
        self._by_id: dict[str, list[str]] = {}
        for key, c in s.contacts.items():
            self._by_id.setdefault(c.contact_id, []).append(key)
        #: encoded JSON per advisor / contact / queue (in the order of the state's dicts) and what changed
        self._adv_json = _Section(s.advisors)
        self._con_json = _Section(s.contacts)
        self._q_json = _Section(s.queues)
        self._adv_chg: set[str] = set(s.advisors)
        self._con_chg: set[str] = set(s.contacts)
        self._q_chg: set[str] = set(s.queues)
        for adv in s.advisors.values():
            self._reindex(adv, widened=True)
        for c in s.contacts.values():
            self._touched.add(c.key)
            if c.status == "waiting":
                self._waits(c)
        self._flush_timers()

    # ------------------------------------------------------------------ state
    @property
    def group(self) -> str:
        return self._s.group

    @property
    def config(self) -> RoutingConfig:
        return self._s.config

    @property
    def clock(self) -> float:
        return self._s.clock

    def to_state(self) -> bytes:
        """The whole state as JSON bytes; ``Router.from_state`` restores it exactly.

        Only what changed since the last call is encoded again; the rest is cached bytes.
        """
        s = self._s
        enc = _ENCODER.encode
        if self._adv_chg:
            adv_json, advisors = self._adv_json, s.advisors
            for aid in self._adv_chg:
                adv_json.set(aid, enc(advisors[aid]))
            self._adv_chg.clear()
        if self._con_chg:
            con_json, contacts = self._con_json, s.contacts
            for cid in self._con_chg:
                con_json.set(cid, enc(contacts[cid]))
            self._con_chg.clear()
        if self._q_chg:
            q_json, queues = self._q_json, s.queues
            for q in self._q_chg:
                q_json.set(q, enc(q) + b":" + enc(queues[q]))
            self._q_chg.clear()
        parts = [
            b'{"version":%d,"group":' % STATE_VERSION,
            enc(s.group),
            b',"config":',
            self._config_json,
            b',"clock":',
            enc(s.clock),
            b',"seq":%d,"out_seq":%d,"advisors":[' % (s.seq, s.out_seq),
        ]
        self._adv_json.parts(parts)
        parts.append(b'],"contacts":[')
        self._con_json.parts(parts)
        parts.append(b'],"queues":{')
        self._q_json.parts(parts)
        parts.append(b'},"learned":')
        parts.append(enc(s.learned))
        parts.append(b",")
        self._ring.parts(parts)
        parts.append(b"}")
        return b"".join(parts)

    @classmethod
    def from_state(cls, data: bytes) -> Router:
        """Restore a router written by :meth:`to_state`; ``ValueError`` if *data* is not one."""
        try:
            saved = _DECODER.decode(data)
        except msgspec.DecodeError as exc:
            try:
                version = msgspec.json.decode(data, type=_Version).version
            except (msgspec.DecodeError, TypeError):
                version = None
            if version is not None and version != STATE_VERSION:
                raise ValueError(f"router state version {version!r} is not {STATE_VERSION}") from exc
            raise ValueError(f"not a router state: {exc}") from exc
        if saved.version != STATE_VERSION:
            raise ValueError(f"router state version {saved.version} is not {STATE_VERSION}")
        router = cls.__new__(cls)
        router._s = RouterState(
            group=saved.group,
            config=saved.config,
            clock=saved.clock,
            seq=saved.seq,
            out_seq=saved.out_seq,
            advisors={a.advisor_id: a for a in saved.advisors},
            contacts={_keyed(c).key: c for c in saved.contacts},
            queues=saved.queues,
            learned=saved.learned,
        )
        router._ring = _Ring.restore(saved.ring_skip, saved.ring_chunks, saved.ring_tail)
        router._derive()
        return router

    def reconfigure(self, config: RoutingConfig) -> None:
        """Apply a new configuration (e.g. after a restart with a changed file); state is kept."""
        same = config == self._s.config
        self._s.config = config
        if not same:  # equal settings: the indexes hold (from_state then the same file's config)
            self._derive()

    def contact(self, contact_id: str, key: str | None = None) -> ContactState | None:
        """The router's view of a contact it still owns, by key, or by id if one contact has it (do not mutate)."""
        return self._find(contact_id, key)

    def _find(self, contact_id: str, key: str | None = None, advisor_id: str | None = None) -> ContactState | None:
        """The contact *key* names; without a key, the one contact with *contact_id* (held by *advisor_id* if given).

        None when there is none, or (no key) when several customers' contacts have that id.
        """
        contacts = self._s.contacts
        if key:
            return contacts.get(key)
        keys = self._by_id.get(contact_id)
        if not keys:
            return None
        if len(keys) == 1:
            return contacts[keys[0]]
        found = [contacts[k] for k in keys if advisor_id is None or contacts[k].advisor_id == advisor_id]
        return found[0] if len(found) == 1 else None

    def advisor(self, advisor_id: str) -> AdvisorState | None:
        """The router's view of an advisor (do not mutate)."""
        return self._s.advisors.get(advisor_id)

    # ------------------------------------------------------------------ indexes
    def _reindex(self, adv: AdvisorState, widened: bool = False) -> None:
        """Call after any change to *adv*: availability per channel, today's counts, saved form.

        *adv* is marked changed for the next dispatch if it gained a channel with room (or
        *widened*: its skills or languages were set) while available.
        """
        aid = adv.advisor_id
        self._adv_chg.add(aid)
        indexed = self._indexed.get(aid)
        if indexed is None or indexed[0] is not adv.skills or indexed[1] is not adv.languages:
            self._index_skills(adv, indexed)
            widened = True
        key = (adv.day, adv.handled_today) if adv.logged_in else None
        old_key = self._today_key.get(aid)
        if key != old_key:
            today = self._today
            if old_key is not None:
                n = today[old_key] - 1
                if n:
                    today[old_key] = n
                else:
                    del today[old_key]
            if key is None:
                del self._today_key[aid]
            else:
                today[key] = today.get(key, 0) + 1
                self._today_key[aid] = key
        old = self._chans.get(aid, ())
        if adv.logged_in and adv.presence == "available":  # roster.can_take_work
            caps = adv.capacity if adv.capacity is not None else self._s.config.default_capacity
            load = adv.load
            if not load and not adv.held:
                new = tuple(ch for ch, n in caps.items() if n > 0)
            else:  # roster.has_room for each channel of its capacity, inlined
                excl = self._exclusive
                idle = not adv.held
                blocked = any(load.get(ch, 0) > 0 for ch in excl)
                new = tuple(
                    ch
                    for ch, n in caps.items()
                    if n > 0 and (idle if ch in excl else not blocked and load.get(ch, 0) < int(n))
                )
        else:
            new = ()
        if new != old:
            avail = self._avail
            for ch in old:
                if ch not in new:
                    del avail[ch][aid]
            for ch in new:
                if ch not in old:
                    avail.setdefault(ch, {})[aid] = adv
                    widened = True
            if new:
                self._chans[aid] = new
                if not old:
                    self._free[aid] = adv
                    self._roll_check.add(aid)
            else:
                del self._chans[aid]
                del self._free[aid]
        if widened and new:
            self._dirty_adv.add(aid)

    def _index_skills(
        self, adv: AdvisorState, old: tuple[dict[str, int], list[str], tuple[str, ...]] | None
    ) -> None:
        """Index *adv* by skill and language (the router replaces these lists, never edits them)."""
        aid = adv.advisor_id
        if old is not None:
            for sk in old[0]:
                self._by_skill[sk].discard(aid)
            for lang in old[2]:
                self._by_lang[lang].discard(aid)
            self._any_lang.discard(aid)
        for sk in adv.skills:
            self._by_skill.setdefault(sk, set()).add(aid)
        primaries = _primaries(tuple(adv.languages))
        for lang in primaries:
            self._by_lang.setdefault(lang, set()).add(aid)
        if not adv.languages:
            self._any_lang.add(aid)  # serves any language (roster.speaks)
        self._indexed[aid] = (adv.skills, adv.languages, primaries)

    def _candidates(self, c: ContactState, room: dict[str, AdvisorState], now: float) -> list[AdvisorState]:
        """The advisors eligible for *c* (``policy.eligible``), from those with room on its channel."""
        if c.hold_for is not None and now < c.hold_until:  # held: only that advisor, whatever the skills
            a = room.get(c.hold_for)
            return [a] if a is not None and eligible(a, c, now, self._s.config) else []
        declined = c.declined
        return [room[aid] for aid in self._skilled(c, room.keys()) if aid not in declined]

    def _skilled(self, c: ContactState, ids: Any) -> Any:
        """Those of the advisor ids *ids* (a set or a dict's keys) with the language and skills *c* needs now (the indexes)."""
        language = required_language(c, self._s.config)
        if language:
            want = language.split("-")[0].lower()
            ids = ids & (self._by_lang.get(want, _NONE) | self._any_lang)
        for sk in required_now(c, self._s.config):
            ids = ids & self._by_skill.get(sk, _NONE)
        return ids

    def _touch(self, c: ContactState) -> None:
        """Call after any change to *c*: its timer and saved form are recomputed."""
        self._touched.add(c.key)
        self._con_chg.add(c.key)

    def _waits(self, c: ContactState) -> None:
        """*c* became waiting (or may now be eligible to more advisors): look at it in the next dispatch."""
        self._waiting[c.key] = c
        self._waiting_on.setdefault(c.channel, {})[c.key] = c
        self._dirty_con.add(c.key)

    def _forget(self, c: ContactState) -> None:
        """Remove a contact the router no longer owns."""
        cid = c.key
        keys = self._by_id[c.contact_id]
        keys.remove(cid)
        if not keys:
            del self._by_id[c.contact_id]
        del self._s.contacts[cid]
        self._con_json.remove(cid)
        self._con_chg.discard(cid)
        if self._waiting.pop(cid, None) is not None:
            del self._waiting_on[c.channel][cid]
        self._dirty_con.discard(cid)
        self._touched.add(cid)

    # ------------------------------------------------------------------ input
    def apply(self, msg: RouterInput) -> list[Output]:
        """Apply one input; return the assignments and routing events it caused, in order."""
        out: list[Output] = []
        if msg.routing_group != self._s.group:
            return out
        event_id = None if isinstance(msg, RouterTick) else msg.event_id
        if event_id is not None:
            if event_id in self._ring.seen:
                return out
            self._ring.add(event_id, self._s.config.dedupe_window)
        t = input_time(msg)
        if isinstance(msg, ContactUpdate) and msg.kind != "transferred":
            # The contact ended (the customer hung up, the channel closed it) at t: the router's own
            # timers due at that same instant (an escalation widening it to an idle advisor, a hold
            # ending) must not offer it first; an offer at t would go to a customer already gone, the
            # desktop could accept it, and the contact would count answered and abandoned.
            self._advance(t, out, before=True)
            self._on_update(msg, self._s.clock, out)
            self._advance(t, out)
            self._dispatch(self._s.clock, out)
            return out
        self._advance(t, out)
        now = self._s.clock
        new_contact: ContactState | None = None
        if isinstance(msg, ContactRequest):
            new_contact = self._on_request(msg, now, out)
        elif isinstance(msg, ContactUpdate):  # a transfer
            self._on_update(msg, now, out)
        elif isinstance(msg, AdvisorEvent):
            self._on_advisor(msg, now, out)
        self._dispatch(now, out)
        if new_contact is not None and new_contact.status == "waiting":
            self._emit(out, "queued", new_contact, now, detail=new_contact.queue, reason=self._why_queued(new_contact, now))
        return out

    def _why_queued(self, c: ContactState, now: float) -> QueuedReason:
        """:func:`~cxstream.routing.policy.why_queued` from the indexes: no scan of the roster."""
        logged_in = self._today_key.keys()  # (every logged-in advisor has a key: _reindex)
        declined = c.declined
        anyone_could = any(aid not in declined for aid in self._skilled(c, logged_in))
        return why_queued(c, now, self._s.config, anyone_logged_in=bool(logged_in), anyone_could=anyone_could)

    # ------------------------------------------------------------------ timers
    def _escalating(self) -> bool:
        cfg = self._s.config
        return cfg.escalate and cfg.policy == "default"

    def _timer(self, c: ContactState) -> float | None:
        if c.status == "offered":
            return c.offer_deadline
        if c.status != "waiting":
            return None
        cfg = self._s.config
        sla = cfg.sla_for(c.channel)
        due: list[float] = []
        if not c.sla_breached:
            due.append(c.opened_at + sla)
        if self._escalating() and c.step < len(cfg.escalation_at):
            due.append(c.esc_from + cfg.escalation_at[c.step] * sla)
        if c.hold_for is not None:
            due.append(c.hold_until)
        fallback = cfg.language_fallback_due(c.channel, c.opened_at) if c.language and not c.language_relaxed else None
        if fallback is not None:
            due.append(fallback)
        return min(due) if due else None

    def _flush_timers(self) -> None:
        """Bring ``_due`` and the heap up to date with the contacts touched since."""
        contacts, due, heap = self._s.contacts, self._due, self._heap
        for cid in self._touched:
            c = contacts.get(cid)
            t = self._timer(c) if c is not None else None
            if t is None:
                due.pop(cid, None)
            elif due.get(cid) != t:
                due[cid] = t
                heapq.heappush(heap, (t, cid))
        self._touched.clear()
        if len(heap) > 64 + 4 * len(due):  # mostly stale entries: rebuild
            self._heap = [(t, cid) for cid, t in due.items()]
            heapq.heapify(self._heap)

    def next_deadline(self) -> float | None:
        """Event time of the next timer (SLA, escalation, hold, offer timeout), if any."""
        if self._touched:
            self._flush_timers()
        heap, due = self._heap, self._due
        while heap:
            t, cid = heap[0]
            if due.get(cid) == t:
                return t
            heapq.heappop(heap)
        return None

    def _advance(self, t: float, out: list[Output], before: bool = False) -> None:
        """Move the clock to *t*, firing every timer due on the way at its own time (*before*: only those due before *t*)."""
        while True:
            due = self.next_deadline()
            if due is None or due > t or (before and due == t):
                break
            now = max(due, self._s.clock)
            self._s.clock = now
            self._fire(now, out)
            self._dispatch(now, out)
        if t > self._s.clock:
            self._s.clock = t

    def _fire(self, now: float, out: list[Output]) -> None:
        """Fire every timer due by *now*: the contacts concerned, in their arrival order."""
        cfg = self._s.config
        heap, due, contacts = self._heap, self._due, self._s.contacts
        fired: dict[str, ContactState] = {}
        while heap and heap[0][0] <= now:
            t, cid = heapq.heappop(heap)
            c = contacts.get(cid)
            if c is not None and due.get(cid) == t:
                del due[cid]
                fired[cid] = c
        for c in sorted(fired.values(), key=lambda c: c.seq):
            self._touch(c)
            if c.status == "offered":
                if c.offer_deadline is not None and c.offer_deadline <= now:
                    self._offer_timeout(c, now, out)
                continue
            if c.status != "waiting":
                continue
            sla = cfg.sla_for(c.channel)
            if not c.sla_breached and c.opened_at + sla <= now:
                c.sla_breached = True
                self._stats(c.queue).sla_breaches += 1
                self._emit(out, "sla_breached", c, now, detail=f"sla_s={sla:g}")
            if self._escalating():
                while c.step < len(cfg.escalation_at) and c.esc_from + cfg.escalation_at[c.step] * sla <= now:
                    self._escalate(c, c.step + 1, now, out, "sla_timer")
            if c.language and not c.language_relaxed:
                fallback = cfg.language_fallback_due(c.channel, c.opened_at)
                if fallback is not None and fallback <= now:
                    c.language_relaxed = True  # no advisor serving its language took it in time: anyone may
                    self._waits(c)
            if c.hold_for is not None and c.hold_until <= now:
                c.hold_for = None
                self._waits(c)

    def _escalate(self, c: ContactState, step: int, now: float, out: list[Output], why: str) -> None:
        last = len(self._s.config.escalation_at)
        c.step = step
        self._touch(c)
        if c.status == "waiting":
            self._waits(c)
        st = self._stats(c.queue)
        st.escalations += 1
        if step >= last:
            st.overflows += 1
            offer = "callback_offered" if c.channel == "voice" else "self_service_offered"
            self._emit(out, "overflow", c, now, step=step, detail=f"{offer};{why}")
        else:
            name = {1: "drop_secondary_skills", 2: "widen_to_all_advisors"}.get(step, f"step_{step}")
            self._emit(out, "escalated", c, now, step=step, detail=f"{name};{why}")

    # ------------------------------------------------------------------ contacts
    def _stats(self, queue: str) -> QueueStats:
        """The counters of *queue*, to be changed: its saved form is encoded again."""
        st = self._s.queues.get(queue)
        if st is None:
            st = self._s.queues[queue] = QueueStats()
            self._q_json.add(queue)
        self._q_chg.add(queue)
        return st

    def _on_request(self, msg: ContactRequest, now: float, out: list[Output]) -> ContactState | None:
        key = self._key_for(msg)
        if key is None:
            return None
        existing = self._s.contacts.get(key)
        if existing is not None:
            if existing.customer_id == msg.customer_id:  # the same contact sent again: already routed
                self._stats(existing.queue).duplicate_requests += 1
                return None
            # an explicit key another customer's contact holds: the router cannot take it; say so
            self._reject(msg, key, now, out, "contact_key_in_use")
            return None
        cfg = self._s.config
        if len(self._s.contacts) >= cfg.max_contacts:  # the queue is full: say so (the context shows it)
            self._reject(msg, key, now, out, f"queue_full;max_contacts={cfg.max_contacts}")
            return None
        skills = cfg.skills_for(msg.required_skills, msg.intent)
        c = ContactState(
            contact_id=msg.contact_id,
            customer_id=msg.customer_id,
            channel=msg.channel,
            opened_at=msg.opened_at,
            queue=queue_name(msg.channel, skills),
            seq=self._s.seq,
            language=msg.language,
            priority=msg.priority,
            points=base_priority(msg.priority, msg.tier, msg.churn_risk, cfg),
            required_skills=skills,
            intent=msg.intent,
            churn_risk=msg.churn_risk,
            tier=msg.tier,
            last_advisor_id=msg.last_advisor_id,
            esc_from=msg.opened_at,
            key=key,
        )
        self._s.seq += 1
        hold = cfg.sticky_wait_s.get(msg.channel, 0.0)
        last = self._s.advisors.get(msg.last_advisor_id or "")
        if cfg.policy == "default" and hold > 0 and last is not None and last.logged_in and speaks(last, msg.language):
            c.hold_for = last.advisor_id
            c.hold_until = msg.opened_at + hold
        self._s.contacts[key] = c
        self._by_id.setdefault(c.contact_id, []).append(key)
        self._con_json.add(key)
        self._touch(c)
        self._waits(c)
        self._stats(c.queue).offered += 1
        return c

    def _reject(self, msg: ContactRequest, key: str, now: float, out: list[Output], why: str) -> None:
        """A contact the router cannot take: counted, and a ``rejected`` routing event with the reason."""
        queue = queue_name(msg.channel, self._s.config.skills_for(msg.required_skills, msg.intent))
        self._stats(queue).rejected += 1
        self._s.out_seq += 1
        out.append(
            RoutingEvent(
                event_id=short_id("re", self._s.group, "rejected", key, self._s.out_seq),
                kind="rejected",
                routing_group=self._s.group,
                contact_id=msg.contact_id,
                at=now,
                detail=why,
                customer_id=msg.customer_id,
                contact_key=key,
            )
        )

    def _key_for(self, msg: ContactRequest) -> str | None:
        """The key of the contact *msg* asks for; None if it is one the router already owns (a duplicate).

        The request's own ``contact_key`` if it has one.  Else the contact id, unless a contact of
        another customer holds it (contact ids are unique only within one channel system): then
        :func:`contact_key` of this customer.  The same customer's contact with that id is a duplicate.
        """
        if msg.contact_key:
            return msg.contact_key
        for k in self._by_id.get(msg.contact_id, ()):
            c = self._s.contacts[k]
            if c.customer_id == msg.customer_id:
                self._stats(c.queue).duplicate_requests += 1
                return None
        return contact_key(msg.customer_id, msg.contact_id) if msg.contact_id in self._s.contacts else msg.contact_id

    def _on_update(self, msg: ContactUpdate, now: float, out: list[Output]) -> None:
        c = self._find(msg.contact_id, msg.contact_key)
        if c is None:
            if not msg.contact_key and len(self._by_id.get(msg.contact_id, ())) > 1:
                # several customers' contacts have this id and the update does not say which: say so
                self._s.out_seq += 1
                out.append(
                    RoutingEvent(
                        event_id=short_id("re", self._s.group, "rejected", msg.contact_id, self._s.out_seq),
                        kind="rejected", routing_group=self._s.group, contact_id=msg.contact_id, at=now,
                        detail=f"update_ambiguous;kind={msg.kind}",
                    )
                )
            return
        if msg.kind == "transferred":
            self._transfer(c, msg, now, out)
        elif c.status == "active":
            self._complete(c, now, out, detail=f"{msg.kind}_in_service")
        elif c.answered:  # answered, transferred, and ended while waiting for the next advisor
            self._drop_offer(c, now)
            st = self._stats(c.queue)
            if msg.kind == "abandoned":  # counted answered already: not an abandon as well
                st.abandoned_after_answer += 1
            else:  # its handle time was counted at the transfer
                st.completed += 1
            self._forget(c)
            self._emit(out, msg.kind if msg.kind == "abandoned" else "completed", c, now, detail=f"{msg.kind}_after_transfer")
        elif msg.kind == "abandoned":
            self._drop_offer(c, now)
            waited = max(0.0, now - c.opened_at)
            st = self._stats(c.queue)
            st.abandoned += 1
            if waited < self._s.config.short_abandon_s:
                st.short_abandoned += 1
            self._forget(c)
            self._emit(out, "abandoned", c, now, detail=f"waited_s={waited:.3f}")
        else:  # closed before an advisor answered (e.g. self-service, callback taken)
            self._drop_offer(c, now)
            self._stats(c.queue).closed_unanswered += 1
            self._forget(c)
            self._emit(out, "completed", c, now, detail="closed_unanswered")

    def _drop_offer(self, c: ContactState, now: float) -> str | None:
        """Release the advisor holding *c* (if any) and put *c* back to waiting; returns the advisor id."""
        prev = c.advisor_id
        if prev is not None:
            adv = self._s.advisors.get(prev)
            if adv is not None:
                release(adv, c.key, c.channel, now)
                self._reindex(adv)
        c.status = "waiting"
        c.advisor_id = None
        c.assignment_id = None
        c.offered_at = None
        c.offer_deadline = None
        self._touch(c)
        self._waits(c)
        return prev

    def _requeue(self, c: ContactState, now: float, out: list[Output]) -> None:
        self._drop_offer(c, now)
        if self._escalating() and c.attempts >= self._s.config.max_offers and c.step < 2:
            self._escalate(c, 2, now, out, "too_many_offers")

    def _offer_timeout(self, c: ContactState, now: float, out: list[Output]) -> None:
        prev = c.advisor_id
        adv = self._s.advisors.get(prev or "")
        self._stats(c.queue).offer_timeouts += 1
        self._emit(out, "offer_timeout", c, now, advisor_id=prev)
        if prev is not None:
            c.declined.append(prev)
        self._requeue(c, now, out)
        if adv is not None and adv.logged_in:
            account(adv, now)
            adv.presence = "away"
            self._reindex(adv)

    def _accept(self, c: ContactState, now: float) -> None:
        c.status = "active"
        c.accepted_at = now
        c.offer_deadline = None
        self._touch(c)
        if not c.answered:
            c.answered = True
            wait = max(0.0, now - c.opened_at)
            st = self._stats(c.queue)
            st.answered += 1
            st.wait_answered_s += wait
            if wait <= self._s.config.sla_for(c.channel):
                st.answered_in_sla += 1

    def _complete(
        self, c: ContactState, now: float, out: list[Output], detail: str | None = None, disposition: Disposition | None = None
    ) -> None:
        if c.status == "offered":
            self._accept(c, now)
        cfg = self._s.config
        adv = self._s.advisors.get(c.advisor_id or "")
        handle = max(0.0, now - (c.accepted_at if c.accepted_at is not None else now))
        st = self._stats(c.queue)
        st.completed += 1
        st.handle_s += handle
        learn_completion(
            self._s.learned, adv, learn_key(c), handle, cfg, disposition.resolved if disposition is not None else None
        )
        if adv is not None:
            roll_day(adv, now)
            adv.handled += 1
            adv.handled_today += 1
            release(adv, c.key, c.channel, now)
            self._reindex(adv)
        self._forget(c)
        self._emit(out, "completed", c, now, advisor_id=c.advisor_id, detail=detail, disposition=disposition)

    def _transfer(self, c: ContactState, msg: ContactUpdate, now: float, out: list[Output]) -> None:
        cfg = self._s.config
        if c.status == "active" and c.accepted_at is not None:
            self._stats(c.queue).handle_s += max(0.0, now - c.accepted_at)
        prev = self._drop_offer(c, now)
        c.points += cfg.transfer_boost
        c.step = 0
        c.esc_from = now
        c.declined = [prev] if prev is not None else []
        if msg.to_skills is not None:
            c.required_skills = list(msg.to_skills)
        c.hold_for = msg.to_advisor_id
        c.hold_until = now + cfg.transfer_hold_s if msg.to_advisor_id else 0.0
        if msg.to_advisor_id is not None and msg.to_advisor_id in c.declined:
            c.declined.remove(msg.to_advisor_id)
        self._touch(c)
        self._waits(c)
        self._stats(c.queue).transfers += 1
        target = msg.to_advisor_id or ",".join(c.required_skills) or "queue"
        self._emit(out, "transferred", c, now, advisor_id=prev, detail=f"to={target}")

    # ------------------------------------------------------------------ advisors
    def _on_advisor(self, ev: AdvisorEvent, now: float, out: list[Output]) -> None:
        adv = self._s.advisors.get(ev.advisor_id)
        if adv is None:
            adv = AdvisorState(advisor_id=ev.advisor_id, idle_since=now, mark=now)
            self._s.advisors[ev.advisor_id] = adv
            self._adv_json.add(ev.advisor_id)
        self._advisor_event(adv, ev, now, out)
        self._reindex(adv, widened=ev.skills is not None or ev.languages is not None)

    def _advisor_event(self, adv: AdvisorState, ev: AdvisorEvent, now: float, out: list[Output]) -> None:
        account(adv, now)
        roll_day(adv, now)
        if ev.skills is not None:
            adv.skills = dict(ev.skills)
        if ev.languages is not None:
            adv.languages = list(ev.languages)
        if ev.capacity is not None:
            adv.capacity = {str(k): int(v) for k, v in ev.capacity.items()}
        kind = ev.kind
        if kind == "presence" and not adv.logged_in:
            return  # presence without a login (e.g. a wrap-up ending after logout) does not log in
        if kind == "login" or (kind == "presence" and ev.presence not in (None, "offline")):
            was_free = can_take_work(adv)
            adv.logged_in = True
            adv.presence = ev.presence or ("available" if kind == "login" else adv.presence)
            if adv.presence == "available" and not was_free and not adv.held:
                adv.idle_since = now
            if adv.presence == "away":
                self._withdraw_offers(adv, now, out)
        elif kind == "logout" or (kind == "presence" and ev.presence == "offline"):
            adv.logged_in = False
            adv.presence = "offline"
            self._withdraw_offers(adv, now, out)
        elif kind in ("offer_accepted", "offer_rejected", "contact_completed", "contact_transferred"):
            c = self._find(ev.contact_id or "", ev.contact_key, adv.advisor_id)
            if c is None or c.advisor_id != adv.advisor_id:
                return
            if kind == "contact_transferred":  # the desktop's transfer button: to an advisor or a queue
                update = ContactUpdate(
                    event_id=ev.event_id, contact_id=c.contact_id, routing_group=ev.routing_group,
                    kind="transferred", at=now, to_advisor_id=ev.transfer_to_advisor_id,
                    to_skills=ev.transfer_to_skills, contact_key=c.key,
                )
                self._transfer(c, update, now, out)
                return
            if kind == "contact_completed":
                if c.status in ("offered", "active"):
                    self._complete(c, now, out, disposition=ev.disposition)
                return
            if c.status != "offered" or (ev.assignment_id is not None and ev.assignment_id != c.assignment_id):
                return  # stale answer to an offer already withdrawn
            if kind == "offer_accepted":
                self._accept(c, now)
            else:
                self._stats(c.queue).offers_rejected += 1
                self._emit(out, "offer_rejected", c, now, advisor_id=adv.advisor_id)
                c.declined.append(adv.advisor_id)
                self._requeue(c, now, out)

    def _withdraw_offers(self, adv: AdvisorState, now: float, out: list[Output]) -> None:
        for cid in list(adv.held):
            c = self._s.contacts.get(cid)
            if c is not None and c.status == "offered":
                self._emit(out, "offer_rejected", c, now, advisor_id=adv.advisor_id, detail="advisor_unavailable")
                self._requeue(c, now, out)

    # ------------------------------------------------------------------ decisions
    def _dispatch(self, now: float, out: list[Output]) -> None:
        """Offer waiting contacts, in queue order, to the best eligible free advisor.

        Decides exactly what a scan of every waiting contact against every free advisor would
        (see the module docstring), looking only at the contacts and advisors that changed.
        """
        if not self._free or not self._waiting:
            self._dirty_adv.clear()
            self._dirty_con.clear()
            return
        # A new day for every free advisor, as the full scan does (fairness counts today's contacts):
        # those free at the last dispatch were rolled then, so only newcomers need it the same day.
        today = int(now // 86400)
        if today != self._rolled_day:
            self._rolled_day = today
            rolling = list(self._free.values())
        else:
            rolling = [self._free[a] for a in self._roll_check if a in self._free]
        self._roll_check.clear()
        for a in rolling:
            if a.day != today:
                roll_day(a, now)
                self._reindex(a)
        dirty_con = self._dirty_con
        dirty_adv = {aid: self._free[aid] for aid in self._dirty_adv if aid in self._free}
        self._dirty_adv.clear()
        if not dirty_con and not dirty_adv:
            return  # nothing changed that can pair: the full scan would offer nothing either
        cfg = self._s.config
        # changed advisors may suit any waiting contact; otherwise only the changed contacts can get one
        pool = [self._waiting[cid] for cid in dirty_con]
        if dirty_adv:  # and the contacts waiting on a channel where one of them has room
            for ch in {ch for aid in dirty_adv for ch in self._chans[aid]}:
                pool.extend(c for cid, c in self._waiting_on.get(ch, {}).items() if cid not in dirty_con)
        queue = [(-effective_priority(c, now, cfg), c.seq, c) for c in pool]
        heapq.heapify(queue)  # queue order (queue.order): highest effective priority, then arrival
        left = len(dirty_con)
        max_today = -1
        learned = self._s.learned
        avail = self._avail
        while queue:
            c = heapq.heappop(queue)[2]
            room = avail.get(c.channel)
            candidates: list[AdvisorState]
            if c.key in dirty_con:
                left -= 1
                candidates = self._candidates(c, room, now) if room else []
            elif dirty_adv:
                candidates = [a for aid, a in dirty_adv.items() if room and aid in room and eligible(a, c, now, cfg)]
            elif left:
                continue
            else:
                break
            if not candidates:
                continue
            group = learned.get(learn_key(c))
            resolved = learned.get(resolution_key(learn_key(c)))
            if max_today < 0:
                max_today = max((v for (d, v) in self._today if d == today), default=0)
            best = best_advisor(candidates, c, now, cfg, group, max_today, resolved)
            if best is None:
                continue
            if self._hold(c, best, now):
                continue
            best_score, best_why = score(best, c, now, cfg, group, max_today, resolved)
            self._offer(c, best, now, best_score, best_why, out)
            if best.advisor_id not in self._free:
                dirty_adv.pop(best.advisor_id, None)
        self._dirty_con.clear()

    def _hold(self, c: ContactState, best: AdvisorState, now: float) -> bool:
        """Hold *c* for a faster advisor about to free up (``policy.hold_target``) instead of offering it to *best*."""
        cfg = self._s.config
        if (
            cfg.policy != "default" or cfg.hold_sla_fraction <= 0 or c.hold_until > 0 or c.attempts > 0
            or c.channel not in self._exclusive
        ):
            return False  # (hold_target's own cheap refusals, before gathering its inputs)
        need = required_now(c, cfg)
        if need:
            ids = set.intersection(*(self._by_skill.get(sk, set()) for sk in need))
            advisors = [self._s.advisors[aid] for aid in ids]  # hold_target does not depend on their order
        else:
            advisors = list(self._s.advisors.values())
        reserved = {w.hold_for for w in self._waiting.values() if w.hold_for is not None and now < w.hold_until}
        target = hold_target(c, best, now, cfg, advisors, self._s.contacts, self._s.learned, reserved)
        if target is None:
            return False
        c.hold_for, c.hold_until = target[0], target[1]
        self._touch(c)
        self._stats(c.queue).holds += 1
        return True

    def _offer(
        self, c: ContactState, adv: AdvisorState, now: float, sc: float, why: dict[str, float], out: list[Output]
    ) -> None:
        cfg = self._s.config
        c.attempts += 1
        # keyed by the contact id as before keys, unless the contact has a key of its own
        aid = short_id("as", self._s.group, c.contact_id if c.key == c.contact_id else c.key, c.opened_at, c.attempts)
        take(adv, c.key, c.channel, now, c.queue)
        self._reindex(adv)
        c.status = "offered"
        c.advisor_id = adv.advisor_id
        c.assignment_id = aid
        c.offered_at = now
        c.offer_deadline = now + cfg.offer_timeout_s
        c.hold_for = None
        self._touch(c)
        del self._waiting[c.key]
        del self._waiting_on[c.channel][c.key]
        self._dirty_con.discard(c.key)
        self._stats(c.queue).offers += 1
        out.append(
            Assignment(
                assignment_id=aid,
                contact_id=c.contact_id,
                customer_id=c.customer_id,
                advisor_id=adv.advisor_id,
                routing_group=self._s.group,
                channel=c.channel,  # type: ignore[arg-type]
                contact_opened_at=c.opened_at,
                decided_at=now,
                waited_s=max(0.0, now - c.opened_at),
                attempt=c.attempts,
                policy=cfg.policy,
                score=round(sc, 6),
                reasons=why,
                intent=c.intent,
                priority=c.priority,
                language=c.language,
                contact_key=c.key,
            )
        )

    def _emit(
        self,
        out: list[Output],
        kind: str,
        c: ContactState,
        now: float,
        *,
        advisor_id: str | None = None,
        step: int = 0,
        detail: str | None = None,
        disposition: Disposition | None = None,
        reason: QueuedReason | None = None,
    ) -> None:
        self._s.out_seq += 1
        out.append(
            RoutingEvent(
                event_id=short_id("re", self._s.group, kind, c.contact_id, self._s.out_seq),
                kind=kind,  # type: ignore[arg-type]
                routing_group=self._s.group,
                contact_id=c.contact_id,
                at=now,
                advisor_id=advisor_id,
                step=step,
                detail=detail,
                customer_id=c.customer_id,
                disposition=disposition,
                contact_key=c.key,
                reason=reason,
            )
        )

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, Any]:
        """Live figures per queue and for the group (formulas in :mod:`cxstream.routing.stats`)."""
        s = self._s
        return live(s.group, s.config.policy, s.clock, s.advisors.values(), s.contacts.values(), s.queues)
