"""The live engine routes with the same core as the simulation: a slice of the real bank log,
simulated in process, then its recorded router inputs replayed through the engine's router stage
(real broker, real topics, the router state saved in its table per batch), gives the same
assignments, byte for byte (advisor, decision time, reasons with the expected handle time...)."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from cxstream.replay import bank_log
from cxstream.routing import RoutingConfig
from cxstream.routing.simulate import simulate
from cxstream.schemas import Assignment, RouterInput
from cxstream.streams import topics as t
from tests.integration.conftest import start_engine, stop_engine
from tests.integration.helpers import consume_until, produce

pytestmark = pytest.mark.integration


def test_a_replayed_slice_of_the_bank_log_gets_the_simulations_assignments(
    servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    log = bank_log.default_log_path()
    assert log.exists(), f"the bank log is part of the shared data every developer and CI has: {log}"
    day = bank_log.read_calls(log, days={"990104"})
    calls = [c for c in day if 8 * 3600 <= c.arrival % 86400 < 10 * 3600]  # a Monday morning, two hours
    shifts = bank_log.shifts(calls)
    times = bank_log.ServiceTimes(calls)
    group = f"bank-{uuid.uuid4().hex[:8]}"
    inputs: list[RouterInput] = []
    outputs: list[object] = []
    result = simulate(
        bank_log.sim_calls(calls), shifts, RoutingConfig(), times.draw, group=group,
        on_input=inputs.append, on_output=outputs.append,
    )
    expected = sorted(msgspec.json.encode(o) for o in outputs if isinstance(o, Assignment))
    assert len(expected) > 200 and any(o.reasons["samples"] > 0 for o in outputs if isinstance(o, Assignment))
    total = result.router_stats["total"]
    assert isinstance(total, dict) and total["holds"] > 0, "the slice exercises the predictive hold"

    broker, redis_url = servers
    tag = uuid.uuid4().hex[:8]
    # no wall-clock ticks: the recorded inputs carry the simulation's own RouterTicks
    engine = start_engine(
        broker, redis_url, tmp_path_factory.mktemp("engine"), f"t{tag}.", f"cxtest-{tag}", CX_TICK_INTERVAL_S="3600"
    )
    try:
        asyncio.run(produce(broker, engine.topic(t.ROUTING.name), [(group.encode(), m) for m in inputs]))
        dec = msgspec.json.Decoder(Assignment).decode
        got = asyncio.run(
            consume_until(
                broker, engine.topic(t.ASSIGNMENTS.name),
                lambda vs: len([a for a in vs if a.routing_group == group]) >= len(expected), dec, timeout=180,
            )
        )
    finally:
        stop_engine(engine)
    mine = sorted(msgspec.json.encode(a) for a in got if a.routing_group == group)
    assert mine == expected
