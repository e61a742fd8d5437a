"""The benchmark's accounting of the broker's JIT compiler threads (cxstream/bench/loadgen.py)."""

from __future__ import annotations

import ctypes
import os
import threading
import time

from cxstream.bench.loadgen import CpuSplit, JitSampler

PR_SET_NAME = 15


def spin_as(name: bytes, seconds: float, hold: threading.Event | None = None, spun: threading.Event | None = None) -> threading.Thread:
    """A thread the kernel knows as *name* (as a JVM names its compiler threads) that burns *seconds* of CPU,
    then (given *hold*) sets *spun* and stays alive until *hold* is set."""

    def work() -> None:
        ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
        until = time.thread_time() + seconds  # this thread's own CPU, whatever else the process runs
        while time.thread_time() < until:
            pass
        if hold is not None and spun is not None:
            spun.set()
            hold.wait(10)

    t = threading.Thread(target=work)
    t.start()
    return t


def test_only_the_compiler_threads_count_and_an_exited_one_keeps_its_reading() -> None:
    jit = JitSampler([os.getpid()])
    before = jit.cpu_s()
    spin_as(b"VM Thread", 0.15).join()  # not a compiler thread
    assert jit.cpu_s() - before < 0.05
    hold, spun = threading.Event(), threading.Event()
    compiling = spin_as(b"C2 CompilerThre", 0.3, hold, spun)
    assert spun.wait(10)
    alive = jit.cpu_s() - before  # read while the thread exists
    hold.set()
    compiling.join()
    assert 0.25 <= alive < 1.0  # its 0.3 s
    assert jit.cpu_s() - before == alive  # the thread is gone: its last reading stays


def test_a_part_is_reported_beside_its_group_and_not_counted_again_in_other() -> None:
    class Fixed:
        def __init__(self) -> None:
            self.value = 0.0

        def cpu_s(self) -> float:
            return self.value

    broker, jit = Fixed(), Fixed()
    split = CpuSplit({"broker": broker}, {"broker_jit": jit})  # type: ignore[dict-item]
    split.mark("a")
    broker.value, jit.value = 1.0, 0.6  # the JIT's 0.6 s are inside the broker's 1.0 s
    time.sleep(0.2)
    split.mark("b")
    pct = split.pct("a", "b")
    assert pct["broker_jit"] < pct["broker"]
    # other = the machine's busy time - (broker + harness): the JIT's share is not subtracted twice
    t = split._marks["b"][0] - split._marks["a"][0]
    busy = 100 * (split._marks["b"][2] - split._marks["a"][2]) / t
    assert abs(pct["other"] - round(busy - pct["broker"] - pct["harness"], 1)) <= 0.2
