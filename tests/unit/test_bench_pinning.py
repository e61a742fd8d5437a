"""The benchmark's --pin-engine: the engine workers on core 0, everything else on the others (cxstream/bench/loadgen.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cxstream.bench.loadgen import ENGINE_CORES, EngineProc, other_cores, pin, pin_api_processes

# a process with a second thread, which starts a child process (an engine and its API worker, in miniature)
PARENT = """
import subprocess, sys, threading, time
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
print(child.pid, flush=True)
time.sleep(30)
"""


def affinities(pid: int) -> set[frozenset[int]]:
    return {frozenset(os.sched_getaffinity(int(task.name))) for task in Path(f"/proc/{pid}/task").iterdir()}


def test_the_other_cores_are_all_but_the_engine_s() -> None:
    cores = set(range(os.cpu_count() or 1))
    assert other_cores() == (cores - ENGINE_CORES or set(ENGINE_CORES))


def test_pin_moves_every_thread_and_the_api_processes_go_to_the_other_cores() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while len(list(Path(f"/proc/{parent.pid}/task").iterdir())) < 2:
            assert time.monotonic() < deadline, "the parent's second thread did not start"
            time.sleep(0.01)
        pin(parent.pid, ENGINE_CORES)
        assert affinities(parent.pid) == {frozenset(ENGINE_CORES)}, "every thread, not only the main one"
        moved = pin_api_processes([EngineProc(parent, "", Path("/nonexistent"))])
        assert moved == [child]
        assert affinities(child) == {frozenset(other_cores())}
        assert affinities(parent.pid) == {frozenset(ENGINE_CORES)}, "the engine itself stays"
    finally:
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
