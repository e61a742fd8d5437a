"""The context stage keys the contacts it routes per customer (issue 18): the key rides on the request
and on every update of the contact, survives identity merges, and a rejection shows on the context."""

from __future__ import annotations

from cxstream.context import apply_assignment, apply_interaction, merge_contexts
from cxstream.context.update import apply_rejection
from cxstream.schemas import Assignment, ContactRequest, ContactUpdate, Identifiers, InteractionEvent, RoutingEvent
from cxstream.schemas.routing import contact_key


def opened(event_id: str, customer: str, contact: str, at: float, **kw: object) -> InteractionEvent:
    return InteractionEvent(event_id=event_id, occurred_at=at, channel="chat", kind="contact_opened",  # type: ignore[arg-type]
                            customer=Identifiers(customer_id=customer), contact_id=contact, needs_advisor=True, **kw)


def test_two_customers_same_contact_id_get_different_keys_on_request_and_close() -> None:
    _, fa = apply_interaction(None, opened("e1", "A", "c-u1", 10.0), "A")
    b, fb = apply_interaction(None, opened("e2", "B", "c-u1", 20.0), "B")
    [ra], [rb] = fa.routing, fb.routing
    assert isinstance(ra, ContactRequest) and isinstance(rb, ContactRequest)
    assert (ra.contact_key, rb.contact_key) == (contact_key("A", "c-u1"), contact_key("B", "c-u1"))
    assert b.open_contacts["c-u1"].contact_key == rb.contact_key
    close = InteractionEvent(event_id="e3", occurred_at=30.0, channel="chat", kind="contact_abandoned",
                             customer=Identifiers(customer_id="B"), contact_id="c-u1")
    _, fx = apply_interaction(b, close, "B")
    [u] = fx.routing
    assert isinstance(u, ContactUpdate) and (u.kind, u.contact_key) == ("abandoned", rb.contact_key)


def test_the_key_survives_a_merge_and_the_survivor_closes_the_contact_with_it() -> None:
    old, fx = apply_interaction(None, opened("e1", "B", "c-9", 10.0), "B")
    [req] = fx.routing
    survivor, _ = apply_interaction(None, InteractionEvent(event_id="e2", occurred_at=11.0, channel="web", kind="page_view",
                                                           customer=Identifiers(customer_id="A")), "A")
    merged = merge_contexts(survivor, old, "A", "B", "m1", 12.0)
    close = InteractionEvent(event_id="e3", occurred_at=30.0, channel="chat", kind="contact_closed",
                             customer=Identifiers(customer_id="A"), contact_id="c-9")
    _, fx = apply_interaction(merged, close, "A")
    [u] = fx.routing
    assert isinstance(u, ContactUpdate) and isinstance(req, ContactRequest) and u.contact_key == req.contact_key == contact_key("B", "c-9")


def test_a_merge_of_two_copies_of_one_contact_closes_the_second_copy_in_the_router() -> None:
    """The channel opened chat c-5 under two identifiers before they were linked: two requests; the merge
    keeps one contact (the assigned copy) and closes the other in the router, by its key."""
    a, _ = apply_interaction(None, opened("e1", "A", "c-5", 10.0), "A")
    b, _ = apply_interaction(None, opened("e2", "B", "c-5", 10.0), "B")
    kb = contact_key("B", "c-5")
    b = apply_assignment(b, Assignment(assignment_id="as1", contact_id="c-5", customer_id="B", advisor_id="ann", routing_group="default",
                                       channel="chat", contact_opened_at=10.0, decided_at=11.0, waited_s=1.0, contact_key=kb))
    routing: list[ContactRequest | ContactUpdate] = []
    m = merge_contexts(a, b, "A", "B", "m1", 20.0, routing=routing)
    assert (m.open_contacts["c-5"].contact_key, m.open_contacts["c-5"].state) == (kb, "assigned")
    [u] = routing
    assert isinstance(u, ContactUpdate) and (u.kind, u.contact_key, u.event_id) == ("closed", contact_key("A", "c-5"), "m1:c-5:duplicate")


def test_a_rejection_shows_on_the_context_with_its_reason_once() -> None:
    ctx, _ = apply_interaction(None, opened("e1", "B", "c-u1", 10.0), "B")
    ev = RoutingEvent(event_id="r1", kind="rejected", routing_group="default", contact_id="c-u1", at=11.0,
                      detail="contact_key_in_use", customer_id="B", contact_key=contact_key("B", "c-u1"))
    new = apply_rejection(ctx, ev)
    assert new is not None and (new.open_contacts["c-u1"].state, new.open_contacts["c-u1"].reason) == ("rejected", "contact_key_in_use")
    assert apply_rejection(new, ev) is None  # redelivered
    other = RoutingEvent(event_id="r2", kind="rejected", routing_group="default", contact_id="c-u1", at=11.0, contact_key="c-u1~other")
    assert apply_rejection(ctx, other) is None  # another customer's contact with that id


def test_the_same_contact_sent_again_after_it_ended_is_not_routed_again() -> None:
    """A channel system re-sends the customer's contact_opened (new event id, same contact, same opening
    time) after the contact was closed: the same contact, not a new one; a later contact reusing the id is new."""
    ctx, fx = apply_interaction(None, opened("e1", "A", "c-1", 10.0), "A")
    assert len(fx.routing) == 1
    close = InteractionEvent(event_id="e2", occurred_at=20.0, channel="chat", kind="contact_closed",
                             customer=Identifiers(customer_id="A"), contact_id="c-1")
    ctx, _ = apply_interaction(ctx, close, "A")
    ctx, fx = apply_interaction(ctx, opened("e1-resent", "A", "c-1", 10.0), "A")
    assert fx.routing == [] and ctx.open_contacts == {} and ctx.contacts_total == 1
    ctx, fx = apply_interaction(ctx, opened("e3", "A", "c-1", 30.0), "A")
    [req] = fx.routing
    assert isinstance(req, ContactRequest) and req.opened_at == 30.0 and "c-1" in ctx.open_contacts
