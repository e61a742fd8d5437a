"""Ask Linux for a short CPU time slice for a latency-critical process (the HTTP API, Redis).

Since Linux 6.6 the fair scheduler is EEVDF.  A task woken on a core that another task is
using gets the core when its virtual deadline comes first, and since 6.12 a task may ask for
its own slice (``sched_setattr`` with ``sched_runtime`` set, no privilege needed, clamped by
the kernel to 0.1-100 ms): a short slice gives an early deadline, so the woken task preempts
the running one at once instead of waiting out that one's slice (1.4 ms on the bench
machine's 2 cores).  The task's share of the CPU is unchanged (that is its weight, its nice
value); only how soon it runs after waking changes.  The slice is inherited by the threads
a process starts and by its children across ``exec``.

The context lookups are the latency-critical path the engine shares its cores with: a lookup
wakes the API process, which wakes Redis, which wakes the API again.  ``CX_LATENCY_SLICE_US``
(:class:`cxstream.streams.settings.Settings`) gives the API processes and the embedded Redis
that slice; the stream workers keep the kernel's default (docs/PERFORMANCE.md, "Levers
measured").  On an older kernel, another architecture or another system this module does
nothing and says so (:func:`request_slice` returns ``None``).
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys

log = logging.getLogger(__name__)

#: ``sched_setattr`` / ``sched_getattr`` system call numbers by machine.
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}
#: The shortest slice the kernel accepts for a fair task, and the longest (ns); values outside are clamped.
MIN_SLICE_NS, MAX_SLICE_NS = 100_000, 100_000_000
#: ``CX_LATENCY_SLICE_US``'s default, and the bench's lookup client's (µs)
DEFAULT_LATENCY_SLICE_US = 100


class _SchedAttr(ctypes.Structure):
    """``struct sched_attr`` (``SCHED_ATTR_SIZE_VER1``, 56 bytes)."""

    _fields_ = [
        ("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64),
        ("sched_util_min", ctypes.c_uint32), ("sched_util_max", ctypes.c_uint32),
    ]


def _libc_and_calls() -> tuple[ctypes.CDLL, int, int] | None:
    calls = _SYSCALLS.get(platform.machine())
    if not sys.platform.startswith("linux") or calls is None:
        return None
    return ctypes.CDLL(None, use_errno=True), *calls


def _get(libc: ctypes.CDLL, nr_get: int, tid: int) -> _SchedAttr | None:
    attr = _SchedAttr()
    if libc.syscall(nr_get, tid, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0:
        return None
    return attr


def slice_us(tid: int = 0) -> float | None:
    """The time slice of thread *tid* (0: the calling one) in µs as the kernel reports it, or ``None`` where it cannot say.

    >>> s = slice_us()
    >>> s is None or s > 0
    True
    """
    found = _libc_and_calls()
    if found is None:
        return None
    libc, _, nr_get = found
    attr = _get(libc, nr_get, tid)
    return attr.sched_runtime / 1000 if attr is not None and attr.sched_runtime else None


def request_slice(us: float, tid: int = 0) -> float | None:
    """Ask for a time slice of *us* µs for thread *tid* (0: the calling one); returns the slice it then has, in µs.

    Only a task of the fair classes (``SCHED_OTHER``, ``SCHED_BATCH``) is changed, its policy and
    nice value kept.  ``None``: not changed (not Linux, a kernel without custom slices, an error).
    It logs nothing, so it is safe to call between ``fork`` and ``exec``.
    """
    found = _libc_and_calls()
    if found is None or us <= 0:
        return None
    libc, nr_set, nr_get = found
    attr = _get(libc, nr_get, tid)
    if attr is None or attr.sched_policy not in (0, 3):  # SCHED_OTHER, SCHED_BATCH
        return None
    want = max(MIN_SLICE_NS, min(MAX_SLICE_NS, int(us * 1000)))
    attr.size = ctypes.sizeof(attr)
    attr.sched_runtime = want
    if libc.syscall(nr_set, tid, ctypes.byref(attr), 0) != 0:
        return None
    got = _get(libc, nr_get, tid)
    if got is None or got.sched_runtime != want:  # a kernel before 6.12 accepts the call and ignores the runtime
        return None
    return want / 1000


def apply_latency_slice(us: float, what: str) -> float | None:
    """:func:`request_slice` for the calling process at its start, logged once: what the engine's processes call."""
    if us <= 0:
        return None
    got = request_slice(us)
    if got is None:
        log.info("%s: no short CPU slice (CX_LATENCY_SLICE_US=%s): this kernel does not take one", what, us)
    else:
        log.info("%s: CPU slice %.0f µs (CX_LATENCY_SLICE_US)", what, got)
    return got
