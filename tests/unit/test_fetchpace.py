"""FetchPacer: while the worker is busy its fetch waits less (the busy wait), or is held in proportion to how busy (pacing), and settles."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from cxstream.streams.fetchpace import BUSY_MIN_BYTES, FetchPacer
from cxstream.streams.settings import Settings, SettingsError


class Worker:
    """Fake clocks of a worker whose CPU share at a held fetch's wait w is share(w)."""

    def __init__(self, share: dict[int, float] | float) -> None:
        self.shares = share
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.applied: list[tuple[int, int]] = []
        self.wait = 0

    def apply(self, min_bytes: int, wait_ms: int) -> None:
        self.applied.append((min_bytes, wait_ms))
        self.wait = wait_ms if min_bytes == BUSY_MIN_BYTES else 0

    def tick(self, seconds: float = 0.5) -> None:
        share = self.shares if isinstance(self.shares, float) else self.shares[self.wait]
        self.wall_s += seconds
        self.cpu_s += share * seconds

    def pacer(self, **kw: object) -> FetchPacer:
        return FetchPacer(
            self.apply, max_wait_ms=kw.pop("max_wait_ms", 5), idle=(1, 10),  # type: ignore[arg-type]
            cpu=lambda: self.cpu_s, wall=lambda: self.wall_s, **kw,  # type: ignore[arg-type]
        )

    def run(self, pacer: FetchPacer, samples: int) -> list[int]:
        """Sample *samples* times, half a second apart; the waits chosen."""
        waits = []
        for _ in range(samples):
            waits.append(pacer.sample())
            self.tick()
        return waits


def test_an_idle_worker_fetch_is_never_held() -> None:
    worker = Worker(0.3)
    pacer = worker.pacer()
    worker.run(pacer, 20)
    assert pacer.wait_ms == 0
    assert worker.applied == []  # nothing to change: the consumer keeps its own fetch
    assert pacer.share == pytest.approx(0.3, abs=0.01)


def test_a_busy_worker_fetch_is_held_for_16_kb_and_released_when_it_is_idle_again() -> None:
    worker = Worker(0.95)
    pacer = worker.pacer()
    worker.run(pacer, 10)
    assert pacer.wait_ms == 5
    assert worker.applied[-1] == (BUSY_MIN_BYTES, 5)
    assert [w for _, w in worker.applied] == sorted(w for _, w in worker.applied)  # the wait rose with the smoothed share
    worker.shares = 0.2
    worker.run(pacer, 10)
    assert pacer.wait_ms == 0
    assert worker.applied[-1] == (1, 10)  # the consumer's own min bytes and wait again
    assert REGISTRY.get_sample_value("cx_stage_fetch_hold_ms") == 0


def test_the_wait_settles_where_held_fetches_bring_the_share_down() -> None:
    """Each ms of wait takes 5 points of CPU off (fewer rounds): no flapping between off and the longest wait."""
    worker = Worker({w: 0.85 - 0.05 * w for w in range(6)})
    pacer = worker.pacer()
    waits = worker.run(pacer, 60)
    last = waits[-20:]
    assert max(last) - min(last) <= 1, waits
    assert 1 <= min(last) <= 4, waits
    assert 0.5 < pacer.share < 0.85


def test_stopping_gives_the_consumer_its_own_fetch_back() -> None:
    worker = Worker(1.0)

    async def scenario() -> None:
        pacer = worker.pacer(interval_s=0.01)
        pacer.start()
        while pacer.wait_ms == 0:
            worker.tick(0.01)
            await asyncio.sleep(0.01)
        assert REGISTRY.get_sample_value("cx_stage_fetch_hold_ms") == pacer.wait_ms > 0
        await pacer.stop()
        assert pacer.wait_ms == 0

    asyncio.run(scenario())
    assert worker.applied[-1] == (1, 10)


def test_off_means_no_sampling() -> None:
    worker = Worker(1.0)

    async def scenario() -> None:
        pacer = worker.pacer(max_wait_ms=0, interval_s=0.01)
        pacer.start()
        for _ in range(5):
            worker.tick(0.01)
            await asyncio.sleep(0.01)
        await pacer.stop()

    asyncio.run(scenario())
    assert worker.applied == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="0 <= from < full"):
        FetchPacer(lambda b, w: None, max_wait_ms=5, idle=(1, 10), from_share=0.9, full_share=0.5)
    with pytest.raises(ValueError, match="longest wait"):
        FetchPacer(lambda b, w: None, max_wait_ms=-1, idle=(1, 10))
    with pytest.raises(SettingsError, match="CX_FETCH_PACE_MAX_MS"):
        Settings(fetch_pace_max_ms=-1)
    with pytest.raises(SettingsError, match="CX_FETCH_PACE_FROM"):
        Settings(fetch_pace_from=0.9, fetch_pace_full=0.8)


def test_a_busy_worker_fetch_waits_the_busy_wait_and_an_idle_one_its_own_again() -> None:
    """Pacing off (the default): above CX_FETCH_PACE_FROM the fetch waits CX_FETCH_WAIT_BUSY_MS, below it the consumer's own wait."""
    worker = Worker(0.3)
    pacer = worker.pacer(max_wait_ms=0, busy_wait_ms=2)
    worker.run(pacer, 10)
    assert worker.applied == [] and pacer.fetch == (1, 10)  # idle: the consumer keeps its own fetch
    worker.shares = 0.85
    worker.run(pacer, 10)
    assert worker.applied == [(1, 2)]  # answered at once when a record arrives, else after 2 ms: set once
    assert REGISTRY.get_sample_value("cx_stage_fetch_wait_ms") == 2
    assert REGISTRY.get_sample_value("cx_stage_fetch_hold_ms") == 0  # not held
    worker.shares = 0.1
    worker.run(pacer, 10)
    assert worker.applied == [(1, 2), (1, 10)]
    assert REGISTRY.get_sample_value("cx_stage_fetch_wait_ms") == 10


def test_a_held_fetch_takes_precedence_over_the_busy_wait() -> None:
    worker = Worker(0.95)
    pacer = worker.pacer(max_wait_ms=5, busy_wait_ms=2)
    worker.run(pacer, 10)
    assert worker.applied[-1] == (BUSY_MIN_BYTES, 5)
    assert (1, 2) not in worker.applied


def test_the_busy_wait_alone_starts_the_sampling_and_stopping_restores_the_consumers_wait() -> None:
    worker = Worker(1.0)

    async def scenario() -> None:
        pacer = worker.pacer(max_wait_ms=0, busy_wait_ms=2, interval_s=0.01)
        pacer.start()
        while pacer.fetch == (1, 10):
            worker.tick(0.01)
            await asyncio.sleep(0.01)
        assert pacer.fetch == (1, 2)
        await pacer.stop()

    asyncio.run(scenario())
    assert worker.applied == [(1, 2), (1, 10)]
    with pytest.raises(ValueError, match="busy wait"):
        FetchPacer(lambda b, w: None, max_wait_ms=0, idle=(1, 10), busy_wait_ms=-1)
    with pytest.raises(SettingsError, match="CX_FETCH_WAIT_BUSY_MS"):
        Settings(fetch_wait_busy_ms=-1)
