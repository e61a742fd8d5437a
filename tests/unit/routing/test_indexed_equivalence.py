"""The indexed router decides exactly as the straightforward scan (``reference_router``) does.

Seeded randomized streams (every input kind, several channels and capacities, holds, transfers,
skill changes, timeouts, duplicates, late inputs, midnight) are applied to both; every input must
give byte-identical outputs, the same next deadline and the same state.  Saving and restoring
the indexed router at random points must not change its continuation, and its saved state (built
from cached pieces) must always hold exactly the live state.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

import msgspec
import pytest

from cxstream.routing import Router, RoutingConfig
from cxstream.routing.router import RING_CHUNK, SavedState
from cxstream.schemas.events import AdvisorEvent
from cxstream.schemas.outputs import Assignment
from cxstream.schemas.routing import ContactRequest, ContactUpdate, RouterInput, RouterTick
from tests.unit.routing.reference_router import ReferenceRouter
from tests.unit.routing.routing_fixtures import closed_loop_stream, random_stream

SKILLS = ("cards", "loans", "fraud", "billing")
CHANNELS = ("voice", "chat", "email", "sms")


def rich_stream(seed: int, n: int, cfg: RoutingConfig, advisors: int = 12) -> list[RouterInput]:
    """Inputs recorded from a seeded closed loop: desktops react to offers (accept then complete,
    reject, ignore, transfer), advisors change presence/skills/capacity, contacts arrive on several
    channels, abandon, get closed, are redelivered or arrive late; the clock crosses midnight."""
    rng = random.Random(seed)
    driver = ReferenceRouter(config=cfg)
    names = [f"a{i:02d}" for i in range(advisors)]
    pending: list[tuple[float, int, RouterInput]] = []
    log: list[RouterInput] = []
    k = 0

    def eid(p: str) -> str:
        nonlocal k
        k += 1
        return f"{p}-{seed}-{k}"

    def later(t: float, msg: RouterInput) -> None:
        pending.append((t, len(log) + len(pending) * 7919, msg))

    def feed(msg: RouterInput) -> None:
        log.append(msg)
        for o in driver.apply(msg):
            if not isinstance(o, Assignment):
                continue
            t0, u = o.decided_at, rng.random()
            base: dict[str, Any] = {"advisor_id": o.advisor_id, "contact_id": o.contact_id}
            if u < 0.6:
                acc = t0 + rng.uniform(0, 4)
                later(acc, AdvisorEvent(event_id=eid("acc"), occurred_at=acc, kind="offer_accepted",
                                        assignment_id=o.assignment_id if rng.random() < 0.8 else None, **base))
                done = acc + rng.expovariate(1 / 90.0)
                r = rng.random()
                if r < 0.08:
                    later((acc + done) / 2, ContactUpdate(
                        event_id=eid("tr"), contact_id=o.contact_id, routing_group="default", kind="transferred",
                        at=(acc + done) / 2, to_advisor_id=rng.choice([None, *names]),
                        to_skills=rng.choice([None, [rng.choice(SKILLS)]]),
                    ))
                elif r < 0.12:
                    later((acc + done) / 2, AdvisorEvent(
                        event_id=eid("dtr"), occurred_at=(acc + done) / 2, kind="contact_transferred",
                        transfer_to_advisor_id=rng.choice([None, *names]), transfer_to_skills=[rng.choice(SKILLS)],
                        **base,
                    ))
                if rng.random() < 0.8:
                    later(done, AdvisorEvent(event_id=eid("done"), occurred_at=done, kind="contact_completed", **base))
                else:
                    later(done, ContactUpdate(event_id=eid("cl"), contact_id=o.contact_id, routing_group="default",
                                              kind="closed", at=done))
            elif u < 0.8:
                rej = t0 + rng.uniform(0, 5)
                later(rej, AdvisorEvent(event_id=eid("rej"), occurred_at=rej, kind="offer_rejected",
                                        assignment_id=o.assignment_id, **base))
            else:
                back = t0 + cfg.offer_timeout_s + rng.uniform(1, 20)
                later(back, AdvisorEvent(event_id=eid("back"), occurred_at=back, advisor_id=o.advisor_id,
                                         kind="presence", presence="available"))

    t = 86400.0 * 3 - 900.0  # crosses midnight a quarter of an hour in: "today" resets
    contacts: list[str] = []
    while len(log) < n:
        t += rng.expovariate(1 / 2.5)
        pending.sort(key=lambda p: (p[0], p[1]))
        while pending and pending[0][0] <= t and len(log) < n:
            feed(pending.pop(0)[2])
        r = rng.random()
        a = rng.choice(names)
        if r < 0.07:
            cap = rng.choice([None, {"voice": 1}, {"chat": 2, "email": 3}, {"voice": 1, "chat": 3, "sms": 2}])
            feed(AdvisorEvent(
                event_id=eid("in"), occurred_at=t, advisor_id=a, kind="login",
                presence=rng.choice([None, "available", "available", "busy"]),  # type: ignore[arg-type]
                skills={s: rng.randint(1, 5) for s in rng.sample(SKILLS, rng.randint(0, 3))},
                languages=rng.choice([None, [], ["en"], ["en", "fr"], ["fr-CA"]]),
                capacity=cap,  # type: ignore[arg-type]
            ))
        elif r < 0.42:
            cid = f"c{seed}-{len(log)}"
            contacts.append(cid)
            msg = ContactRequest(
                event_id=eid("req"), contact_id=cid, customer_id=f"u{rng.randrange(50)}", routing_group="default",
                channel=rng.choice(CHANNELS), opened_at=t if rng.random() < 0.95 else t - rng.uniform(0, 120),  # type: ignore[arg-type]
                language=rng.choice([None, "en", "en-GB", "fr"]), priority=rng.randint(0, 3),
                required_skills=rng.sample(SKILLS, rng.choice([0, 0, 1, 1, 2])),
                intent=rng.choice([None, None, "refund", *SKILLS]),
                churn_risk=rng.choice([None, round(rng.random(), 2)]), tier=rng.choice([None, "vip", "gold", "silver"]),
                last_advisor_id=rng.choice([None, None, *names]),
            )
            feed(msg)
            if rng.random() < 0.05:
                feed(msg)  # redelivered
        elif r < 0.5 and contacts:
            feed(ContactUpdate(event_id=eid("ab"), contact_id=rng.choice(contacts[-30:]), routing_group="default",
                               kind=rng.choice(["abandoned", "abandoned", "closed"]), at=t))  # type: ignore[arg-type]
        elif r < 0.62:
            feed(AdvisorEvent(
                event_id=eid("pr"), occurred_at=t, advisor_id=a, kind="presence",
                presence=rng.choice(["available", "available", "available", "away", "busy", "wrap_up", "offline"]),  # type: ignore[arg-type]
                skills=rng.choice([None, None, None, {rng.choice(SKILLS): rng.randint(1, 5)}]),
                capacity=rng.choice([None, None, None, {"chat": 1}]),  # type: ignore[arg-type]
            ))
        elif r < 0.65:
            feed(AdvisorEvent(event_id=eid("out"), occurred_at=t, advisor_id=a, kind="logout"))
        elif r < 0.68 and log:
            feed(rng.choice(log))  # at-least-once redelivery of anything earlier
        elif r < 0.7:
            feed(AdvisorEvent(event_id=eid("late"), occurred_at=t - rng.uniform(0, 300), advisor_id=a,
                              kind="presence", presence="available"))
        else:
            feed(RouterTick(routing_group="default", at=t))
            if rng.random() < 0.1:
                dl = driver.next_deadline()
                if dl is not None:  # a tick right at a deadline, as the agent sends it
                    feed(RouterTick(routing_group="default", at=max(dl, t)))
    return log


def state_of(r: ReferenceRouter) -> dict[str, Any]:
    s = r._s
    return {
        "group": s.group,
        "config": msgspec.to_builtins(s.config),
        "clock": s.clock,
        "seq": s.seq,
        "out_seq": s.out_seq,
        "advisors": [msgspec.to_builtins(a) for a in s.advisors.values()],
        "contacts": [msgspec.to_builtins(c) for c in s.contacts.values()],
        "queues": {k: msgspec.to_builtins(v) for k, v in s.queues.items()},
        "learned": {k: msgspec.to_builtins(v) for k, v in s.learned.items()},
        "recent": list(r._recent),
    }


def saved_state_of(data: bytes) -> dict[str, Any]:
    """What the indexed router's saved bytes hold, in the reference's terms."""
    s = msgspec.json.decode(data, type=SavedState)
    ids: list[str] = []
    for chunk in s.ring_chunks:
        ids.extend(msgspec.json.decode(zlib.decompress(chunk), type=list[str]))
    return {
        "group": s.group,
        "config": msgspec.to_builtins(s.config),
        "clock": s.clock,
        "seq": s.seq,
        "out_seq": s.out_seq,
        "advisors": [msgspec.to_builtins(a) for a in s.advisors],
        "contacts": [msgspec.to_builtins(c) for c in s.contacts],
        "queues": {k: msgspec.to_builtins(v) for k, v in s.queues.items()},
        "learned": {k: msgspec.to_builtins(v) for k, v in s.learned.items()},
        "recent": (ids + s.ring_tail)[s.ring_skip :],
    }


def check_equivalent(stream: list[RouterInput], cfg: RoutingConfig, seed: int, cuts: int = 0, every: int = 1) -> int:
    """Apply *stream* to both routers: same outputs and next deadline after every input, same saved
    state and statistics every *every* inputs; restore the indexed one at *cuts* random points.
    Returns the number of assignments made."""
    rng = random.Random(seed)
    cut_at = set(rng.sample(range(len(stream)), cuts)) if cuts else set()
    ref, r = ReferenceRouter(config=cfg), Router(config=cfg)
    enc = msgspec.json.encode
    offers = 0
    for i, msg in enumerate(stream):
        if i in cut_at:
            saved = r.to_state()
            r = Router.from_state(saved)
            assert r.to_state() == saved, f"input {i}: restore is not exact"
            r.reconfigure(msgspec.convert(msgspec.to_builtins(cfg), RoutingConfig))  # as the agent does: equal, not same
        want, got = ref.apply(msg), r.apply(msg)
        assert [enc(o) for o in got] == [enc(o) for o in want], f"input {i}: {msg!r}"
        offers += sum(isinstance(o, Assignment) for o in got)
        assert r.next_deadline() == ref.next_deadline(), f"input {i}: next deadline"
        assert r.clock == ref.clock
        if i % every == 0 or i == len(stream) - 1:
            assert saved_state_of(r.to_state()) == state_of(ref), f"input {i}: saved state differs"
            assert r.stats() == ref.stats(), f"input {i}: stats"
    return offers


POLICIES = [
    RoutingConfig(),
    RoutingConfig(policy="fifo"),
    RoutingConfig(policy="skills"),
    RoutingConfig(offer_timeout_s=12.0, max_offers=2, sticky_wait_s={"chat": 40.0, "email": 120.0, "sms": 20.0}),
    RoutingConfig(use_priority=False, escalate=False, exclusive_channels=["voice", "sms"]),
]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("cfg", POLICIES, ids=["default", "fifo", "skills", "sticky", "noprio"])
def test_rich_streams_give_identical_outputs_and_states(seed: int, cfg: RoutingConfig) -> None:
    stream = rich_stream(seed, 700, cfg)
    assert check_equivalent(stream, cfg, seed, every=3) > 40  # the stream really routes


@pytest.mark.parametrize("seed", [5, 6])
@pytest.mark.parametrize("cfg", POLICIES[:3], ids=["default", "fifo", "skills"])
def test_restoring_at_random_points_continues_identically(seed: int, cfg: RoutingConfig) -> None:
    stream = rich_stream(seed, 600, cfg)
    check_equivalent(stream, cfg, seed, cuts=60, every=5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fixture_streams_match_the_reference(seed: int) -> None:
    cfg = RoutingConfig(offer_timeout_s=15.0)
    check_equivalent(random_stream(seed, 600), cfg, seed, cuts=20, every=5)
    check_equivalent(closed_loop_stream(seed, 500, cfg), cfg, seed, cuts=20, every=5)


def test_a_large_roster_matches_the_reference() -> None:
    cfg = RoutingConfig()
    stream = rich_stream(11, 2000, cfg, advisors=60)
    assert check_equivalent(stream, cfg, 11, cuts=10, every=25) > 250


def ring_stream(seed: int, n: int) -> list[RouterInput]:
    """Cheap inputs with ids of every shape: presence changes, ticks, redeliveries (old and recent)."""
    rng = random.Random(seed)
    out: list[RouterInput] = []
    for i in range(n):
        t = 1000.0 + i
        r = rng.random()
        if r < 0.15 and out:
            out.append(rng.choice(out[-rng.choice([5, 600, 3000]):]))  # redelivered, recently or long ago
        elif r < 0.2:
            out.append(RouterTick(routing_group="default", at=t))
        else:
            eid = rng.choice([f"wl7-{i}", f"as-{rng.getrandbits(64):016x}:accept", f"é\n\"{i}"])
            out.append(AdvisorEvent(event_id=eid, occurred_at=t, advisor_id=f"a{i % 7}", kind="presence",
                                    presence=rng.choice(["available", "busy"])))
    return out


@pytest.mark.parametrize("window", [3, RING_CHUNK, RING_CHUNK + 7, 3 * RING_CHUNK])
def test_the_dedupe_ring_survives_restores_whatever_its_window(window: int) -> None:
    cfg = RoutingConfig(dedupe_window=window)
    check_equivalent(ring_stream(window, 2500), cfg, 21, cuts=40, every=50)


def test_reconfigure_mid_stream_matches_the_reference() -> None:
    cfg = RoutingConfig()
    stream = rich_stream(8, 800, cfg)
    ref, r = ReferenceRouter(config=cfg), Router(config=cfg)
    other = RoutingConfig(policy="skills", offer_timeout_s=5.0, default_capacity={"voice": 1, "chat": 1, "email": 1})
    for i, msg in enumerate(stream):
        if i == 400:
            ref.reconfigure(other)
            r.reconfigure(other)
        assert [msgspec.json.encode(o) for o in r.apply(msg)] == [msgspec.json.encode(o) for o in ref.apply(msg)]
        assert r.next_deadline() == ref.next_deadline()
    assert saved_state_of(r.to_state()) == state_of(ref)


def test_a_quiet_dispatch_still_rolls_the_day_of_free_advisors() -> None:
    """The full scan moves every free advisor to the new day whenever contacts wait; so does the index."""
    cfg = RoutingConfig(escalate=False)
    ref, r = ReferenceRouter(config=cfg), Router(config=cfg)
    msgs: list[RouterInput] = [
        AdvisorEvent(event_id="l1", occurred_at=86000.0, advisor_id="ann", kind="login", skills={"x": 1}),
        AdvisorEvent(event_id="l2", occurred_at=86001.0, advisor_id="bob", kind="login", skills={"x": 1}),
        ContactRequest(event_id="r1", contact_id="c1", customer_id="u", routing_group="default", channel="voice",
                       opened_at=86010.0, required_skills=["y"]),
        AdvisorEvent(event_id="d1", occurred_at=86020.0, advisor_id="ann", kind="offer_rejected", contact_id="zz"),
        RouterTick(routing_group="default", at=86500.0),  # midnight passed: both free advisors roll over
        AdvisorEvent(event_id="l3", occurred_at=86600.0, advisor_id="cyd", kind="login", skills={"y": 1}),
    ]
    for m in msgs:
        assert [msgspec.json.encode(o) for o in r.apply(m)] == [msgspec.json.encode(o) for o in ref.apply(m)]
        assert saved_state_of(r.to_state()) == state_of(ref)
    assert [r.advisor(a).day for a in ("ann", "bob", "cyd")] == [1, 1, 1]  # type: ignore[union-attr]


def test_garbage_and_old_states_are_rejected_with_a_clear_error() -> None:
    r = Router()
    for bad in (b"", b"garbage", b"[]", b'{"version": 2}', b"{}"):
        with pytest.raises(ValueError, match="not a router state"):
            Router.from_state(bad)
    old = ReferenceRouter().to_state()  # the version-1 format
    with pytest.raises(ValueError, match="version 1 is not 2"):
        Router.from_state(old)
    good = msgspec.json.decode(r.to_state())
    with pytest.raises(ValueError, match="version 3 is not 2"):
        Router.from_state(msgspec.json.encode({**good, "version": 3}))
    with pytest.raises(ValueError, match="not a router state"):
        Router.from_state(msgspec.json.encode({**good, "ring_chunks": [b"not zlib"]}))
    with pytest.raises(ValueError, match="not a router state"):
        Router.from_state(msgspec.json.encode({**good, "ring_skip": 5}))
    assert Router.from_state(r.to_state()).to_state() == r.to_state()


def test_the_saved_state_is_compact() -> None:
    """Advisors, contacts and queues are arrays (no field names); the dedupe ring is compressed."""
    cfg = RoutingConfig(dedupe_window=1500)
    stream = rich_stream(3, 2000, cfg, advisors=40)
    ref, r = ReferenceRouter(config=cfg), Router(config=cfg)
    for m in stream:
        ref.apply(m)
        r.apply(m)
    saved = msgspec.json.decode(r.to_state())
    assert all(isinstance(x, list) for k in ("advisors", "contacts") for x in saved[k])
    ring = len(msgspec.json.encode([saved["ring_chunks"], saved["ring_tail"]]))
    assert len(ref._recent) > 2 * RING_CHUNK and ring < 0.5 * len(msgspec.json.encode(list(ref._recent)))


@pytest.mark.parametrize("policy", ["default", "fifo", "skills"])
def test_best_advisor_is_the_argmax_of_score(policy: str) -> None:
    """policy.best_advisor picks what max(score, then lowest id) over the candidates picks, in any order."""
    from cxstream.routing.policy import best_advisor, score
    from cxstream.routing.queue import ContactState
    from cxstream.routing.roster import AdvisorState, Learned

    rng = random.Random(policy)
    cfg = RoutingConfig(policy=policy, learn_min_samples=2)  # type: ignore[arg-type]
    for trial in range(300):
        now = 1000.0 + rng.uniform(0, 2000)
        advisors = [
            AdvisorState(
                advisor_id=f"a{rng.randrange(30)}-{i}",
                skills={s: rng.randint(1, 5) for s in rng.sample(SKILLS, rng.randint(0, 3))},
                idle_since=rng.choice([now, now + 5, now - rng.uniform(0, 1500), 900.0]),
                handled_today=rng.randint(0, 4),
                learned={k: Learned(mean_s=rng.choice([0.0, rng.uniform(10, 300)]), n=rng.randint(0, 4))
                         for k in rng.sample([*SKILLS, "refund", "voice"], rng.randint(0, 3))},
            )
            for i in range(rng.randint(1, 12))
        ]
        c = ContactState(
            contact_id="c", customer_id="u", channel="voice", opened_at=now - 30, queue="q", seq=0,
            required_skills=rng.sample(SKILLS, rng.randint(0, 2)), intent=rng.choice([None, "refund", *SKILLS]),
            last_advisor_id=rng.choice([None, advisors[0].advisor_id]),
        )
        group = rng.choice([None, Learned(mean_s=rng.uniform(0, 200), n=rng.randint(0, 5))])
        max_today = rng.randint(0, 5)
        want, best = advisors[0], score(advisors[0], c, now, cfg, group, max_today)[0]
        for a in advisors[1:]:  # the scan of the old dispatch
            sc = score(a, c, now, cfg, group, max_today)[0]
            if sc > best or (sc == best and a.advisor_id < want.advisor_id):
                want, best = a, sc
        rng.shuffle(advisors)
        got = best_advisor(advisors, c, now, cfg, group, max_today)
        assert got is not None and got.advisor_id == want.advisor_id, trial
