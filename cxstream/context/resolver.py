"""Identity resolution (pure): identifiers -> one canonical customer id, deterministically.

The resolver keeps its state in a ``MutableMapping[bytes, bytes]``: a plain dict in
tests, the single-partition Faust table ``identity`` in the engine (every write there
goes to the table's changelog, and ``del`` writes a tombstone).  It sees events in one
total order and uses no clock and no randomness, so a replay of the same input gives
the same canonical ids, links, merges and refusals.  Details: docs/IDENTITY.md.

Keys of the store::

    v:{kind}:{value}   -> ValueEntry     who owns a normalised identifier value
    c:{customer}       -> CustomerEntry  first-seen sequence number, values by kind, absorbed ids
    a:{absorbed}       -> survivor id    alias of a customer merged into another
    e:{fingerprint}    -> ErasureMarker  an erased identifier (hashed): time and generation
    x:{fingerprint}    -> ErasureMarker  an erased canonical id (hashed)
    #seq               -> next sequence number

Rules, in short:

* **Anchor.** The event's identifiers are read in precedence order (customer id,
  account number, email, phone, social handle, device id).  The first *trusted* known
  one names the customer; an unknown identifier before it joins that customer when the
  customer has room for its kind, and otherwise starts a new customer.  No known one:
  a new customer, whose id is the CRM customer id if it is the anchor (and usable in a
  URL), else ``cust-`` + 16 hex digits of SHA-256 of the anchor identifier.
* **Links.** Unknown identifiers join the customer, up to a limit of values per kind
  (one CRM customer id, three emails, ...); beyond it the link is refused.
* **Merges.** A known identifier of another customer merges the two unless the union
  would break a per-kind limit (``conflicting_ids`` for kinds that allow one value,
  ``too_many_values`` otherwise) or the identifier is a device id and the other
  customer is identified by more than devices (``weak_identifier``).  The survivor is the
  first-seen customer; the other id stays an alias.
* **Shared values.** A value presented by more than ``customers_per_value`` distinct
  customers (counted on refused merges) is quarantined: it no longer resolves anything.
* **Erasure** deletes the customer's values, aliases and entry, and keeps only hashed
  markers; an event that predates the erasure and carries an erased identifier is
  suppressed, a newer one starts a new customer with a new id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field

import msgspec

from cxstream.context.identity import PRECEDENCE
from cxstream.schemas import (
    CustomersMerged,
    IdentityErased,
    IdentityLinked,
    IdentityOutput,
    LinkRefused,
    MergeContext,
    RefusedIdentifier,
)

#: Identifier kinds that never merge two identified customers (shared devices, cookies).
WEAK_KINDS = frozenset({"device_id"})
#: A CRM id is used as the canonical id only if it is safe in a URL path and a Redis key.
_URL_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")
_RESERVED_PREFIXES = ("cust-", "anon-")
#: Index value of a quarantined identifier (same as ``cxstream.streams.keys.SHARED``).
SHARED = "!shared"


def fingerprint(kind: str, value: str) -> str:
    """The fingerprint of a normalised identifier: what the identity and audit logs carry instead of it.

    >>> fingerprint("email", "jane@x.org")
    'email:3fe6e392c6f61fd1b8356efe848590c5'
    """
    return f"{kind}:{hashlib.sha256(f'{kind}:{value}'.encode()).hexdigest()[:32]}"


def hashed_id(customer_id: str) -> str:
    """The fingerprint of a canonical customer id (audit records, erasure markers).

    >>> hashed_id("C-1")
    'customer:acc27b6f3a6af60189a0fcdfdc00b1c4'
    """
    return f"customer:{hashlib.sha256(f'customer:{customer_id}'.encode()).hexdigest()[:32]}"


def new_customer_id(kind: str, value: str, generation: int = 0) -> str:
    """The canonical id of a customer first seen with this identifier.

    >>> new_customer_id("customer_id", "C-1"), new_customer_id("email", "jane@x.org")
    ('C-1', 'cust-97b1cb025d5c7bdd')
    >>> new_customer_id("customer_id", "C-1", generation=1)  # after an erasure: never reused
    'cust-e68f56c4d49d7cae'
    """
    if kind == "customer_id" and generation == 0 and _URL_SAFE_ID.match(value) and not value.startswith(_RESERVED_PREFIXES):
        return value
    seed = f"cust|{kind}:{value}" if generation == 0 else f"cust|{kind}:{value}#{generation}"
    return "cust-" + hashlib.sha256(seed.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ResolverLimits:
    """The guards against wrong merges."""

    values_per_kind: Mapping[str, int] = field(
        default_factory=lambda: {
            "customer_id": 1,
            "account_number": 3,
            "email": 3,
            "phone": 3,
            "social_handle": 3,
            "device_id": 8,
        }
    )
    customers_per_value: int = 3

    def limit(self, kind: str) -> int:
        return self.values_per_kind.get(kind, 3)


def settled_owner(ids: Mapping[str, str], lookup: Callable[[str, str], str | None]) -> str | None:
    """The customer every identifier of an event already belongs to, if there is one: the event is *settled*.

    *lookup* answers (kind, normalised value) -> canonical owner, ``SHARED`` or None, as the
    identifier index (:meth:`Resolver.index_entries`) does.  When every identifier has the same
    owner and none is quarantined, :meth:`Resolver.resolve` would decide nothing for the event:
    no link, no merge, no refusal, no write; it returns that owner (tests/unit/test_identity_fastpath.py).
    Such an event needs no single total order (bench/identity/partitioned.py, docs/IDENTITY.md).
    An event with a refused identifier is not settled (its refusal is a record to publish), nor one
    older than an erasure of one of its identifiers: the caller checks both.

    >>> index = {("email", "jane@x.org"): "C1", ("phone", "+447700900123"): "C1", ("phone", "+447700900999"): "C2"}
    >>> look = lambda k, v: index.get((k, v))
    >>> settled_owner({"email": "jane@x.org", "phone": "+447700900123"}, look)
    'C1'
    >>> settled_owner({"email": "jane@x.org", "phone": "+447700900999"}, look) is None  # two owners: a merge to decide
    True
    >>> settled_owner({"email": "new@x.org"}, look) is None  # an unknown identifier: a link or a new customer
    True
    """
    owner: str | None = None
    for kind, value in ids.items():
        if not value:
            continue
        cid = lookup(kind, value)
        if cid is None or cid == SHARED or (owner is not None and cid != owner):
            return None
        owner = cid
    return owner


class ValueEntry(msgspec.Struct, kw_only=True):
    owner: str
    claims: list[str] = []  # other customers that presented this value (refused merges)
    shared: bool = False


class CustomerEntry(msgspec.Struct, kw_only=True):
    seq: int
    values: dict[str, list[str]] = {}
    absorbed: list[str] = []

    def weak_only(self) -> bool:
        return all(k in WEAK_KINDS for k, v in self.values.items() if v)

    def count(self) -> int:
        return sum(len(v) for v in self.values.values())


class ErasureMarker(msgspec.Struct, kw_only=True):
    at: float
    generation: int = 1


@dataclass
class Resolution:
    """What resolving one event decided."""

    customer_id: str | None  # None: suppressed (predates an erasure) or no usable identifier
    records: list[IdentityOutput] = field(default_factory=list)  # for cx.identity.v1
    merges: list[MergeContext] = field(default_factory=list)  # for the context stage, key = absorbed id
    #: Redis index updates: (kind, value) -> canonical id, None to delete, "!shared" for quarantined;
    #: kind "alias" maps an absorbed customer id to its survivor.
    index: dict[tuple[str, str], str | None] = field(default_factory=dict)
    created: bool = False
    suppressed_by: str | None = None  # fingerprint of the erased identifier


@dataclass
class Erasure:
    """What erasing one request's customers decided."""

    customers: list[tuple[str, list[str]]]  # (canonical id, absorbed ids)
    records: list[IdentityErased]
    index: dict[tuple[str, str], str | None]
    subjects: list[str]  # fingerprints of everything erased
    already_erased: bool = False


@dataclass
class _Item:
    kind: str
    value: str
    fp: str
    owner: str | None
    entry: ValueEntry | None
    ref: bool = False  # a canonical id given as customer_id: resolves, is never linked


_enc = msgspec.json.Encoder()
_dec_value = msgspec.json.Decoder(ValueEntry)
_dec_customer = msgspec.json.Decoder(CustomerEntry)
_dec_marker = msgspec.json.Decoder(ErasureMarker)


def _h(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


class Resolver:
    """Resolves identifier sets to canonical customer ids over a key-value *store*.

    >>> r = Resolver({})
    >>> r.resolve({"email": "jane@x.org"}, event_id="e1", at=1.0).customer_id
    'cust-97b1cb025d5c7bdd'
    >>> r.resolve({"phone": "+447700900123"}, event_id="e2", at=2.0).customer_id  # a stranger, for now
    'cust-d9b4097dc53de02e'
    >>> res = r.resolve({"email": "jane@x.org", "phone": "+447700900123"}, event_id="e3", at=3.0)
    >>> res.customer_id, [type(x).__name__ for x in res.records]  # one person: merged into the first seen
    ('cust-97b1cb025d5c7bdd', ['CustomersMerged'])
    >>> r.lookup("phone", "+447700900123"), r.canonical("cust-d9b4097dc53de02e")
    ('cust-97b1cb025d5c7bdd', 'cust-97b1cb025d5c7bdd')
    """

    def __init__(self, store: MutableMapping[bytes, bytes], limits: ResolverLimits | None = None) -> None:
        self.store = store
        self.limits = limits or ResolverLimits()
        self._customers: dict[str, CustomerEntry] = {}  # read cache for one call
        self._dirty: set[str] = set()  # customers to write back
        self._values: dict[tuple[str, str], ValueEntry] = {}  # value entries to write back

    # -- store access -------------------------------------------------------------------------
    def _get_value(self, kind: str, value: str) -> ValueEntry | None:
        cached = self._values.get((kind, value))
        if cached is not None:
            return cached
        raw = self.store.get(f"v:{kind}:{value}".encode())
        return _dec_value.decode(raw) if raw else None

    def _get_customer(self, cid: str) -> CustomerEntry | None:
        cached = self._customers.get(cid)
        if cached is not None:
            return cached
        raw = self.store.get(f"c:{cid}".encode())
        entry = _dec_customer.decode(raw) if raw else None
        if entry is not None:
            self._customers[cid] = entry
        return entry

    def _customer(self, cid: str) -> CustomerEntry:
        entry = self._get_customer(cid)
        assert entry is not None, f"identity store has no entry for {cid}"
        return entry

    def _marker(self, prefix: str, fp: str) -> ErasureMarker | None:
        raw = self.store.get(f"{prefix}:{fp}".encode())
        return _dec_marker.decode(raw) if raw else None

    def _flush(self) -> None:
        for (kind, value), ventry in self._values.items():
            self.store[f"v:{kind}:{value}".encode()] = _enc.encode(ventry)
        for cid in self._dirty:
            centry = self._customers.get(cid)
            if centry is not None:
                self.store[f"c:{cid}".encode()] = _enc.encode(centry)
        self._values.clear()
        self._customers.clear()
        self._dirty.clear()

    def _delete(self, key: str) -> None:
        k = key.encode()
        if k in self.store:
            del self.store[k]

    def _next_seq(self) -> int:
        raw = self.store.get(b"#seq")
        seq = int(raw) if raw else 0
        self.store[b"#seq"] = str(seq + 1).encode()
        return seq

    # -- reads --------------------------------------------------------------------------------
    def canonical(self, customer_id: str) -> str | None:
        """The canonical id behind a canonical id, an alias of a merged customer, or a CRM customer id."""
        if self.store.get(f"c:{customer_id}".encode()) is not None:
            return customer_id
        alias = self.store.get(f"a:{customer_id}".encode())
        if alias is not None:
            return alias.decode()
        return self.lookup("customer_id", customer_id)

    def lookup(self, kind: str, value: str) -> str | None:
        """The customer a normalised identifier resolves to (None if unknown or quarantined)."""
        entry = self._get_value(kind, value)
        return None if entry is None or entry.shared else entry.owner

    def index_value(self, kind: str, value: str) -> str | None:
        """What the identifier index holds for one identifier: its current owner, ``SHARED``, or None."""
        entry = self._get_value(kind, value)
        if entry is None:
            return None
        return SHARED if entry.shared else self._current(entry.owner)

    def erased_at(self, kind: str, value: str) -> float | None:
        """When the identifier was last erased (an event at or before it is suppressed), or None."""
        marker = self._marker("e", fingerprint(kind, value))
        return marker.at if marker is not None else None

    def index_entries(self) -> Iterator[tuple[tuple[str, str], str]]:
        """The whole identifier index as the lookups see it: (kind, value) -> canonical id (or ``SHARED``),
        ("alias", absorbed id) -> survivor.  What the Redis index holds when nothing is pending.

        >>> r = Resolver({})
        >>> _ = r.resolve({"email": "jane@x.org"}, event_id="e1", at=1.0)
        >>> _ = r.resolve({"phone": "+447700900123"}, event_id="e2", at=2.0)
        >>> _ = r.resolve({"email": "jane@x.org", "phone": "+447700900123"}, event_id="e3", at=3.0)
        >>> sorted(r.index_entries())
        [(('alias', 'cust-d9b4097dc53de02e'), 'cust-97b1cb025d5c7bdd'), (('email', 'jane@x.org'), 'cust-97b1cb025d5c7bdd'), (('phone', '+447700900123'), 'cust-97b1cb025d5c7bdd')]
        """
        for raw_key in list(self.store):
            key = raw_key.decode()
            if key.startswith("v:"):
                _, kind, value = key.split(":", 2)
                entry = _dec_value.decode(self.store[raw_key])
                owner = SHARED if entry.shared else self._current(entry.owner)
                if owner is not None:
                    yield (kind, value), owner
            elif key.startswith("a:"):
                survivor = self._current(self.store[raw_key].decode())
                if survivor is not None:
                    yield ("alias", key[2:]), survivor

    # -- resolution ---------------------------------------------------------------------------
    def resolve(
        self,
        ids: Mapping[str, str],
        *,
        event_id: str,
        at: float,
        refused: Iterable[RefusedIdentifier] = (),
    ) -> Resolution:
        """Resolve one event's normalised identifiers; links, merges and refusals are applied to the store."""
        try:
            return self._resolve(ids, event_id, at, list(refused))
        finally:
            self._flush()

    def _resolve(self, ids: Mapping[str, str], event_id: str, at: float, refused: list[RefusedIdentifier]) -> Resolution:
        res = Resolution(customer_id=None)
        pending: list[tuple[str, str, str, str, str | None]] = [(r.kind, r.fingerprint, r.reason, r.detail, None) for r in refused]
        items: list[_Item] = []
        for kind in PRECEDENCE:
            value = ids.get(kind)
            if not value:
                continue
            fp = fingerprint(kind, value)
            marker = self._marker("e", fp)
            if marker is not None and at <= marker.at:
                res.suppressed_by = fp
                return res
            entry = self._get_value(kind, value)
            if entry is None and kind == "customer_id":
                ref = self._canonical_ref(value)
                if ref is not None:
                    items.append(_Item(kind, value, fp, ref, None, ref=True))
                    continue
            if entry is not None and entry.shared:
                res.index[(kind, value)] = SHARED
                pending.append((kind, fp, "shared_value", f"{kind}: quarantined, presented by too many customers", entry.owner))
                continue
            items.append(_Item(kind, value, fp, entry.owner if entry else None, entry))

        target, anchor = self._choose(items)
        if target is None and anchor is None:
            res.records.extend(self._refusals(pending, event_id, at, None))
            return res  # nothing usable: the caller treats the event as anonymous
        if anchor is not None:
            target = self._create(anchor, event_id, at, res)
        assert target is not None
        for it in items:
            if it is anchor:
                continue
            owner = self._current(it.owner) if it.owner else None
            if owner is None:
                if self._room(self._customer(target), it.kind):
                    self._link(it, target, event_id, at, res)
                else:
                    pending.append((it.kind, it.fp, "too_many_values", f"the customer already has {self.limits.limit(it.kind)} {it.kind} value(s)", target))
                continue
            if owner == target:
                continue
            t_entry, o_entry = self._customer(target), self._customer(owner)
            if not it.ref and it.kind in WEAK_KINDS and not o_entry.weak_only():
                pending.append((it.kind, it.fp, "weak_identifier", f"a {it.kind} never merges two identified customers", owner))
                continue
            conflict = self._conflict(t_entry, o_entry)
            if conflict is not None:
                reason, detail = conflict
                pending.append((it.kind, it.fp, reason, detail, owner))
                if not it.ref and it.entry is not None and self._claim(it, target, owner, pending):
                    res.index[(it.kind, it.value)] = SHARED
                continue
            target = self._merge(target, owner, it, event_id, at, res)
        for it in items:
            if not it.ref and (it.kind, it.value) not in res.index and self._current(self._owner_now(it)) == target:
                res.index[(it.kind, it.value)] = target
        res.customer_id = target
        res.records.extend(self._refusals(pending, event_id, at, target))
        return res

    def _refusals(self, pending: list[tuple[str, str, str, str, str | None]], event_id: str, at: float, target: str | None) -> list[LinkRefused]:
        return [
            LinkRefused(
                event_id=event_id, kind=kind, fingerprint=fp, reason=reason, at=at, detail=detail,  # type: ignore[arg-type]
                customer_id=target, other_customer_id=other if other != target else None,
            )
            for kind, fp, reason, detail, other in pending
        ]

    def _canonical_ref(self, value: str) -> str | None:
        if self.store.get(f"c:{value}".encode()) is not None:
            return value
        alias = self.store.get(f"a:{value}".encode())
        return alias.decode() if alias is not None else None

    def _current(self, cid: str | None) -> str | None:
        if cid is None:
            return None
        if cid in self._customers or self.store.get(f"c:{cid}".encode()) is not None:
            return cid
        alias = self.store.get(f"a:{cid}".encode())
        return alias.decode() if alias is not None else cid

    def _owner_now(self, it: _Item) -> str | None:
        if it.ref:
            return it.owner
        entry = self._get_value(it.kind, it.value)
        return None if entry is None or entry.shared else entry.owner

    def _trusted(self, it: _Item) -> bool:
        if it.kind not in WEAK_KINDS or it.owner is None:
            return True
        return self._customer(it.owner).weak_only()

    def _room(self, entry: CustomerEntry, kind: str) -> bool:
        return len(entry.values.get(kind, ())) < self.limits.limit(kind)

    def _choose(self, items: list[_Item]) -> tuple[str | None, _Item | None]:
        """(known target, None) or (None, anchor of a new customer) or (None, None) if nothing is usable."""
        for i, it in enumerate(items):
            if it.owner is not None:
                if self._trusted(it):
                    return it.owner, None
                continue
            nxt = next((j.owner for j in items[i + 1 :] if j.owner is not None and self._trusted(j)), None)
            if nxt is None or not self._room(self._customer(nxt), it.kind):
                return None, it
        first_known = next((it.owner for it in items if it.owner is not None), None)
        return first_known, None

    def _create(self, anchor: _Item, event_id: str, at: float, res: Resolution) -> str:
        marker = self._marker("e", anchor.fp)
        cid = new_customer_id(anchor.kind, anchor.value, marker.generation if marker else 0)
        seq = self._next_seq()
        if self._get_customer(cid) is not None or self.store.get(f"a:{cid}".encode()) is not None or self._marker("x", hashed_id(cid)):
            cid = f"cust-{_h(anchor.kind, anchor.value, str(seq))}"
        self._customers[cid] = CustomerEntry(seq=seq, values={anchor.kind: [anchor.value]})
        self._dirty.add(cid)
        self._values[(anchor.kind, anchor.value)] = ValueEntry(owner=cid)
        res.created = True
        res.records.append(IdentityLinked(event_id=event_id, customer_id=cid, kind=anchor.kind, fingerprint=anchor.fp, at=at, created=True))  # type: ignore[arg-type]
        return cid

    def _link(self, it: _Item, target: str, event_id: str, at: float, res: Resolution) -> None:
        entry = self._customer(target)
        entry.values.setdefault(it.kind, []).append(it.value)
        self._dirty.add(target)
        self._values[(it.kind, it.value)] = ValueEntry(owner=target)
        res.records.append(IdentityLinked(event_id=event_id, customer_id=target, kind=it.kind, fingerprint=it.fp, at=at))  # type: ignore[arg-type]

    def _conflict(self, a: CustomerEntry, b: CustomerEntry) -> tuple[str, str] | None:
        for kind in set(a.values) | set(b.values):
            union = set(a.values.get(kind, ())) | set(b.values.get(kind, ()))
            limit = self.limits.limit(kind)
            if len(union) > limit:
                if limit == 1:
                    return "conflicting_ids", f"the two customers have different {kind} values"
                return "too_many_values", f"together the two customers would have {len(union)} {kind} values (limit {limit})"
        return None

    def _claim(self, it: _Item, target: str, owner: str, pending: list[tuple[str, str, str, str, str | None]]) -> bool:
        """Count *target* as one more customer presenting the value; True when that quarantines it."""
        entry = self._get_value(it.kind, it.value)
        assert entry is not None
        if target not in entry.claims:
            entry.claims.append(target)
        self._values[(it.kind, it.value)] = entry
        if len({owner, *entry.claims}) > self.limits.customers_per_value and not entry.shared:
            entry.shared = True
            detail = f"{it.kind}: presented by more than {self.limits.customers_per_value} customers; quarantined"
            pending.append((it.kind, it.fp, "shared_value", detail, owner))
            return True
        return False

    def _merge(self, target: str, owner: str, it: _Item, event_id: str, at: float, res: Resolution) -> str:
        t_entry, o_entry = self._customer(target), self._customer(owner)
        survivor, absorbed = (target, owner) if t_entry.seq <= o_entry.seq else (owner, target)
        s_entry, a_entry = self._customer(survivor), self._customer(absorbed)
        for kind, values in a_entry.values.items():
            for value in values:
                s_entry.values.setdefault(kind, [])
                if value not in s_entry.values[kind]:
                    s_entry.values[kind].append(value)
                ventry = self._get_value(kind, value) or ValueEntry(owner=survivor)
                ventry.owner = survivor
                self._values[(kind, value)] = ventry
                if not ventry.shared:
                    res.index[(kind, value)] = survivor
        moved = [absorbed, *a_entry.absorbed]
        s_entry.absorbed = [*s_entry.absorbed, *moved]
        for old in moved:
            self.store[f"a:{old}".encode()] = survivor.encode()
            res.index[("alias", old)] = survivor
        del self._customers[absorbed]
        self._dirty.discard(absorbed)
        self._dirty.add(survivor)
        self._delete(f"c:{absorbed}")
        merge_id = f"merge-{_h(survivor, absorbed, event_id)}"
        res.records.append(
            CustomersMerged(
                merge_id=merge_id, survivor_id=survivor, absorbed_id=absorbed, kind=it.kind,  # type: ignore[arg-type]
                fingerprint=it.fp, event_id=event_id, at=at,
            )
        )
        res.merges.append(MergeContext(merge_id=merge_id, survivor_id=survivor, absorbed_id=absorbed, at=at))
        return survivor

    # -- erasure ------------------------------------------------------------------------------
    def erase(self, ids: Mapping[str, str], *, request_id: str, at: float) -> Erasure:
        """Forget every customer the identifiers resolve to; keep hashed markers only.

        Idempotent: a second request finds nothing and says ``already_erased`` when the
        identifiers were erased before.
        """
        try:
            return self._erase(ids, request_id, at)
        finally:
            self._flush()

    def _erase(self, ids: Mapping[str, str], request_id: str, at: float) -> Erasure:
        found: list[str] = []
        subjects: list[str] = []
        seen_before = False
        for kind in PRECEDENCE:
            value = ids.get(kind)
            if not value:
                continue
            fp = fingerprint(kind, value)
            cid = self.canonical(value) if kind == "customer_id" else self.lookup(kind, value)
            if cid is not None and cid not in found:
                found.append(cid)
            if self._marker("e", fp) is not None or (kind == "customer_id" and self._marker("x", hashed_id(value))):
                seen_before = True
            if cid is None:
                self._mark("e", fp, at)  # in-flight events with it must not create the customer
                subjects.append(fp)
        index: dict[tuple[str, str], str | None] = {}
        customers: list[tuple[str, list[str]]] = []
        records: list[IdentityErased] = []
        for cid in found:
            entry = self._get_customer(cid)
            if entry is None:
                continue
            removed = 0
            for kind, values in entry.values.items():
                for value in values:
                    fp = fingerprint(kind, value)
                    self._values.pop((kind, value), None)
                    self._delete(f"v:{kind}:{value}")
                    self._mark("e", fp, at)
                    index[(kind, value)] = None
                    subjects.append(fp)
                    removed += 1
            for old in entry.absorbed:
                self._delete(f"a:{old}")
                self._mark("x", hashed_id(old), at)
                index[("alias", old)] = None
                subjects.append(hashed_id(old))
            self._customers.pop(cid, None)
            self._dirty.discard(cid)
            self._delete(f"c:{cid}")
            self._mark("x", hashed_id(cid), at)
            subjects.append(hashed_id(cid))
            customers.append((cid, list(entry.absorbed)))
            records.append(IdentityErased(request_id=request_id, customer_id=cid, at=at, absorbed_ids=list(entry.absorbed), identifiers_removed=removed))
        return Erasure(customers, records, index, sorted(set(subjects)), already_erased=seen_before and not customers)

    def _mark(self, prefix: str, fp: str, at: float) -> None:
        old = self._marker(prefix, fp)
        generation = old.generation + 1 if old is not None and old.at < at else (old.generation if old else 1)
        self.store[f"{prefix}:{fp}".encode()] = _enc.encode(ErasureMarker(at=max(at, old.at if old else at), generation=generation))

