"""Same input stream -> byte-identical outputs, also across to_state/from_state at random cut points."""

from __future__ import annotations

import random

import pytest

from cxstream.routing import Router, RoutingConfig
from cxstream.schemas.outputs import Assignment
from tests.unit.routing.routing_fixtures import closed_loop_stream, encode_all, random_stream


def run(stream: list, cfg: RoutingConfig, cuts: set[int] = frozenset()) -> tuple[list[bytes], bytes]:  # type: ignore[assignment]
    r = Router(config=cfg)
    outs: list[object] = []
    for i, msg in enumerate(stream):
        if i in cuts:
            r = Router.from_state(r.to_state())
        outs.extend(r.apply(msg))
    return encode_all(outs), r.to_state()


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("policy", ["default", "fifo", "skills"])
def test_replay_and_restore_give_identical_outputs(seed: int, policy: str) -> None:
    cfg = RoutingConfig(policy=policy, offer_timeout_s=15.0)  # type: ignore[arg-type]
    stream = closed_loop_stream(seed, 500, cfg)
    a_out, a_state = run(stream, cfg)
    b_out, b_state = run(stream, cfg)
    rng = random.Random(seed)
    cuts = set(rng.sample(range(len(stream)), 25))
    c_out, c_state = run(stream, cfg, cuts)
    assert a_out == b_out == c_out
    assert a_state == b_state == c_state
    assert sum(b'"cx.Assignment.v1"' in o for o in a_out) > 20  # the stream really routes


def test_no_contact_is_assigned_twice_concurrently_under_redelivery() -> None:
    """Duplicates in the stream never produce a second live offer for one contact."""
    cfg = RoutingConfig()
    stream = closed_loop_stream(7, 600, cfg)
    doubled = []
    rng = random.Random(7)
    for msg in stream:
        doubled.append(msg)
        if rng.random() < 0.3:
            doubled.append(msg)  # redelivered right away
    r1, r2 = Router(config=cfg), Router(config=cfg)
    out1 = encode_all([o for m in stream for o in r1.apply(m)])
    out2 = encode_all([o for m in doubled for o in r2.apply(m)])
    assert out1 == out2


def test_each_contact_is_held_by_at_most_one_advisor() -> None:
    cfg = RoutingConfig(offer_timeout_s=10.0)
    r = Router(config=cfg)
    ids: set[str] = set()
    for msg in random_stream(11, 800):
        for o in r.apply(msg):
            if isinstance(o, Assignment):
                assert o.assignment_id not in ids
                ids.add(o.assignment_id)
        holders: dict[str, str] = {}
        for adv_id in [f"a{i}" for i in range(5)]:
            adv = r.advisor(adv_id)
            for cid in adv.held if adv else []:
                assert cid not in holders, f"{cid} held by {holders.get(cid)} and {adv_id}"
                holders[cid] = adv_id
                c = r.contact(cid)
                assert c is not None and c.advisor_id == adv_id
