"""How long the event loop keeps an arriving record waiting, and (opt-in) what held it up.

The batch stages, the Faust timers, the learner and the Redis write-behind share one event
loop: while one of them runs, nothing else does, and a record that has arrived waits for it.
:class:`LoopMonitor` measures that wait the way a record arriving at a random moment sees it:
a task sleeps ``interval_s`` and records how much later than that it wakes up
(``cx_event_loop_lag_seconds``): the rest of whatever ran when its timer came due.  Ten
wake-ups a second cost nothing measurable.

With ``stall_ms`` (``CX_LOOP_STALL_LOG_MS``) a watchdog thread also pings the loop every
``stall_ms / 2`` and, when a ping has waited longer than ``stall_ms``, logs the loop thread's
stack at that moment, once per stall: which code held the loop up.  Off by default: the pings
wake the loop (and take the GIL) 2,000 / ``stall_ms`` times a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

from cxstream.streams import metrics

log = logging.getLogger(__name__)


class LoopMonitor:
    """Measure the running loop's lag into *observe* (seconds); with *stall_ms* > 0, log the stack of stalls."""

    def __init__(
        self, interval_s: float = 0.1, stall_ms: int = 0, observe: Callable[[float], None] = metrics.EVENT_LOOP_LAG.observe
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"the interval must be positive, got {interval_s}")
        if stall_ms < 0:
            raise ValueError(f"the stall threshold must be 0 (off) or positive, got {stall_ms}")
        self.interval_s = interval_s
        self.stall_s = stall_ms / 1000.0
        self.observe = observe
        self.stalls = 0  # stalls logged
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Start measuring the running loop (call from a coroutine on it)."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._measure(), name="cxstream.loop-lag")
        if self.stall_s > 0:
            self._thread = threading.Thread(
                target=self._watch, args=(loop, threading.get_ident()), name="cxstream.loop-watchdog", daemon=True
            )
            self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 1.0)

    async def _measure(self) -> None:
        clock, interval = time.perf_counter, self.interval_s
        while True:
            started = clock()
            await asyncio.sleep(interval)
            self.observe(max(0.0, clock() - started - interval))

    def _watch(self, loop: asyncio.AbstractEventLoop, loop_thread: int) -> None:
        """Ping the loop every half threshold; log its stack once while a ping waits longer than the threshold."""
        answered = threading.Event()
        every = self.stall_s / 2
        while not self._stop.is_set():
            answered.clear()
            sent = time.monotonic()
            try:
                loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # the loop is closed
                return
            if answered.wait(self.stall_s) or self._stop.is_set():
                self._stop.wait(max(0.0, every - (time.monotonic() - sent)))
                continue
            frame = sys._current_frames().get(loop_thread)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)\n"
            self.stalls += 1
            log.warning("event loop held up for over %.0f ms; it was running:\n%s", self.stall_s * 1000, stack.rstrip())
            while not answered.wait(every) and not self._stop.is_set():
                pass  # the same stall: logged once
