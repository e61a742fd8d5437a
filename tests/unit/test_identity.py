"""Identity resolution: deterministic canonical ids, links, merges, guards against wrong merges, erasure."""

from __future__ import annotations

import random

import msgspec
import pytest

from cxstream.context.identity import partition_identifiers
from cxstream.context.resolver import SHARED, Resolver, ResolverLimits, fingerprint, hashed_id, new_customer_id
from cxstream.schemas import CustomersMerged, Identifiers, IdentityLinked, LinkRefused, RefusedIdentifier

JANE_EMAIL, JANE_PHONE, JANE_HANDLE = "jane@x.org", "+447700900123", "@jane"


def test_a_new_customer_gets_an_id_derived_from_its_first_identifier() -> None:
    r = Resolver({})
    res = r.resolve({"email": JANE_EMAIL, "phone": JANE_PHONE}, event_id="e1", at=1.0)
    assert res.customer_id == new_customer_id("email", JANE_EMAIL) and res.created
    assert [type(x) for x in res.records] == [IdentityLinked, IdentityLinked]
    assert res.records[0].created and not res.records[1].created
    assert r.lookup("phone", JANE_PHONE) == res.customer_id
    assert res.index == {("email", JANE_EMAIL): res.customer_id, ("phone", JANE_PHONE): res.customer_id}
    assert Resolver({}).resolve({"customer_id": "C-1", "email": "a@b.co"}, event_id="e", at=1).customer_id == "C-1"


def test_crm_ids_unsafe_in_urls_are_hashed() -> None:
    assert new_customer_id("customer_id", "a/b").startswith("cust-")
    assert new_customer_id("customer_id", "cust-123").startswith("cust-") and new_customer_id("customer_id", "cust-123") != "cust-123"


def test_an_event_with_a_known_and_a_new_identifier_links_them() -> None:
    r = Resolver({})
    jane = r.resolve({"email": JANE_EMAIL}, event_id="e1", at=1).customer_id
    res = r.resolve({"phone": JANE_PHONE, "email": JANE_EMAIL}, event_id="e2", at=2)
    assert res.customer_id == jane and not res.created and res.merges == []
    (link,) = res.records
    assert isinstance(link, IdentityLinked) and link.kind == "phone" and link.fingerprint == fingerprint("phone", JANE_PHONE)
    assert r.resolve({"phone": JANE_PHONE}, event_id="e3", at=3).customer_id == jane


def test_linking_two_known_customers_is_a_merge_into_the_first_seen() -> None:
    r = Resolver({})
    jane = r.resolve({"email": JANE_EMAIL}, event_id="e1", at=1).customer_id
    caller = r.resolve({"phone": JANE_PHONE}, event_id="e2", at=2).customer_id
    assert caller != jane
    res = r.resolve({"phone": JANE_PHONE, "email": JANE_EMAIL}, event_id="e3", at=3)
    assert res.customer_id == jane
    (merged,) = res.records
    assert isinstance(merged, CustomersMerged) and (merged.survivor_id, merged.absorbed_id) == (jane, caller)
    (m,) = res.merges
    assert (m.survivor_id, m.absorbed_id, m.merge_id) == (jane, caller, merged.merge_id)
    assert res.index[("alias", caller)] == jane and res.index[("phone", JANE_PHONE)] == jane
    assert r.canonical(caller) == jane and r.lookup("phone", JANE_PHONE) == jane
    # an event naming the old id (e.g. an advisor desktop that looked it up earlier) lands on the survivor
    assert r.resolve({"customer_id": caller}, event_id="e4", at=4).customer_id == jane
    assert r.lookup("customer_id", caller) is None, "a canonical id is resolved, never linked as a CRM id"


def test_merges_chain_and_aliases_follow_the_survivor() -> None:
    r = Resolver({})
    a = r.resolve({"email": "a@x.org"}, event_id="1", at=1).customer_id
    b = r.resolve({"phone": JANE_PHONE}, event_id="2", at=2).customer_id
    c = r.resolve({"social_handle": JANE_HANDLE}, event_id="3", at=3).customer_id
    r.resolve({"phone": JANE_PHONE, "social_handle": JANE_HANDLE}, event_id="4", at=4)  # c into b
    res = r.resolve({"email": "a@x.org", "social_handle": JANE_HANDLE}, event_id="5", at=5)  # b into a
    assert res.customer_id == a and {r.canonical(x) for x in (a, b, c)} == {a}
    assert res.index[("alias", c)] == a


def test_two_crm_customers_sharing_a_phone_are_never_merged_and_a_widely_shared_value_is_quarantined() -> None:
    r = Resolver({}, ResolverLimits(customers_per_value=3))
    office = "+442079460000"
    assert r.resolve({"customer_id": "C-1", "phone": office}, event_id="1", at=1).customer_id == "C-1"
    res = r.resolve({"customer_id": "C-2", "phone": office}, event_id="2", at=2)
    assert res.customer_id == "C-2" and res.merges == []
    refusal = next(x for x in res.records if isinstance(x, LinkRefused))
    assert (refusal.reason, refusal.customer_id, refusal.other_customer_id) == ("conflicting_ids", "C-2", "C-1")
    assert r.lookup("phone", office) == "C-1"
    r.resolve({"customer_id": "C-3", "phone": office}, event_id="3", at=3)
    res = r.resolve({"customer_id": "C-4", "phone": office}, event_id="4", at=4)
    assert "shared_value" in [x.reason for x in res.records if isinstance(x, LinkRefused)]
    assert res.index[("phone", office)] == SHARED, "the Redis index marks it shared"
    assert r.lookup("phone", office) is None, "quarantined: it resolves nobody any more"
    alone = r.resolve({"phone": office}, event_id="5", at=5)
    assert alone.customer_id is None and [x.reason for x in alone.records] == ["shared_value"]
    assert r.resolve({"customer_id": "C-1", "phone": office}, event_id="6", at=6).customer_id == "C-1"


def test_a_device_never_merges_identified_customers_but_anonymous_browsing_joins_on_login() -> None:
    r = Resolver({})
    brother = r.resolve({"email": "bro@x.org", "device_id": "laptop"}, event_id="1", at=1).customer_id
    res = r.resolve({"email": "sis@x.org", "device_id": "laptop"}, event_id="2", at=2)
    assert res.customer_id not in (None, brother) and res.merges == []
    assert [x.reason for x in res.records if isinstance(x, LinkRefused)] == ["weak_identifier"]
    assert r.lookup("device_id", "laptop") == brother

    jane = r.resolve({"email": JANE_EMAIL}, event_id="3", at=3).customer_id
    anon = r.resolve({"device_id": "phone-app-1"}, event_id="4", at=4).customer_id
    res = r.resolve({"email": JANE_EMAIL, "device_id": "phone-app-1"}, event_id="5", at=5)
    assert res.customer_id == jane and [(m.survivor_id, m.absorbed_id) for m in res.merges] == [(jane, anon)]


def test_per_kind_limits_refuse_extra_values() -> None:
    r = Resolver({}, ResolverLimits(values_per_kind={"email": 2}))
    cid = r.resolve({"customer_id": "C-9", "email": "1@x.org"}, event_id="1", at=1).customer_id
    r.resolve({"customer_id": "C-9", "email": "2@x.org"}, event_id="2", at=2)
    res = r.resolve({"customer_id": "C-9", "email": "3@x.org"}, event_id="3", at=3)
    assert res.customer_id == cid and [x.reason for x in res.records] == ["too_many_values"]
    assert r.lookup("email", "3@x.org") is None


def test_ingest_refusals_are_recorded_against_the_customer() -> None:
    ids, bad = partition_identifiers(Identifiers(email="Jane@X.org", phone="0000000", social_handle="null"))
    refused = [RefusedIdentifier(kind=k, fingerprint=fingerprint(k, "?"), reason=reason, detail=d) for k, (reason, d) in bad.items()]  # type: ignore[arg-type]
    res = Resolver({}).resolve(ids, event_id="e", at=1, refused=refused)
    refusals = [x for x in res.records if isinstance(x, LinkRefused)]
    assert sorted((x.kind, x.reason) for x in refusals) == [("phone", "blocked_value"), ("social_handle", "blocked_value")]
    assert all(x.customer_id == res.customer_id for x in refusals)
    assert all("0000000" not in x.detail for x in refusals)


def _journeys(seed: int) -> list[dict[str, str]]:
    rnd = random.Random(seed)
    people = [
        {"customer_id": f"C{i}", "email": f"p{i}@x.org", "phone": f"+4477009{i:05d}", "device_id": f"d{i}"} for i in range(30)
    ]
    events = []
    for _ in range(300):
        p = rnd.choice(people)
        kinds = rnd.sample(sorted(p), rnd.randint(1, 3))
        events.append({k: p[k] for k in kinds})
    return events


def test_resolution_is_replay_stable_and_never_mixes_people() -> None:
    enc = msgspec.json.encode
    events = _journeys(7)
    runs = []
    for _ in range(2):
        r = Resolver({})
        runs.append([enc([res.customer_id, res.records, res.merges]) for res in (r.resolve(e, event_id=str(i), at=i) for i, e in enumerate(events))])
    assert runs[0] == runs[1]
    r = Resolver({})
    for i, e in enumerate(events):
        r.resolve(e, event_id=str(i), at=i)
    owners: dict[str, set[str]] = {}
    for i in range(30):
        for kind, value in (("email", f"p{i}@x.org"), ("phone", f"+4477009{i:05d}"), ("customer_id", f"C{i}")):
            cid = r.lookup(kind, value)
            if cid:
                owners.setdefault(cid, set()).add(f"p{i}")
    assert all(len(v) == 1 for v in owners.values()), "a canonical customer holds one person only"


def test_erasure_forgets_everything_keeps_hashed_markers_and_suppresses_late_events() -> None:
    store: dict[bytes, bytes] = {}
    r = Resolver(store)
    jane = r.resolve({"email": JANE_EMAIL}, event_id="1", at=1).customer_id
    caller = r.resolve({"phone": JANE_PHONE}, event_id="2", at=2).customer_id
    r.resolve({"phone": JANE_PHONE, "email": JANE_EMAIL, "social_handle": JANE_HANDLE}, event_id="3", at=3)
    other = r.resolve({"email": "other@x.org"}, event_id="4", at=4).customer_id
    assert jane and caller and other

    erased = r.erase({"phone": JANE_PHONE}, request_id="req-1", at=10)
    assert erased.customers == [(jane, [caller])]
    (rec,) = erased.records
    assert rec.identifiers_removed == 3 and rec.absorbed_ids == [caller]
    assert erased.index[("email", JANE_EMAIL)] is None and erased.index[("alias", caller)] is None
    dump = b"|".join(k + b"=" + v for k, v in store.items())
    for secret in (JANE_EMAIL, JANE_PHONE, JANE_HANDLE, jane, caller):
        assert secret.encode() not in dump, f"{secret} is still readable in the identity store"
    assert r.lookup("email", "other@x.org") == other
    assert all(s.split(":")[0] in ("email", "phone", "social_handle", "customer") for s in erased.subjects)
    assert hashed_id(jane) in erased.subjects

    late = r.resolve({"email": JANE_EMAIL}, event_id="late", at=9.5)
    assert late.customer_id is None and late.suppressed_by == fingerprint("email", JANE_EMAIL)
    again = r.erase({"phone": JANE_PHONE}, request_id="req-2", at=11)
    assert again.customers == [] and again.already_erased
    back = r.resolve({"email": JANE_EMAIL}, event_id="new", at=20)
    assert back.customer_id not in (None, jane), "a customer who comes back after erasure starts afresh, with a new id"


def test_erasing_an_unknown_identifier_blocks_in_flight_events_that_carry_it() -> None:
    r = Resolver({})
    res = r.erase({"email": "ghost@x.org"}, request_id="r", at=5)
    assert res.customers == [] and res.subjects == [fingerprint("email", "ghost@x.org")]
    assert r.resolve({"email": "ghost@x.org"}, event_id="e", at=4).customer_id is None


@pytest.mark.parametrize("value", ["noreply@shop.com", "0000000000", "1234567890", "N/A", "anonymous"])
def test_placeholders_are_blocked_at_the_door(value: str) -> None:
    kind = "email" if "@" in value else "phone"
    ok, bad = partition_identifiers(Identifiers(**{kind: value}))
    assert ok == {} and bad[kind][0] == "blocked_value"
