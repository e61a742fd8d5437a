"""``--find-max``'s latency search: bisecting the rate that meets the p99 limit, finer than the x1.6 grid."""

from __future__ import annotations

import asyncio
import functools
import shutil
from typing import Any

from cxstream.bench.loadgen import (
    Bench,
    Options,
    StepResult,
    latency_bracket,
    latency_probe,
    p99s_by_rate,
    rate_verdicts,
    under_limit,
)

LIMIT_MS = 50.0


def step_at(rate: float, duration: float, p99_ms: float, on_arrival_p99_ms: float, *, kept_up: bool = True) -> StepResult:
    """A step as ``Bench.step`` reports it, with its pass/fail reasons written the same way."""
    reasons = []
    if p99_ms >= LIMIT_MS:
        reasons.append(f"e2e p99 {p99_ms} ms >= {LIMIT_MS}")
    if not kept_up:
        reasons.append(f"behind: e2e p50 3000 ms (limit 1000), group lag after the drain {int(rate)}")
    return StepResult(
        rate=rate, duration_s=duration, warmup_s=3.0, sent=int(rate * duration), desktop_sent=0, offered_rate=rate,
        offered_total_rate=rate * 1.3, achieved_rate=rate * 1.3, e2e={"p99_ms": p99_ms}, e2e_decision={}, contacts=0,
        missing=0, router_waited_p99_s=None, send_lag_p99_ms=None, lag_after=0, drain_s=0.0, lag_before=0, settle_s=0.0,
        rss_mb=0.0, peak_rss_mb=0.0, engine_cpu_pct=None, e2e_on_arrival={"p99_ms": on_arrival_p99_ms},
        passed=not reasons, why="; ".join(reasons),
    )


def test_under_limit_counts_every_contact_or_only_those_offered_on_arrival() -> None:
    held = step_at(656, 10, p99_ms=55.3, on_arrival_p99_ms=42.7)  # 3 contacts held for their last advisor
    assert not under_limit(held, LIMIT_MS)
    assert under_limit(held, LIMIT_MS, on_arrival=True)
    behind = step_at(2688, 10, p99_ms=9000, on_arrival_p99_ms=30, kept_up=False)
    assert not under_limit(behind, LIMIT_MS, on_arrival=True)  # an engine that fell behind meets nothing


def test_the_bracket_is_above_the_highest_rate_that_met_the_limit() -> None:
    steps = [step_at(100, 10, 14, 14), step_at(160, 10, 51, 34), step_at(256, 10, 22, 22), step_at(410, 10, 21, 20),
             step_at(656, 10, 55, 43), step_at(1050, 10, 704, 59)]
    assert latency_bracket(steps, lambda s: under_limit(s, LIMIT_MS)) == (410, 656)  # 160's miss is below: ignored
    assert latency_bracket(steps, lambda s: under_limit(s, LIMIT_MS, on_arrival=True)) == (656, 1050)
    assert latency_bracket(steps[1:2], lambda s: under_limit(s, LIMIT_MS)) == (0.0, 160)
    assert latency_bracket(steps[:1], lambda s: under_limit(s, LIMIT_MS)) == (100, None)


def test_a_rate_measured_several_times_meets_the_limit_when_most_of_its_steps_do() -> None:
    lucky = step_at(1050, 10, 900, 48)  # the grid's one step at 1,050/s, on arrival, under the limit by chance
    again = [step_at(1050, 20, 900, 81), step_at(1050, 20, 900, 44), step_at(1050, 20, 900, 96)]
    steps = [step_at(656, 10, 55, 43), lucky, step_at(1680, 10, 9000, 111)]
    on_arrival = functools.partial(under_limit, limit_ms=LIMIT_MS, on_arrival=True)
    assert latency_bracket(steps, on_arrival) == (1050, 1680)
    assert rate_verdicts([*steps, *again], on_arrival)[1050] == (2, 4)
    assert latency_bracket([*steps, *again], on_arrival) == (656, 1050)  # 2 of 4 is not most: missed
    assert latency_bracket([*steps, *again[:2]], on_arrival) == (1050, 1680)  # 2 of 3
    assert p99s_by_rate([*steps, *again], on_arrival=True, rates=[1050]) == {"1050": {"p99_ms": [48, 81, 44, 96], "median_ms": 64.5}}


def test_the_probe_halves_the_bracket_until_it_is_within_the_resolution() -> None:
    assert latency_probe(410, 656, 0.1) == 533
    assert latency_probe(594, 656, 0.1) == 625  # 10.4 % apart
    assert latency_probe(625, 656, 0.1) is None
    assert latency_probe(0.0, 160, 0.1) is None  # nothing met the limit: the grid's halving search handles that
    assert latency_probe(410, None, 0.1) is None  # nothing above it missed


class ModelBench(Bench):
    """The search of :meth:`Bench._find_max` against an engine modelled by two p99 curves instead of a broker."""

    def __init__(self, opts: Options) -> None:
        super().__init__(opts)
        shutil.rmtree(self.base, ignore_errors=True)  # (no servers here)
        self.calls: list[tuple[float, float]] = []

    async def step(self, driver: Any, engines: Any, sampler: Any, lag: Any, session: Any, rate: float,
                   duration_s: float, **_: Any) -> StepResult:
        self.calls.append((rate, duration_s))
        on_arrival = 10 + rate / 20  # meets 50 ms up to 800/s
        held = 30.0 if rate in (160, 656) else 0.0  # a contact held for its last advisor in these steps
        return step_at(rate, duration_s, on_arrival + held + (rate > 560) * 20, on_arrival, kept_up=rate < 1700)


def test_find_max_bisects_the_latency_limit_for_every_contact_then_on_arrival() -> None:
    bench = ModelBench(Options(find_max=True, latency_steps=6, latency_step_duration=20.0, latency_resolution=0.1,
                               latency_repeats=1))
    max_rate, capacity, steps = asyncio.run(bench._find_max(None, [], None, None, None))  # type: ignore[arg-type]
    grid = [(r, d) for r, d in bench.calls if d == 10.0]
    probes = [(r, d) for r, d in bench.calls if d == 20.0]
    assert [r for r, _ in grid][:6] == [100, 160, 256, 410, 656, 1050] and capacity >= 1680
    assert len(probes) <= 12 and len(steps) == len(bench.calls)
    search = bench.result["latency_search"]
    # every contact: 410 met, 656 missed (held); the model meets up to 560/s (10 + 560/20 = 38 ms, then 20 ms more)
    assert max_rate == search["all"]["max_rate"] and 500 <= max_rate <= 560
    hi = search["all"]["lowest_rate_above_that_missed"]
    assert hi is not None and (hi - max_rate) / max_rate <= 0.1
    # on arrival: up to 800/s
    on_arrival = search["on_arrival"]
    assert 700 <= on_arrival["max_rate"] < 800 <= on_arrival["lowest_rate_above_that_missed"]
    assert [r for r, _ in probes] == search["all"]["probes"] + on_arrival["probes"]


def test_no_latency_steps_keeps_the_grid_answer() -> None:
    bench = ModelBench(Options(find_max=True, latency_steps=0))
    max_rate, _, _ = asyncio.run(bench._find_max(None, [], None, None, None))  # type: ignore[arg-type]
    assert max_rate == 410 and all(d == 10.0 for _, d in bench.calls)
    assert bench.result["latency_search"]["on_arrival"]["max_rate"] == 656  # 10 + 656/20 = 42.8 ms on arrival


class NoisyBench(ModelBench):
    """The model engine (on arrival 50 ms at 800/s) with the noise of a step's worst burst: the first of every three steps
    at 1,050/s is 40 ms low, at 656/s 40 ms high."""

    async def step(self, driver: Any, engines: Any, sampler: Any, lag: Any, session: Any, rate: float,
                   duration_s: float, **_: Any) -> StepResult:
        self.calls.append((rate, duration_s))
        seen = sum(1 for r, _ in self.calls if r == rate)
        on_arrival = 10 + rate / 20 + (-40 if rate >= 800 else 40) * (seen % 3 == 1) * (rate in (1050, 656))
        return step_at(rate, duration_s, on_arrival + 100, on_arrival, kept_up=rate < 1700)


def test_the_search_measures_the_bracket_ends_again_before_it_trusts_them() -> None:
    """The grid's one step at 1,050/s met the limit by chance (its p99 40 ms low), the one at 656/s missed by chance
    (40 ms high): with --latency-repeats 3 each end of a bracket is measured twice more before the search trusts it,
    and it settles where most steps meet the limit."""
    noisy = NoisyBench(Options(find_max=True, latency_steps=6, latency_step_duration=20.0, latency_resolution=0.1,
                               latency_repeats=3))
    asyncio.run(noisy._find_max(None, [], None, None, None))  # type: ignore[arg-type]
    on_arrival = noisy.result["latency_search"]["on_arrival"]
    assert 700 <= on_arrival["max_rate"] < 800 <= on_arrival["lowest_rate_above_that_missed"] <= 880
    assert on_arrival["steps_at_max_rate"] == (3, 3)
    assert on_arrival["probes"][:3] == [1050, 410, 656]  # 1,050 fails, then the next bracket's two ends are confirmed
    assert on_arrival["p99_ms_by_rate"]["1050"] == {"p99_ms": [22.5, 62.5, 62.5], "median_ms": 62.5}
    for rate in on_arrival["probes"]:
        assert sum(1 for r, d in noisy.calls if r == rate) == 3  # each rate decided on three steps
    once = NoisyBench(Options(find_max=True, latency_steps=6, latency_step_duration=20.0, latency_resolution=0.1,
                              latency_repeats=1))
    asyncio.run(once._find_max(None, [], None, None, None))  # type: ignore[arg-type]
    assert once.result["latency_search"]["on_arrival"]["max_rate"] >= 1050  # one lucky step decided it


class CrowdedBench(ModelBench):
    """The model engine on a machine whose other tenants take 70 % of a core during the first *crowded* steps,
    which then miss the limit at every rate; once, and the last retry, a step is undisturbed."""

    def __init__(self, opts: Options, crowded: int) -> None:
        super().__init__(opts)
        self.crowded = crowded

    async def step(self, driver: Any, engines: Any, sampler: Any, lag: Any, session: Any, rate: float,
                   duration_s: float, **_: Any) -> StepResult:
        res = await super().step(driver, engines, sampler, lag, session, rate, duration_s)
        if len(self.calls) <= self.crowded:
            res = step_at(rate, duration_s, 500, 400)
            res.cpu_by_process = {"engine": 50.0, "other": 70.0}
        return res


def test_a_step_disturbed_by_the_machines_other_tenants_is_measured_again_and_left_out_of_the_search() -> None:
    crowded = CrowdedBench(Options(find_max=True, latency_steps=0), crowded=2)
    max_rate, _, steps = asyncio.run(crowded._find_max(None, [], None, None, None))  # type: ignore[arg-type]
    assert crowded.calls[:3] == [(100, 10.0)] * 3  # the first step, twice disturbed, measured three times
    assert max_rate == 410 and steps[0].cpu_by_process is None  # the search read the undisturbed one
    assert [(d["rate"], d["other_cpu_pct"], d["passed"]) for d in crowded.result["disturbed_steps"]] == [(100, 70.0, False)] * 2
    # after DISTURBED_RETRIES, the last measured counts, disturbed or not
    stuck = CrowdedBench(Options(find_max=True, latency_steps=0), crowded=3)
    asyncio.run(stuck._find_max(None, [], None, None, None))  # type: ignore[arg-type]
    assert len(stuck.result["disturbed_steps"]) == 2 and stuck.calls[3] != (100, 10.0)
    # off: every step counts as measured
    off = CrowdedBench(Options(find_max=True, latency_steps=0, other_cpu_limit_pct=0), crowded=1)
    _, _, steps = asyncio.run(off._find_max(None, [], None, None, None))  # type: ignore[arg-type]
    assert "disturbed_steps" not in off.result and steps[0].e2e == {"p99_ms": 500} and off.calls[1] == (160, 10.0)
