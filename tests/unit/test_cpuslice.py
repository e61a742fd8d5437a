"""CPU time slices for the latency-critical processes (cxstream.streams.cpuslice), on this machine's own kernel."""

from __future__ import annotations

import os
import platform
import re
import sys
import threading
from collections.abc import Callable
from typing import Any

from cxstream.streams.cpuslice import MIN_SLICE_NS, request_slice, slice_us


def kernel_takes_slices() -> bool:
    """Linux 6.12 or later on x86_64 or aarch64: where ``sched_setattr`` sets a fair task's slice."""
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    return (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64") and m is not None
            and (int(m[1]), int(m[2])) >= (6, 12))


def in_a_thread(fn: Callable[[], Any]) -> Any:
    """Run *fn* in a thread of its own (a slice is per thread: the test runner's keeps its own) and return its result."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def test_a_slice_asked_for_is_the_slice_the_kernel_then_reports() -> None:
    got, read, policy = in_a_thread(lambda: (request_slice(250), slice_us(), os.sched_getscheduler(0)))
    if kernel_takes_slices():
        assert got == 250.0 and read == 250.0
    else:
        assert got is None and read != 250.0
    assert policy == os.SCHED_OTHER  # the policy is kept


def test_a_slice_below_the_kernels_shortest_is_raised_to_it() -> None:
    got = in_a_thread(lambda: request_slice(10))
    assert got == (MIN_SLICE_NS / 1000 if kernel_takes_slices() else None)


def test_no_slice_asked_for_changes_nothing() -> None:
    before, got, after = in_a_thread(lambda: (slice_us(), request_slice(0), slice_us()))
    assert got is None and before == after


def test_threads_a_thread_starts_inherit_its_slice() -> None:
    def parent() -> tuple[float | None, float | None]:
        request_slice(300)
        return slice_us(), in_a_thread(slice_us)

    mine, child = in_a_thread(parent)
    assert child == mine
    assert (mine == 300.0) is kernel_takes_slices()
