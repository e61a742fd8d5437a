"""Foundation behaviour of the router: eligibility, longest idle, queueing, idempotence, offers."""

from __future__ import annotations

from cxstream.routing import Router, RoutingConfig
from cxstream.schemas.outputs import Assignment, RoutingEvent
from tests.unit.routing.routing_fixtures import adv_event, login, request, tick, update


def assignments(outs: list[object]) -> list[Assignment]:
    return [o for o in outs if isinstance(o, Assignment)]


def kinds(outs: list[object]) -> list[str]:
    return [o.kind for o in outs if isinstance(o, RoutingEvent)]


def test_longest_idle_advisor_gets_the_contact() -> None:
    r = Router()
    r.apply(login("zed", 10.0))
    r.apply(login("amy", 60.0))
    r.apply(login("bob", 50.0))  # a late event: the clock stays at 60, so bob is idle since 60 too
    [a] = assignments(r.apply(request("c1", 100.0)))
    assert a.advisor_id == "zed"  # idle since 10: longest
    [b] = assignments(r.apply(request("c2", 101.0)))
    assert b.advisor_id == "amy"  # amy and bob tie (idle since 60): lowest id wins, deterministically
    r2 = Router(config=RoutingConfig(policy="fifo"))
    r2.apply(login("b", 10.0))
    r2.apply(login("a", 20.0))
    [a2] = assignments(r2.apply(request("c1", 30.0)))
    assert a2.advisor_id == "b" and a2.reasons == {"idle_s": 20.0}


def test_contact_waits_then_goes_to_the_advisor_who_frees_up() -> None:
    r = Router()
    r.apply(login("ann", 0.0))
    [a1] = assignments(r.apply(request("c1", 10.0)))
    outs = r.apply(request("c2", 12.0))
    assert assignments(outs) == [] and kinds(outs) == ["queued"]
    r.apply(adv_event("ann", "offer_accepted", 13.0, contact="c1", assignment=a1.assignment_id))
    assert r.stats()["total"]["waiting"] == 1
    outs = r.apply(adv_event("ann", "contact_completed", 40.0, contact="c1"))
    [a2] = assignments(outs)
    assert (a2.contact_id, a2.advisor_id, a2.waited_s, a2.decided_at) == ("c2", "ann", 28.0, 40.0)
    assert kinds(outs) == ["sla_breached", "completed"] or "completed" in kinds(outs)


def test_eligibility_needs_skills_language_and_capacity() -> None:
    r = Router(config=RoutingConfig(escalate=False))
    r.apply(login("en_cards", 0.0, skills={"cards": 3}, languages=["en"]))
    r.apply(login("fr_loans", 0.0, skills={"loans": 5}, languages=["fr"]))
    assert assignments(r.apply(request("c1", 1.0, skills=["loans"], language="en"))) == []
    [a] = assignments(r.apply(request("c2", 2.0, skills=["cards"], language="en-GB")))
    assert a.advisor_id == "en_cards"
    [b] = assignments(r.apply(request("c3", 3.0, skills=["loans"], language="fr")))
    assert b.advisor_id == "fr_loans"
    # no free voice capacity left: the next voice contact waits
    assert assignments(r.apply(request("c4", 4.0))) == []


def test_voice_blocks_other_work_and_chat_has_three_slots() -> None:
    r = Router()
    r.apply(login("ann", 0.0))
    got = [assignments(r.apply(request(f"chat{i}", 1.0 + i, channel="chat"))) for i in range(4)]
    assert [len(g) for g in got] == [1, 1, 1, 0]
    assert assignments(r.apply(request("v1", 10.0, channel="voice"))) == []  # holds chats: no voice
    r2 = Router()
    r2.apply(login("bob", 0.0))
    assert len(assignments(r2.apply(request("v1", 1.0)))) == 1
    assert assignments(r2.apply(request("chat1", 2.0, channel="chat"))) == []  # on a call: no chat


def test_away_and_offline_advisors_never_get_offers() -> None:
    r = Router()
    r.apply(login("ann", 0.0))
    r.apply(adv_event("ann", "presence", 1.0, presence="away"))
    assert assignments(r.apply(request("c1", 2.0))) == []
    [a] = assignments(r.apply(adv_event("ann", "presence", 5.0, presence="available")))
    assert a.contact_id == "c1" and a.waited_s == 3.0
    r.apply(adv_event("ann", "logout", 6.0))  # withdraws the outstanding offer
    assert r.contact("c1") is not None and r.contact("c1").status == "waiting"  # type: ignore[union-attr]
    assert assignments(r.apply(request("c2", 7.0))) == []


def test_duplicate_event_id_is_a_no_op() -> None:
    r = Router()
    r.apply(login("ann", 0.0))
    r.apply(login("bob", 0.0))
    req = request("c1", 1.0)
    first = r.apply(req)
    assert len(assignments(first)) == 1
    state = r.to_state()
    assert r.apply(req) == []
    assert r.to_state() == state
    # the same contact re-requested under a new event id is not assigned twice either
    assert assignments(r.apply(request("c1", 2.0))) == []


def test_reject_reoffers_to_someone_else_with_a_new_attempt() -> None:
    r = Router()
    r.apply(login("ann", 0.0))
    r.apply(login("bob", 1.0))
    [a1] = assignments(r.apply(request("c1", 2.0)))
    outs = r.apply(adv_event(a1.advisor_id, "offer_rejected", 3.0, contact="c1", assignment=a1.assignment_id))
    [a2] = assignments(outs)
    assert "offer_rejected" in kinds(outs)
    assert a2.advisor_id != a1.advisor_id and a2.attempt == 2 and a2.assignment_id != a1.assignment_id
    # a stale accept of the first offer changes nothing
    assert r.apply(adv_event(a1.advisor_id, "offer_accepted", 4.0, contact="c1", assignment=a1.assignment_id)) == []
    assert r.contact("c1").status == "offered"  # type: ignore[union-attr]


def test_offer_timeout_requeues_and_marks_the_advisor_away() -> None:
    r = Router(config=RoutingConfig(offer_timeout_s=10.0))
    r.apply(login("ann", 0.0))
    [a1] = assignments(r.apply(request("c1", 1.0)))
    outs = r.apply(tick(11.5))
    assert "offer_timeout" in kinds(outs)
    to = next(o for o in outs if isinstance(o, RoutingEvent) and o.kind == "offer_timeout")
    assert to.at == 11.0 and to.advisor_id == "ann"  # fired at its own due time, not the tick's
    assert r.advisor("ann").presence == "away"  # type: ignore[union-attr]
    assert r.contact("c1").status == "waiting"  # type: ignore[union-attr]
    r.apply(login("bob", 12.0))
    c = r.contact("c1")
    assert c is None or c.advisor_id == "bob"
    assert a1.advisor_id == "ann"


def test_abandon_leaves_queue_and_is_counted() -> None:
    r = Router()
    r.apply(request("c1", 0.0))
    r.apply(request("c2", 1.0))
    outs = r.apply(update("c1", "abandoned", 30.0))
    assert "abandoned" in kinds(outs)
    r.apply(update("c2", "abandoned", 3.0))  # late: clock stays 30, waited counted from opened_at
    s = r.stats()
    q = s["queues"]["voice"]
    assert (q["abandoned"], q["short_abandoned"], q["waiting"], q["abandon_rate"]) == (2, 0, 0, 1.0)
    assert q["service_level"] == 0.0


def test_clock_is_event_time_and_never_goes_back() -> None:
    r = Router()
    r.apply(tick(100.0))
    r.apply(tick(50.0))
    assert r.clock == 100.0
    r.apply(login("ann", 20.0))
    [a] = assignments(r.apply(request("c1", 30.0)))
    assert a.decided_at == 100.0 and a.waited_s == 70.0


def test_other_groups_inputs_are_ignored() -> None:
    r = Router(group="paris")
    assert r.apply(login("ann", 0.0, group="lyon")) == []
    assert r.advisor("ann") is None


def test_state_round_trip_is_exact() -> None:
    r = Router()
    r.apply(login("ann", 0.0, skills={"cards": 4}))
    r.apply(request("c1", 1.5, skills=["cards"]))
    r.apply(request("c2", 2.25))
    s = r.to_state()
    r2 = Router.from_state(s)
    assert r2.to_state() == s
    assert r2.stats() == r.stats()


def queued_reason(outs: list[object]) -> str | None:
    (event,) = [o for o in outs if isinstance(o, RoutingEvent) and o.kind == "queued"]
    return event.reason


def test_a_queued_contact_says_why_it_was_not_offered_at_once() -> None:
    r = Router(config=RoutingConfig(escalate=False, sticky_wait_s={"chat": 30.0}))
    assert queued_reason(r.apply(request("c1", 1.0, skills=["mortgages"]))) == "no_advisor_logged_in"
    r.apply(login("cards", 2.0, skills={"cards": 3}, languages=["en"], capacity={"voice": 1, "chat": 1}))
    assert queued_reason(r.apply(request("c2", 3.0, skills=["loans"]))) == "no_advisor_with_skills"
    [a] = assignments(r.apply(request("c4", 5.0, skills=["cards"])))
    assert queued_reason(r.apply(request("c5", 6.0, skills=["cards"]))) == "advisors_busy", "at capacity on voice"
    # a returning chat customer is held for the advisor they had (sticky_wait_s), busy on another chat,
    # though another advisor is free
    chat = Router(config=RoutingConfig(escalate=False, sticky_wait_s={"chat": 30.0}))
    chat.apply(login("ann", 1.0, capacity={"chat": 1}))
    [b] = assignments(chat.apply(request("k1", 2.0, channel="chat")))
    chat.apply(login("bob", 3.0, capacity={"chat": 1}))
    assert b.advisor_id == "ann" and a.advisor_id == "cards"
    assert queued_reason(chat.apply(request("k2", 4.0, channel="chat", last="ann"))) == "held_for_last_advisor"
