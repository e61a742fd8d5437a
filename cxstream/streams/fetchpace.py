"""The stages' fetch while the worker is busy: a shorter wait (on by default), or held for more records (off).

**The busy wait** (``CX_FETCH_WAIT_BUSY_MS``, 2 ms; December 6).  aiokafka keeps one fetch in
flight per broker, and a partition whose records were being handed out when it left is not in
it: that partition's next records wait until the fetch in flight returns, which, when none of
its own partitions gets a record, is its whole wait (``CX_FETCH_WAIT_MS``, 10 ms).  Under load
that is most rounds.  A 2 ms wait at all times lowered the contacts' on-arrival p99
at 1,129/s from 133 to 79 ms (medians of three rotated runs) for no more CPU; always on, it
cost an idle worker 8 points of a core (5/s: 15.4 against 6.9 %) in empty fetches, so it
applies only while the worker's CPU share is above ``from_share`` (``CX_FETCH_PACE_FROM``, 0.5).
So applied, six runs of each at 1,129/s on a slower hour: p99 median 104 against 111 ms, 85-117
against 85-153 ms; idle and at 410/s no difference (docs/PERFORMANCE.md, "Levers measured").

**The held fetch** (``CX_FETCH_PACE_MAX_MS``, off by default), the other way round:

Each round of the batch stages' loop (a fetch answered, its records processed, their outputs
produced) costs CPU whatever it carries: at 160/s ~1.3 ms in aiokafka and ~0.35 ms in the event
loop (docs/PERFORMANCE.md, "What limits them").  A fetch the broker answers as soon as one record
arrives (``fetch_min_bytes`` 1) keeps an idle worker's latency at a round trip, but under load it
makes a round per record or two.  A fetch always held for 16 KB or 5 ms halved the rounds and took
17-30 points of a core off at 160-410/s, but added up to 5 ms per hop at low rates, where no core
was short.

:class:`FetchPacer` chooses from the worker's own CPU share (the process's CPU time over wall
time, so every thread of it): below ``from_share`` the consumer's own fetch; above it the busy
wait, or with pacing on, the broker may hold the fetch, until :data:`BUSY_MIN_BYTES` have arrived,
up to a wait that grows in proportion to the share, to ``max_wait_ms`` at ``full_share``.  Held fetches make rounds
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
    held 10 ms).  Above it, *busy_wait_ms* replaces that wait (0: it does not), unless the fetch
    is held (*max_wait_ms*, 0: never).  *cpu* and *wall* are clocks in seconds (the process's CPU
    time and a monotonic clock), given for tests.
    """

    def __init__(
        self, apply: Callable[[int, int], None], *, max_wait_ms: int, idle: tuple[int, int], from_share: float = 0.5,
        full_share: float = 0.9, interval_s: float = 0.5, cpu: Callable[[], float] = time.process_time,
        wall: Callable[[], float] = time.monotonic, busy_wait_ms: int = 0,
    ) -> None:
        if max_wait_ms < 0:
            raise ValueError(f"the longest wait must be 0 (off) or positive, got {max_wait_ms}")
        if busy_wait_ms < 0:
            raise ValueError(f"the busy wait must be 0 (off) or positive, got {busy_wait_ms}")
        if not 0.0 <= from_share < full_share:
            raise ValueError(f"the CPU shares must satisfy 0 <= from < full, got {from_share} and {full_share}")
        if interval_s <= 0:
            raise ValueError(f"the interval must be positive, got {interval_s}")
        self.apply = apply
        self.max_wait_ms = max_wait_ms
        self.busy_wait_ms = busy_wait_ms
        self.idle = idle
        self.from_share = from_share
        self.full_share = full_share
        self.interval_s = interval_s
        self.cpu, self.wall = cpu, wall
        self.share = 0.0  # the smoothed CPU share
        self.wait_ms = 0  # the held fetch's wait in force (0: not held)
        self.fetch = idle  # the (min_bytes, wait_ms) in force
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
        self.set_wait(self.wait_for(self.share), busy=self.share > self.from_share)
        return self.wait_ms

    def set_wait(self, wait_ms: int, *, busy: bool = False) -> None:
        """Hold the fetch up to *wait_ms* (0: not held); if not held, the busy wait when *busy*, else the consumer's own.

        >>> applied = []
        >>> pacer = FetchPacer(lambda b, w: applied.append((b, w)), max_wait_ms=0, idle=(1, 10), busy_wait_ms=2)
        >>> pacer.set_wait(0, busy=True); pacer.set_wait(0, busy=True); pacer.set_wait(0); applied
        [(1, 2), (1, 10)]
        """
        self.wait_ms = wait_ms
        if wait_ms:
            fetch = (max(BUSY_MIN_BYTES, self.idle[0]), wait_ms)
        elif busy and self.busy_wait_ms:
            fetch = (self.idle[0], self.busy_wait_ms)
        else:
            fetch = self.idle
        if fetch != self.fetch:
            self.fetch = fetch
            self.apply(*fetch)
        metrics.FETCH_HOLD_MS.set(wait_ms)
        metrics.FETCH_WAIT_MS.set(fetch[1])

    def start(self) -> None:
        """Sample every interval on the running loop (off when neither ``max_wait_ms`` nor ``busy_wait_ms`` is set)."""
        metrics.FETCH_HOLD_MS.set(0)
        metrics.FETCH_WAIT_MS.set(self.fetch[1])
        if self.max_wait_ms > 0 or self.busy_wait_ms > 0:
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
