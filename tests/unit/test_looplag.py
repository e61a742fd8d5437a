"""The event loop's lag metric and the stall log (cxstream/streams/looplag.py)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from cxstream.streams.looplag import LoopMonitor
from cxstream.streams.settings import Settings, SettingsError


def hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # what a long synchronous batch or timer does to every other task


async def test_the_lag_is_how_long_a_blocking_callback_held_the_loop() -> None:
    seen: list[float] = []
    monitor = LoopMonitor(interval_s=0.01, observe=seen.append)
    monitor.start()
    await asyncio.sleep(0.05)
    quiet = list(seen)
    hold_the_loop(0.12)
    await asyncio.sleep(0.05)
    await monitor.stop()
    assert quiet and max(quiet) < 0.1  # nothing held the loop: it woke up about on time
    assert max(seen) >= 0.1  # the sleep that came due during the hold woke up ~0.11 s late
    assert monitor.stalls == 0  # no watchdog without a threshold


async def test_a_stall_logs_the_stack_of_what_held_the_loop_once(caplog: pytest.LogCaptureFixture) -> None:
    monitor = LoopMonitor(interval_s=0.05, stall_ms=40, observe=lambda _: None)
    with caplog.at_level(logging.WARNING, logger="cxstream.streams.looplag"):
        monitor.start()
        await asyncio.sleep(0.1)
        hold_the_loop(0.3)  # one stall, over seven thresholds long
        await asyncio.sleep(0.1)
        await monitor.stop()
    stalls = [r for r in caplog.records if "event loop held up" in r.getMessage()]
    assert len(stalls) == 1 and monitor.stalls == 1
    assert "hold_the_loop" in stalls[0].getMessage() and "time.sleep" in stalls[0].getMessage()


async def test_no_stall_is_logged_while_the_loop_keeps_turning(caplog: pytest.LogCaptureFixture) -> None:
    monitor = LoopMonitor(interval_s=0.05, stall_ms=500, observe=lambda _: None)
    with caplog.at_level(logging.WARNING, logger="cxstream.streams.looplag"):
        monitor.start()
        for _ in range(10):
            hold_the_loop(0.01)  # short slices, as the batch loop and the chunked snapshot make them
            await asyncio.sleep(0.01)
        await monitor.stop()
    assert monitor.stalls == 0 and not [r for r in caplog.records if "event loop held up" in r.getMessage()]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        LoopMonitor(interval_s=0)
    with pytest.raises(ValueError, match="stall"):
        LoopMonitor(stall_ms=-1)
    with pytest.raises(SettingsError, match="CX_LOOP_STALL_LOG_MS"):
        Settings(loop_stall_log_ms=-5)
