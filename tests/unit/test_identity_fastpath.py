"""A settled event (every identifier already owned by one customer, none quarantined) is a no-op for the resolver.

This is what lets identity scale past one partition (docs/IDENTITY.md, "Past one core";
bench/identity/partitioned.py): such events can go straight to their customer's context on
any worker, and only the others need the single total order.  Checked on generated journeys
with every trap (shared landlines and devices, a switchboard, placeholders), returning
customers and erasures, against the resolver's state before each event.
"""

from __future__ import annotations

from bench.identity.partitioned import journey_ops
from cxstream.context.resolver import Resolver, settled_owner


def test_a_settled_event_changes_nothing_and_lands_on_its_owner() -> None:
    r = Resolver({})
    settled = unsettled = 0
    for op in journey_ops(people=200, returns=2, erase_share=0.05, seed=11):
        if op.erase:
            r.erase(op.ids, request_id=op.event_id, at=op.at)
            continue

        def lookup(kind: str, value: str, at: float = op.at) -> str | None:
            erased = r.erased_at(kind, value)
            return None if erased is not None and at <= erased else r.index_value(kind, value)

        owner = None if op.refused else settled_owner(op.ids, lookup)
        before = dict(r.store)
        res = r.resolve(op.ids, event_id=op.event_id, at=op.at, refused=op.refused)
        if owner is None:
            unsettled += 1
            continue
        settled += 1
        assert res.customer_id == owner, op
        assert res.records == [] and res.merges == [] and not res.created, op
        assert dict(r.store) == before, f"a settled event wrote to the identity store: {op}"
    assert settled > 1000 and unsettled > 1000, (settled, unsettled)  # both paths were exercised


def test_an_unsettled_event_is_one_the_resolver_decides_something_for() -> None:
    """The converse, for the cases settled_owner refuses: a new identifier, two owners, a quarantined value."""
    r = Resolver({})
    r.resolve({"email": "a@x.org"}, event_id="e1", at=1.0)
    r.resolve({"phone": "+447700900123"}, event_id="e2", at=2.0)
    look = r.index_value
    assert settled_owner({"email": "a@x.org", "social_handle": "@new"}, look) is None
    assert r.resolve({"email": "a@x.org", "social_handle": "@new"}, event_id="e3", at=3.0).records  # a link
    assert settled_owner({"email": "a@x.org", "phone": "+447700900123"}, look) is None
    res = r.resolve({"email": "a@x.org", "phone": "+447700900123"}, event_id="e4", at=4.0)
    assert res.merges  # a merge
