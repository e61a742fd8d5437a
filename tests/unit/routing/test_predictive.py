"""The predictive default policy: handle times learned online, shrinkage for new advisors, the
fastest-expected free advisor, the SLA-bounded hold for a faster advisor about to free up, and the
simulation's accounting (no call both answered and abandoned)."""

from __future__ import annotations

import random

import msgspec
import pytest

from cxstream.replay import eval_routing
from cxstream.routing import Router, RoutingConfig
from cxstream.routing.policy import expected_handle, pace
from cxstream.routing.roster import AdvisorState, Learned
from cxstream.routing.simulate import SimCall, SimOutcome, SimResult, SimShift, simulate
from cxstream.schemas.events import AdvisorEvent, Disposition
from cxstream.schemas.outputs import Assignment
from tests.unit.routing.routing_fixtures import adv_event, login, request, tick

KEY = "voice:PS"


def assignments(outs: list[object]) -> list[Assignment]:
    return [o for o in outs if isinstance(o, Assignment)]


def handle(r: Router, cid: str, t: float, duration: float) -> Assignment:
    """Request a PS call at *t*; whoever gets it accepts at once and completes after *duration*."""
    [a] = assignments(r.apply(request(cid, t, skills=["PS"])))
    r.apply(adv_event(a.advisor_id, "offer_accepted", t, contact=cid, assignment=a.assignment_id))
    r.apply(adv_event(a.advisor_id, "contact_completed", t + duration, contact=cid))
    return a


def trained(cfg: RoutingConfig | None = None, n: int = 10) -> tuple[Router, float]:
    """A router that learned, from completions only, 'fast' at 60 s and 'slow' at 240 s per PS call;
    both are logged in and free at the returned time."""
    r = Router(config=cfg or RoutingConfig())
    t = 0.0
    r.apply(login("fast", t, skills={"PS": 3}))
    for i in range(n):
        assert handle(r, f"f{i}", t + 1, 60.0).advisor_id == "fast"
        t += 100.0
    r.apply(adv_event("fast", "presence", t, presence="away"))
    r.apply(login("slow", t, skills={"PS": 3}))
    for i in range(n):
        assert handle(r, f"s{i}", t + 1, 240.0).advisor_id == "slow"
        t += 300.0
    r.apply(adv_event("fast", "presence", t, presence="available"))
    return r, t


def expected(r: Router, aid: str) -> float:
    adv = r.advisor(aid)
    assert adv is not None
    value = expected_handle(adv, KEY, r._s.learned.get(KEY), r.config)
    assert value is not None
    return value


# ------------------------------------------------------------------ learned statistics
def test_learned_mean_is_a_running_mean_then_follows_an_advisor_who_improves() -> None:
    m = Learned()
    for _ in range(40):
        m.update(200.0, 0.05)
    assert m.n == 40 and abs(m.mean_s - 200.0) < 1e-9
    for _ in range(40):
        m.update(100.0, 0.05)
    assert 100.0 < m.mean_s < 115.0  # a plain mean of all 80 would still say 150


def test_handle_times_are_learned_per_advisor_and_key_from_completions() -> None:
    r, _ = trained()
    fast, slow = r.advisor("fast"), r.advisor("slow")
    assert fast is not None and slow is not None
    assert fast.learned[KEY].n == 10 and abs(fast.learned[KEY].mean_s - 60.0) < 1e-9
    assert abs(slow.learned[KEY].mean_s - 240.0) < 1e-9
    assert r._s.learned[KEY].n == 20 and abs(r._s.learned[KEY].mean_s - 150.0) < 1e-9
    # pace is relative to the group mean at each completion: fast learned alone (1.0), slow after it
    assert pace(fast, r.config) == 1.0 < pace(slow, r.config)
    # the learned statistics are router state: they survive a save and restore
    back = Router.from_state(r.to_state())
    assert back.advisor("fast") == fast and back._s.learned == r._s.learned


def test_a_new_advisor_starts_at_the_types_mean_and_moves_toward_their_own_times() -> None:
    cfg = RoutingConfig(shrink_samples=10.0, pace_shrink_samples=20.0)
    group = Learned(mean_s=150.0, n=200)
    new = AdvisorState(advisor_id="new")
    assert expected_handle(new, KEY, group, cfg) == 150.0
    seen = AdvisorState(advisor_id="seen", learned={KEY: Learned(mean_s=60.0, n=10)})
    assert expected_handle(seen, KEY, group, cfg) == (10 * 60.0 + 10 * 150.0) / 20  # halfway with 10 samples
    many = AdvisorState(advisor_id="many", learned={KEY: Learned(mean_s=60.0, n=90)})
    assert expected_handle(many, KEY, group, cfg) == (90 * 60.0 + 10 * 150.0) / 100
    # a type the advisor never handled: the type's mean scaled by their pace on other types
    quick = AdvisorState(advisor_id="quick", pace=Learned(mean_s=0.5, n=20))
    assert expected_handle(quick, KEY, group, cfg) == 150.0 * 0.75


# ------------------------------------------------------------------ decisions
def test_the_fastest_expected_free_advisor_gets_the_contact_and_reasons_show_why() -> None:
    r, t = trained()
    [a] = assignments(r.apply(request("next", t + 1, skills=["PS"])))
    assert a.advisor_id == "fast"
    assert a.reasons["expected_handle_s"] == round(expected(r, "fast"), 3) < expected(r, "slow")
    assert a.reasons["type_mean_s"] == 150.0 and a.reasons["samples"] == 10.0


def test_a_new_advisor_is_preferred_to_a_known_slow_one_but_not_to_a_known_fast_one() -> None:
    r, t = trained()
    r.apply(login("newbie", t, skills={"PS": 3}))
    [a] = assignments(r.apply(request("one", t + 1, skills=["PS"])))
    assert a.advisor_id == "fast"
    r.apply(adv_event("fast", "offer_accepted", t + 1, contact="one", assignment=a.assignment_id))
    [b] = assignments(r.apply(request("two", t + 2, skills=["PS"])))
    assert b.advisor_id == "newbie" and b.reasons["samples"] == 0.0 and b.reasons["expected_handle_s"] == 150.0


def test_hold_for_a_faster_advisor_about_to_free_up() -> None:
    r, t = trained()
    [x] = assignments(r.apply(request("x", t, skills=["PS"])))
    assert x.advisor_id == "fast"
    r.apply(adv_event("fast", "offer_accepted", t, contact="x", assignment=x.assignment_id))
    soon = t + expected(r, "fast") - 4.0  # fast expected free in 4 s; slow is free now
    assert assignments(r.apply(request("c", soon, skills=["PS"]))) == []
    assert r.stats()["total"]["holds"] == 1
    [c] = assignments(r.apply(adv_event("fast", "contact_completed", soon + 3.0, contact="x")))
    assert (c.contact_id, c.advisor_id, c.decided_at) == ("c", "fast", soon + 3.0)


def test_a_hold_never_lasts_past_its_bound_within_the_sla() -> None:
    r, t = trained()
    [x] = assignments(r.apply(request("x", t, skills=["PS"])))
    r.apply(adv_event("fast", "offer_accepted", t, contact="x", assignment=x.assignment_id))
    soon = t + expected(r, "fast") - 4.0
    assert assignments(r.apply(request("c", soon, skills=["PS"]))) == []
    [c] = assignments(r.apply(tick(soon + 60.0)))  # fast overruns: slow takes it when the hold ends
    bound = r.config.hold_sla_fraction * r.config.sla_for("voice")
    assert (c.advisor_id, c.decided_at) == ("slow", soon + bound) and c.waited_s <= r.config.sla_for("voice")


def test_no_hold_when_the_faster_advisor_is_not_expected_within_the_bound() -> None:
    r, t = trained()
    [x] = assignments(r.apply(request("x", t, skills=["PS"])))
    r.apply(adv_event("fast", "offer_accepted", t, contact="x", assignment=x.assignment_id))
    later = t + expected(r, "fast") - 30.0  # 30 s to go: more than half the 20 s SLA
    [c] = assignments(r.apply(request("c", later, skills=["PS"])))
    assert (c.advisor_id, c.decided_at) == ("slow", later)
    assert r.stats()["total"]["holds"] == 0


def test_no_hold_when_the_time_saved_does_not_exceed_the_wait() -> None:
    r, t = trained(RoutingConfig(hold_min_saving_s=1000.0))
    [x] = assignments(r.apply(request("x", t, skills=["PS"])))
    r.apply(adv_event("fast", "offer_accepted", t, contact="x", assignment=x.assignment_id))
    soon = t + expected(r, "fast") - 4.0
    [c] = assignments(r.apply(request("c", soon, skills=["PS"])))
    assert c.advisor_id == "slow"


def test_waiting_guard_one_held_contact_per_awaited_advisor_and_the_free_one_keeps_working() -> None:
    """A second contact is not held for the same advisor: the free (slower) advisor takes it at once,
    so holding never leaves an advisor idle while a contact it could take waits unheld."""
    r, t = trained()
    [x] = assignments(r.apply(request("x", t, skills=["PS"])))
    r.apply(adv_event("fast", "offer_accepted", t, contact="x", assignment=x.assignment_id))
    soon = t + expected(r, "fast") - 4.0
    assert assignments(r.apply(request("c1", soon, skills=["PS"]))) == []
    [c2] = assignments(r.apply(request("c2", soon + 1.0, skills=["PS"])))
    assert (c2.advisor_id, c2.decided_at) == ("slow", soon + 1.0)


def test_fifo_and_skills_never_hold() -> None:
    for policy in ("fifo", "skills"):
        r, t = trained(RoutingConfig(policy=policy))  # type: ignore[arg-type]
        [x] = assignments(r.apply(request("x", t, skills=["PS"])))
        r.apply(adv_event(x.advisor_id, "offer_accepted", t, contact="x", assignment=x.assignment_id))
        [c] = assignments(r.apply(request("c", t + 50.0, skills=["PS"])))
        assert c.advisor_id != x.advisor_id and c.decided_at == t + 50.0


# ------------------------------------------------------------------ simulation accounting
def test_a_call_is_never_counted_both_answered_and_abandoned() -> None:
    """The customer hangs up at the very second an escalation timer would widen the call to an idle
    advisor of another skill: the router applies the hang-up first (a customer gone at t is not offered
    at t), so the call is abandoned only, and the router and the simulation agree."""
    sla = RoutingConfig().sla_for("voice")
    calls = [SimCall(call_id="c1", customer_id="u1", arrival=100.0, call_type="A", patience_s=sla)]
    shifts = [SimShift(advisor_id="b", start=0.0, end=1000.0, skills={"B": 3})]
    result = simulate(calls, shifts, RoutingConfig(), lambda a, t, rng: 60.0)
    [o] = result.outcomes
    assert (o.answered_at, o.abandoned_at, o.advisor_id) == (None, 100.0 + sla, None)
    fig = eval_routing.figures(result)
    assert (fig["answered"], fig["abandoned"], fig["unresolved"]) == (0, 1, 0)
    total = result.router_stats["total"]
    assert isinstance(total, dict) and (total["answered"], total["abandoned"], total["offers"]) == (0, 1, 0)
    # one second more patience: the escalation at 120 s widens it to b, who answers; not abandoned too
    calls = [msgspec.structs.replace(calls[0], patience_s=sla + 1.0)]
    [o] = simulate(calls, shifts, RoutingConfig(), lambda a, t, rng: 60.0).outcomes
    assert (o.answered_at, o.abandoned_at, o.advisor_id) == (100.0 + sla, None, "b")


def test_the_eval_fails_loudly_when_a_call_is_counted_twice() -> None:
    """The eval's invariant: answered + abandoned + unresolved == calls, each call once, and the router agrees."""
    ok = SimOutcome(call_id="c1", call_type="A", arrival=0.0, answered_at=5.0, advisor_id="a", service_s=10.0)
    both = SimOutcome(call_id="c2", call_type="A", arrival=0.0, answered_at=20.0, abandoned_at=20.0, advisor_id="a", service_s=1.0)
    stats = {"total": {"answered": 2, "abandoned": 1}}
    with pytest.raises(eval_routing.AccountingError, match=r"1 calls counted both answered and abandoned \(e.g. c2\)"):
        eval_routing.figures(SimResult(outcomes=[ok, both], staffed_s=100.0, router_stats=stats))
    gone = SimOutcome(call_id="c2", call_type="A", arrival=0.0, abandoned_at=20.0)
    with pytest.raises(eval_routing.AccountingError, match="the router counted answered 2 / abandoned 1"):
        eval_routing.figures(SimResult(outcomes=[ok, gone], staffed_s=100.0, router_stats=stats))
    fig = eval_routing.figures(SimResult(outcomes=[ok, gone], staffed_s=100.0, router_stats={"total": {"answered": 1, "abandoned": 1}}))
    assert (fig["answered"], fig["abandoned"], fig["unresolved"]) == (1, 1, 0)


def test_sim_outcomes_agree_with_the_router_on_a_busy_random_day() -> None:
    rng = random.Random(7)
    calls = [
        SimCall(
            call_id=f"c{i}", customer_id=f"u{i}", arrival=float(i * 7), call_type=rng.choice("AB"),
            patience_s=float(rng.choice([5, 10, 20, 30, 60])),
        )
        for i in range(400)
    ]
    shifts = [SimShift(advisor_id=f"a{k}", start=0.0, end=4000.0, skills={"A" if k % 2 else "B": 3}) for k in range(4)]
    for policy in ("fifo", "skills", "default"):
        result = simulate(calls, shifts, RoutingConfig(policy=policy), lambda a, t, r: 20.0 + 40.0 * r.random())  # type: ignore[arg-type]
        fig = eval_routing.figures(result)
        total = result.router_stats["total"]
        assert isinstance(total, dict)
        assert fig["unresolved"] == 0 and fig["answered"] + fig["abandoned"] == len(calls)
        assert (total["answered"], total["abandoned"]) == (fig["answered"], fig["abandoned"])


def test_resolution_from_dispositions_weighs_in_a_fast_advisor_whose_contacts_come_back_loses() -> None:
    """Expected handle time per resolution: 60 s with 1 in 4 resolved costs more than 90 s always resolved."""
    r = Router()
    t = 0.0

    def done(aid: str, cid: str, at: float, resolved: bool) -> None:
        r.apply(
            AdvisorEvent(
                event_id=f"done-{cid}", occurred_at=at, advisor_id=aid, kind="contact_completed", contact_id=cid,
                disposition=Disposition(resolved=resolved),
            )
        )

    for aid, secs, rate in (("quick", 60.0, 4), ("thorough", 90.0, 1)):
        r.apply(login(aid, t, skills={"PS": 3}))
        for i in range(20):
            [a] = assignments(r.apply(request(f"{aid}{i}", t + 1, skills=["PS"])))
            assert a.advisor_id == aid
            r.apply(adv_event(aid, "offer_accepted", t + 1, contact=a.contact_id, assignment=a.assignment_id))
            done(aid, a.contact_id, t + 1 + secs, i % rate == 0)
            t += 200.0
        r.apply(adv_event(aid, "presence", t, presence="away"))
    for aid in ("quick", "thorough"):
        r.apply(adv_event(aid, "presence", t, presence="available"))
    [a] = assignments(r.apply(request("next", t + 1, skills=["PS"])))
    # 20 resolved of 20, shrunk toward the group's 25 of 40 with 10 pseudo-samples: (20 + 10 * 0.625) / 30
    assert a.advisor_id == "thorough" and a.reasons["resolution"] == 0.875
    quick = r.advisor("quick")
    assert quick is not None and abs(quick.learned["voice:PS|resolved"].mean_s - 0.25) < 1e-9
    # without dispositions nothing changes: the faster one wins
    plain, t2 = trained()
    [b] = assignments(plain.apply(request("next", t2 + 1, skills=["PS"])))
    assert b.advisor_id == "fast" and b.reasons["resolution"] == 1.0
