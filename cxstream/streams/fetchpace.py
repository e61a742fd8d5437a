"""Hold the stages' fetch at the broker for a few ms, only while the worker is busy (off by default).

Each round of the batch stages' loop (a fetch answered, its records processed, their outputs
produced) costs CPU whatever it carries: at 160/s ~1.3 ms in aiokafka and ~0.35 ms in the event
loop (docs/PERFORMANCE.md, "What limits them").  A fetch the broker answers as soon as one record
arrives (``fetch_min_bytes`` 1) keeps an idle worker's latency at a round trip, but under load it
makes a round per record or two.  A fetch always held for 16 KB or 5 ms halved the rounds and took
17-30 points of a core off at 160-410/s, but added up to 5 ms per hop at low rates, where no core
was short.

:class:`FetchPacer` chooses between the two from the worker's own CPU share (the process's CPU
time over wall time, so every thread of it): below ``from_share`` the consumer's own fetch; above
it the broker may hold the fetch, until :data:`BUSY_MIN_BYTES` have arrived, up to a wait that
grows in proportion to the share, to ``max_wait_ms`` at ``full_share``.  Held fetches make rounds
fewer, the share falls, the wait falls with it: the wait settles instead of flapping between two
modes.

Measured (December 5, ``CX_FETCH_PACE_MAX_MS=5``): the wait settled at 3-5 ms, took 6-10 points
of a core off at 160-256/s and did not lower the latency, so it is off by default
(docs/PERFORMANCE.md, "Levers measured").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from cxstream.streams import metrics

BUSY_MIN_BYTES = 16384  # what a held fetch waits for: an answer this big comes back at once (a backlog)
SMOOTHING = 0.5  # weight of the newest sample in the smoothed CPU share (a sample per interval)


class FetchPacer:
    """Set the fetch's wait from the worker's CPU share, every *interval_s*, through *apply(min_bytes, wait_ms)*.

    *idle* is the consumer's own (min_bytes, wait_ms), in force below ``from_share``
    (``CX_FETCH_MIN_BYTES``, ``CX_FETCH_WAIT_MS``: by default answered at once, an empty fetch
    held 10 ms).  *cpu* and *wall* are clocks in seconds (the process's CPU time and a monotonic
    clock), given for tests.
    """

    def __init__(
        self, apply: Callable[[int, int], None], *, max_wait_ms: int, idle: tuple[int, int], from_share: float = 0.5,
        full_share: float = 0.9, interval_s: float = 0.5, cpu: Callable[[], float] = time.process_time,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_wait_ms < 0:
            raise ValueError(f"the longest wait must be 0 (off) or positive, got {max_wait_ms}")
        if not 0.0 <= from_share < full_share:
            raise ValueError(f"the CPU shares must satisfy 0 <= from < full, got {from_share} and {full_share}")
        if interval_s <= 0:
            raise ValueError(f"the interval must be positive, got {interval_s}")
        self.apply = apply
        self.max_wait_ms = max_wait_ms
        self.idle = idle
        self.from_share = from_share
        self.full_share = full_share
        self.interval_s = interval_s
        self.cpu, self.wall = cpu, wall
        self.share = 0.0  # the smoothed CPU share
        self.wait_ms = 0  # the wait in force (0: answered at once)
        self._task: asyncio.Task[None] | None = None
        self._last: tuple[float, float] | None = None

    def wait_for(self, share: float) -> int:
        """The held fetch's longest wait at CPU *share*, ms (0: answered at once).

        >>> pacer = FetchPacer(lambda b, w: None, max_wait_ms=5, idle=(1, 10))
        >>> [pacer.wait_for(s) for s in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.2)]
        [0, 0, 1, 2, 4, 5, 5]
        """
        if share <= self.from_share:
            return 0
        part = min(1.0, (share - self.from_share) / (self.full_share - self.from_share))
        return round(self.max_wait_ms * part)

    def sample(self) -> int:
        """Read the clocks, smooth the share since the last sample into :attr:`share`, apply the wait it calls for."""
        now = (self.cpu(), self.wall())
        last, self._last = self._last, now
        if last is None:
            return self.wait_ms
        elapsed = now[1] - last[1]
        if elapsed <= 0:
            return self.wait_ms
        self.share += SMOOTHING * ((now[0] - last[0]) / elapsed - self.share)
        self.set_wait(self.wait_for(self.share))
        return self.wait_ms

    def set_wait(self, wait_ms: int) -> None:
        if wait_ms == self.wait_ms:
            return
        self.wait_ms = wait_ms
        if wait_ms:
            self.apply(max(BUSY_MIN_BYTES, self.idle[0]), wait_ms)
        else:
            self.apply(*self.idle)
        metrics.FETCH_HOLD_MS.set(wait_ms)

    def start(self) -> None:
        """Sample every interval on the running loop (off when ``max_wait_ms`` is 0)."""
        metrics.FETCH_HOLD_MS.set(0)
        if self.max_wait_ms > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cxstream.fetch-pace")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.set_wait(0)

    async def _run(self) -> None:
        self.sample()
        while True:
            await asyncio.sleep(self.interval_s)
            self.sample()


def aiokafka_fetch(consumer: Any) -> Callable[[int, int], None]:
    """Apply a wait to an aiokafka consumer: its fetcher reads both on every fetch request it builds."""

    def apply(min_bytes: int, wait_ms: int) -> None:
        fetcher = consumer._fetcher
        if fetcher is not None:
            fetcher._fetch_min_bytes = min_bytes
            fetcher._fetch_max_wait_ms = wait_ms

    return apply
