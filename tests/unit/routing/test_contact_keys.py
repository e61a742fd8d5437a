"""Contacts are keyed per customer (issue 18): a contact id reused by another customer is routed, never
silently stuck; a contact the router cannot take is visible; and a contact's ending at the very instant
of a router timer is never also an offer (no call counted both answered and abandoned)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from cxstream.routing import Router, RoutingConfig
from cxstream.schemas.events import AdvisorEvent
from cxstream.schemas.outputs import Assignment, RoutingEvent
from cxstream.schemas.routing import ContactRequest, ContactUpdate, contact_key
from tests.unit.routing.routing_fixtures import login

BEFORE_KEYS = Path(__file__).with_name("state_before_contact_keys.json")
CHAT = {"chat": 3}


def req(event_id: str, contact: str, customer: str, t: float, *, key: str | None = None, channel: str = "chat",
        skills: list[str] | None = None) -> ContactRequest:
    keyed = {"contact_key": key} if key else {}  # (so the keyless cases also run on the router before keys)
    return ContactRequest(
        event_id=event_id, contact_id=contact, customer_id=customer, routing_group="default", channel=channel,  # type: ignore[arg-type]
        opened_at=t, required_skills=skills or [], **keyed,
    )


def upd(event_id: str, contact: str, kind: str, t: float, *, key: str | None = None) -> ContactUpdate:
    keyed = {"contact_key": key} if key else {}
    return ContactUpdate(event_id=event_id, contact_id=contact, routing_group="default", kind=kind, at=t, **keyed)  # type: ignore[arg-type]


def adv(event_id: str, advisor: str, kind: str, t: float, a: Assignment | None = None, *, contact: str | None = None,
        key: str | None = None) -> AdvisorEvent:
    key = getattr(a, "contact_key", None) if a else key
    keyed = {"contact_key": key} if key else {}
    return AdvisorEvent(
        event_id=event_id, occurred_at=t, advisor_id=advisor, kind=kind,  # type: ignore[arg-type]
        contact_id=a.contact_id if a else contact, assignment_id=a.assignment_id if a else None, **keyed,
    )


def offers(out: list[object]) -> list[Assignment]:
    return [o for o in out if isinstance(o, Assignment)]


def events(out: list[object], kind: str | None = None) -> list[RoutingEvent]:
    return [o for o in out if isinstance(o, RoutingEvent) and (kind is None or o.kind == kind)]


def three_free() -> Router:
    r = Router()
    for a in ("ann", "bob", "cid"):
        r.apply(login(a, 0.0, capacity=CHAT))
    return r


def test_a_contact_id_reused_by_another_customer_is_routed_not_stuck() -> None:
    """The issue's scenario with records that carry no key (an older producer): customer A's chat c-u1 is
    assigned and accepted; customer B's chat c-u1, three advisors free, must be offered too."""
    r = three_free()
    [a] = offers(r.apply(req("e1", "c-u1", "cust-A", 10.0)))
    r.apply(adv("acc-a", a.advisor_id, "offer_accepted", 11.0, a))
    out = r.apply(req("e2", "c-u1", "cust-B", 20.0))
    [b] = offers(out)
    assert (b.contact_id, b.customer_id) == ("c-u1", "cust-B")
    assert b.contact_key != a.contact_key and b.assignment_id != a.assignment_id
    # each contact is found by its key: B's completion does not touch A's contact
    r.apply(adv("acc-b", b.advisor_id, "offer_accepted", 21.0, b))
    [done] = events(r.apply(adv("done-b", b.advisor_id, "contact_completed", 30.0, b)), "completed")
    assert (done.customer_id, done.contact_key) == ("cust-B", b.contact_key)
    assert r.contact("c-u1", a.contact_key) is not None and r.contact("c-u1", b.contact_key) is None
    assert r.stats()["total"]["answered"] == 2


def test_keyed_requests_from_the_context_stage_never_collide() -> None:
    """The context stage keys each contact by customer (``contact_key``): A's and B's c-u1 are two contacts,
    and updates and desk actions carrying the key reach the right one."""
    r = three_free()
    ka, kb = contact_key("cust-A", "c-u1"), contact_key("cust-B", "c-u1")
    [a] = offers(r.apply(req("e1", "c-u1", "cust-A", 10.0, key=ka)))
    r.apply(adv("acc-a", a.advisor_id, "offer_accepted", 11.0, a))
    [b] = offers(r.apply(req("e2", "c-u1", "cust-B", 20.0, key=kb)))
    assert (a.contact_key, b.contact_key) == (ka, kb)
    [gone] = events(r.apply(upd("ab-b", "c-u1", "abandoned", 25.0, key=kb)), "abandoned")
    assert gone.customer_id == "cust-B" and r.contact("c-u1", ka) is not None and r.contact("c-u1", kb) is None
    [done] = events(r.apply(adv("done-a", a.advisor_id, "contact_completed", 40.0, a)), "completed")
    assert done.customer_id == "cust-A" and r.contact("c-u1") is None


def test_the_same_customer_sending_its_contact_again_is_a_duplicate() -> None:
    r = three_free()
    for key in (None, contact_key("cust-A", "c-k")):
        contact = "c-k" if key else "c-u1"
        [a] = offers(r.apply(req(f"e1{contact}", contact, "cust-A", 10.0, key=key)))
        assert r.apply(req(f"e2{contact}", contact, "cust-A", 12.0, key=key)) == []  # new event id, same contact
        assert r.contact(contact, a.contact_key) is not None
    assert r.stats()["total"]["offered"] == 2 and r.stats()["total"]["duplicate_requests"] == 2


def test_a_contact_the_router_cannot_take_is_rejected_visibly() -> None:
    """A key another customer's contact holds (a producer reusing keys): a ``rejected`` routing event with
    the reason, counted in the queue's statistics; the contact already there is untouched."""
    r = three_free()
    [a] = offers(r.apply(req("e1", "c-u1", "cust-A", 10.0, key="k-1")))
    out = r.apply(req("e2", "c-u1", "cust-B", 20.0, key="k-1"))
    [rej] = events(out)
    assert (rej.kind, rej.detail, rej.customer_id, rej.contact_key) == ("rejected", "contact_key_in_use", "cust-B", "k-1")
    assert offers(out) == [] and r.stats()["total"]["rejected"] == 1
    assert r.contact("c-u1", "k-1") is not None and r.contact("c-u1", "k-1").customer_id == "cust-A"  # type: ignore[union-attr]
    assert a.contact_key == "k-1"


def test_an_update_without_key_is_matched_when_unambiguous_and_rejected_visibly_when_not() -> None:
    r = Router()
    r.apply(req("e1", "c-u1", "cust-A", 10.0))  # nobody logged in: both wait
    r.apply(req("e2", "c-u1", "cust-B", 11.0))
    [rej] = events(r.apply(upd("ab", "c-u1", "abandoned", 12.0)))
    assert (rej.kind, rej.detail) == ("rejected", "update_ambiguous;kind=abandoned")
    assert r.stats()["total"]["waiting"] == 2
    [gone] = events(r.apply(upd("ab-b", "c-u1", "abandoned", 13.0, key=contact_key("cust-B", "c-u1"))))
    assert (gone.kind, gone.customer_id) == ("abandoned", "cust-B")
    [gone] = events(r.apply(upd("ab-a", "c-u1", "abandoned", 14.0)))  # one left with that id: no key needed
    assert (gone.kind, gone.customer_id) == ("abandoned", "cust-A")


def test_a_merged_customers_contact_is_still_found_by_its_key() -> None:
    """The customer's id changes while the contact is open (identity merge): the survivor's context sends
    the key the contact was requested with, and the transfer, completion and close all find it."""
    r = three_free()
    key = contact_key("cust-old", "c-9")
    [a] = offers(r.apply(req("e1", "c-9", "cust-old", 10.0, key=key)))
    r.apply(adv("acc", a.advisor_id, "offer_accepted", 11.0, a))
    t = AdvisorEvent(event_id="tr", occurred_at=12.0, advisor_id=a.advisor_id, kind="contact_transferred",
                     contact_id="c-9", contact_key=key, transfer_to_advisor_id="bob")
    out = r.apply(t)
    assert [e.kind for e in events(out)] == ["transferred"]
    [b] = offers(out)
    assert (b.advisor_id, b.contact_key) == ("bob", key)
    r.apply(adv("acc2", "bob", "offer_accepted", 13.0, b))
    [done] = events(r.apply(upd("close", "c-9", "closed", 20.0, key=key)), "completed")
    assert (done.contact_key, done.advisor_id) == (key, "bob") and r.contact("c-9", key) is None


def test_assignment_ids_stay_deterministic_and_distinct_for_two_customers_same_id_same_second() -> None:
    def run() -> list[bytes]:
        r = three_free()
        o = r.apply(req("e1", "c-u1", "cust-A", 10.0, key=contact_key("cust-A", "c-u1")))
        o += r.apply(req("e2", "c-u1", "cust-B", 10.0, key=contact_key("cust-B", "c-u1")))
        r = Router.from_state(r.to_state())
        o += r.apply(req("e3", "c-u1", "cust-C", 10.0))
        return [msgspec.json.encode(x) for x in o]

    first = run()
    assert first == run()
    ids = {msgspec.json.decode(x)["assignment_id"] for x in first if b'"assignment_id"' in x}
    assert len(ids) == 3


def test_a_state_saved_before_contact_keys_still_loads_and_works() -> None:
    """``state_before_contact_keys.json`` was written by the router of commit 559786c (contacts keyed by id
    only): ann holds customer A's chat c-u1; a voice call c-w2 waits.  It loads, its contacts are found by
    id, and a reused c-u1 of another customer is routed."""
    r = Router.from_state(BEFORE_KEYS.read_bytes())
    held = r.contact("c-u1")
    assert held is not None and (held.key, held.advisor_id, held.status) == ("c-u1", "ann", "active")
    assert r.stats()["total"]["waiting"] == 1
    [w2] = offers(r.apply(login("bob", 15.0, capacity={"voice": 1})))
    assert (w2.contact_id, w2.contact_key) == ("c-w2", "c-w2")
    [b] = offers(r.apply(req("e9", "c-u1", "cust-B", 16.0)))  # ann has room for another chat
    assert (b.advisor_id, b.customer_id, b.contact_key) == ("ann", "cust-B", contact_key("cust-B", "c-u1"))
    # an old desktop's completion names no key: ann holds two c-u1 now, so the router cannot tell which
    [rej] = events(r.apply(upd("close-old", "c-u1", "closed", 17.0)))
    assert (rej.kind, rej.detail) == ("rejected", "update_ambiguous;kind=closed")
    [done] = events(r.apply(adv("done", "ann", "contact_completed", 20.0, contact="c-u1", key="c-u1")), "completed")
    assert done.customer_id == "cust-A"
    [done] = events(r.apply(adv("done-b", "ann", "contact_completed", 21.0, contact="c-u1")), "completed")
    assert done.customer_id == "cust-B"  # the only c-u1 left
    again = Router.from_state(r.to_state())
    assert again.to_state() == r.to_state()


# ------------------------------------------------------------------ a contact ending at a timer's instant
def test_a_hang_up_at_the_instant_an_escalation_would_offer_the_call_is_only_an_abandon() -> None:
    """The minimal sequence behind ``unresolved: -1``: a voice call needing skill A waits (advisor b has only
    B); at 120 s the escalation timer would widen it to any advisor; the customer hangs up at that same
    instant.  The router must apply the hang-up first: no offer of a call already gone (the desktop would
    accept it and the call would count both answered and abandoned)."""
    sla = RoutingConfig().sla_for("voice")
    r = Router()
    r.apply(login("b", 0.0, skills={"B": 3}))
    assert offers(r.apply(req("e1", "c1", "u1", 100.0, channel="voice", skills=["A"]))) == []
    out = r.apply(upd("hang-up", "c1", "abandoned", 100.0 + sla))
    assert offers(out) == [], "an offer made at the very instant the customer hung up"
    assert [e.kind for e in events(out)][-1] == "abandoned"
    total = r.stats()["total"]
    assert (total["offers"], total["answered"], total["abandoned"]) == (0, 0, 1)
    assert r.advisor("b") is not None and r.advisor("b").held == []  # type: ignore[union-attr]


def test_a_call_answered_then_transferred_and_abandoned_is_not_also_counted_abandoned() -> None:
    r = Router()
    r.apply(login("a", 0.0, skills={"A": 3}))
    [o] = offers(r.apply(req("e1", "c1", "u1", 10.0, channel="voice", skills=["A"])))
    r.apply(adv("acc", "a", "offer_accepted", 12.0, o))
    r.apply(AdvisorEvent(event_id="tr", occurred_at=40.0, advisor_id="a", kind="contact_transferred", contact_id="c1",
                         transfer_to_skills=["Z"]))  # nobody has Z: it waits
    [gone] = events(r.apply(upd("hang-up", "c1", "abandoned", 45.0)), "abandoned")
    assert gone.detail == "abandoned_after_transfer"
    total = r.stats()["total"]
    assert (total["offered"], total["answered"], total["abandoned"], total["abandoned_after_answer"]) == (1, 1, 0, 1)
    assert total["abandon_rate"] == 0.0


def test_a_full_queue_rejects_new_contacts_visibly_and_takes_them_again_once_there_is_room() -> None:
    """Queue capacity (``max_contacts``): the router's state stays bounded under overload (the chaos run's
    overload grew it past what the broker accepts in one record); each contact turned away is said."""
    r = Router(group="default", config=RoutingConfig(max_contacts=3))
    r.apply(login("ann", 0.0, capacity=CHAT))
    [a] = offers(r.apply(req("e1", "c1", "cust-1", 1.0)))
    for n in (2, 3):
        r.apply(req(f"e{n}", f"c{n}", f"cust-{n}", float(n)))
    out = r.apply(req("e4", "c4", "cust-4", 4.0))
    [rej] = events(out)
    assert (rej.kind, rej.detail, rej.customer_id) == ("rejected", "queue_full;max_contacts=3", "cust-4")
    assert offers(out) == [] and r.contact("c4", None) is None and r.stats()["total"]["rejected"] == 1
    r.apply(upd("u1", "c1", "abandoned", 5.0, key=a.contact_key))  # one leaves: room for the next
    assert r.contact("c5", None) is None
    r.apply(req("e5", "c5", "cust-5", 6.0))
    assert r.contact("c5", None) is not None
