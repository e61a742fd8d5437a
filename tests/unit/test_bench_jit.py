"""The benchmark's accounting of the broker's JIT compiler threads (cxstream/bench/loadgen.py)."""

from __future__ import annotations

import ctypes
import os
import threading
import time

from cxstream.bench.loadgen import CpuSplit, JitSampler

PR_SET_NAME = 15


def spin_as(name: bytes, seconds: float) -> None:
    """Burn CPU on a thread the kernel knows as *name* (as a JVM names its compiler threads)."""

    def work() -> None:
        ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
        until = time.process_time() + seconds
        while time.process_time() < until:
            pass

    t = threading.Thread(target=work)
    t.start()
    t.join()


def test_only_the_compiler_threads_count_and_an_exited_one_keeps_its_reading() -> None:
    jit = JitSampler([os.getpid()])
    before = jit.cpu_s()
    spin_as(b"VM Thread", 0.15)  # not a compiler thread
    assert jit.cpu_s() - before < 0.05
    compiling = threading.Thread(target=spin_as, args=(b"C2 CompilerThre", 0.3))
    compiling.start()
    time.sleep(0.2)
    while compiling.is_alive():
        jit.cpu_s()  # read while it runs: the thread exits before the last reading
        time.sleep(0.01)
    compiling.join()
    assert 0.2 <= jit.cpu_s() - before < 1.0  # its 0.3 s, though the thread is gone


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
