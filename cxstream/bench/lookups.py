"""Open-loop context lookups, run in a process of their own by the pipeline and context benches.

Each request has a planned time (``rate`` per second from ``start_at``); its latency
is measured from that planned time to the end of the response, so a slow server (or
a late client) shows as latency, not as a lower rate.  The event loop's own timers tick in whole
milliseconds (libuv's), which sent requests up to ~1 ms late on an idle machine, so the sends
are paced by a Linux timer file descriptor (``--pacer timerfd``, the default where there is one:
armed for each planned time to the nanosecond, watched by the event loop, which it wakes at
that time itself) or by a thread that sleeps to each planned time and wakes the loop
(``--pacer thread``: two wake-ups in a row, the thread's and the loop's, each of which can wait
for a busy core).  The first ``warmup_s`` are discarded.  When more than
``max_outstanding`` requests are in flight, a planned request is not sent and is counted
(``skipped_overload``).  Prints one JSON object: counts by status and p50/p95/p99/p99.9/max
(ms) from the planned times, the same from each request's send (``from_send``: what the
server and the machine took, the client's lateness left out), the rate answered in the
measured window (``achieved_rps``), how late the client itself sent
(``client_send_lag_p99_ms``) and its own CPU use (``client_cpu_pct``, % of one core): a
client that cannot keep up shows there; ``client_pacer`` says which pacer sent them.  The lookups stand for callers on other machines, and
here they share the cores of the engine under test: the client asks Linux for the short CPU
slice the API processes run with (``--slice-us``, :mod:`cxstream.streams.cpuslice`), so that its
wake-ups (to send on time, to read an answer) are not left waiting behind a busy stream worker;
the slice it got is ``client_slice_us`` (``None``: the kernel's default).  With ``--sched fifo`` it
runs in Linux's real-time class instead (``SCHED_FIFO``, priority 1; root or ``CAP_SYS_NICE``):
a waking client then takes a core from the engine at once, so its own lateness and its wait to
read an answer leave the measure, as for a caller on a machine of its own, while the server
gets no privilege.  ``client_sched`` says which class it ran in (``fair`` when it was refused,
``client_sched_error`` why).

What is requested, exactly one of:

* ``--customers N``: ``GET /customers/{id}/context`` of customer ids drawn uniformly from the
  pipeline workload's first N (:func:`cxstream.bench.workload.customer_ref`);
* ``--paths-file FILE``: one URL path per line (``/customers/C00042/context``,
  ``/customers/context?email=a%40b.org``), drawn uniformly; blank lines and ``#`` lines skipped.

Both draw with ``--seed``.  The API key goes in ``X-API-Key`` (``--auth x-api-key``, the
default) or ``Authorization: Bearer`` (``--auth bearer``).

    python -m cxstream.bench.lookups --url http://127.0.0.1:PORT --key KEY --rate 1000 --duration 20 --customers 10000
    python -m cxstream.bench.lookups --url http://127.0.0.1:PORT --key KEY --auth bearer --paths-file paths.txt
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import random
import resource
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from cxstream.bench.workload import customer_ref
from cxstream.replay.publish import LatencySummary
from cxstream.streams.cpuslice import DEFAULT_LATENCY_SLICE_US, request_slice

AUTH_SCHEMES = ("x-api-key", "bearer")
PACERS = ("timerfd", "thread")
#: The client's scheduling class: Linux's fair class (with ``--slice-us``) or the real-time ``SCHED_FIFO``.
SCHEDS = ("fair", "fifo")


def request_fifo(priority: int = 1, *, reset_on_fork: bool = False) -> str | None:
    """Put the calling thread in the real-time class ``SCHED_FIFO`` at *priority*; None, or why it could not.

    Threads started afterwards inherit it, and so do child processes unless *reset_on_fork*
    (``SCHED_RESET_ON_FORK``: they start in the fair class).  Linux keeps 5 % of each second for
    the other classes (``sched_rt_runtime_us``), so a client that spins cannot take a core for good.
    """
    if not hasattr(os, "sched_setscheduler"):
        return "no sched_setscheduler on this platform"
    policy = os.SCHED_FIFO | (os.SCHED_RESET_ON_FORK if reset_on_fork else 0)
    try:
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    except OSError as exc:
        return f"SCHED_FIFO refused: {exc.strerror or exc}"
    return None


def leave_fifo() -> None:
    """Put the calling thread back in the fair class (``SCHED_OTHER``)."""
    if hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class WallTimer:
    """A Linux timer file descriptor (``timerfd_create(2)``) on the wall clock, armed for absolute times.

    It becomes readable at the time :meth:`arm` was given (or at once, for a time passed): an
    event loop watching it (``add_reader``) wakes then, with nanosecond resolution, not on its own
    millisecond ticks.  :meth:`create` returns None where there is none (not Linux).
    """

    _CLOCK_REALTIME, _TFD_TIMER_ABSTIME = 0, 1

    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._libc, self.fd = libc, fd

    @classmethod
    def create(cls) -> WallTimer | None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.timerfd_create(cls._CLOCK_REALTIME, os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return None
        return cls(libc, fd) if fd >= 0 else None

    def arm(self, at: float) -> None:
        """Readable at *at* (epoch seconds, as ``time.time()``); at once if it has passed."""
        sec = int(at)
        nsec = min(999_999_999, int((at - sec) * 1e9))
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(sec, nsec))  # no interval: once
        if self._libc.timerfd_settime(self.fd, self._TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def fired(self) -> bool:
        """Whether it has expired since it was last armed (and clears it)."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        os.close(self.fd)


def parse_paths(lines: Iterable[str]) -> list[str]:
    """The request paths of a paths file's lines: stripped, blank and ``#`` lines skipped.

    >>> parse_paths(["/customers/C1/context\\n", "", "# comment", "  /customers/context?email=a%40b.org  "])
    ['/customers/C1/context', '/customers/context?email=a%40b.org']
    """
    paths = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("/") or any(c.isspace() for c in line):
            raise ValueError(f"line {n}: {line[:80]!r} is not a URL path (it must start with '/' and hold no spaces)")
        paths.append(line)
    if not paths:
        raise ValueError("no request paths")
    return paths


def read_paths(path: str | Path) -> list[str]:
    """:func:`parse_paths` of a file."""
    with open(path, encoding="utf-8") as f:
        return parse_paths(f)


def path_picker(rng: random.Random, *, customers: int | None = None, paths: Sequence[str] | None = None) -> Callable[[], str]:
    """A function drawing the next request path with *rng*: a workload customer's context, or one of *paths*.

    >>> pick = path_picker(random.Random(1), paths=["/a", "/b"])
    >>> sorted({pick() for _ in range(50)})
    ['/a', '/b']
    """
    if (customers is None) == (paths is None):
        raise ValueError("give exactly one of customers and paths")
    if paths is not None:
        if not paths:
            raise ValueError("no request paths")
        choices = list(paths)
        return lambda: rng.choice(choices)
    assert customers is not None
    if customers < 1:
        raise ValueError("customers must be at least 1")
    n = customers
    return lambda: f"/customers/{customer_ref(rng.randrange(n))}/context"


def auth_headers(key: str, scheme: str = "x-api-key") -> dict[str, str]:
    """The header carrying the API key (the API accepts both).

    >>> auth_headers("k"), auth_headers("k", "bearer")
    ({'X-API-Key': 'k'}, {'Authorization': 'Bearer k'})
    """
    if scheme == "x-api-key":
        return {"X-API-Key": key}
    if scheme == "bearer":
        return {"Authorization": f"Bearer {key}"}
    raise ValueError(f"unknown auth scheme {scheme!r}; use one of {', '.join(AUTH_SCHEMES)}")


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections to one server, spoken by hand: a load generator must cost little CPU.

    (aiohttp's client took ~45 % of a core for 1,000 requests/s on the 2-core bench machine,
    CPU the server under test then did not get.)  GET only; the body is read by Content-Length.
    """

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"{url}: only http://host:port URLs are supported")
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f" HTTP/1.1\r\nHost: {u.netloc}\r\n{extra}\r\n".encode()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, path: str) -> int:
        """GET *path*; returns the status code (the connection goes back to the pool)."""
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(b"GET " + (self.prefix + path).encode() + self._head)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.append((reader, writer))
        return status

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def run_lookups(
    url: str, key: str, rate: float, duration_s: float, customers: int | None = None, seed: int = 11,
    start_at: float | None = None, warmup_s: float = 1.0, max_outstanding: int = 512, *,
    paths: Sequence[str] | None = None, auth: str = "x-api-key", pacer: str = "timerfd",
) -> dict[str, object]:
    """Send ``rate * duration_s`` lookups open-loop (of *customers* or of *paths*); returns the summary dict.

    *pacer*: ``timerfd`` (the thread where the platform has none) or ``thread`` (module docstring).
    """
    if pacer not in PACERS:
        raise ValueError(f"pacer {pacer!r}: one of {', '.join(PACERS)}")
    pick = path_picker(random.Random(seed), customers=customers, paths=paths)
    n = int(rate * duration_s)
    latencies: list[float] = []
    from_send: list[float] = []
    late: list[float] = []
    status: Counter[str] = Counter()
    outstanding: set[asyncio.Task[None]] = set()
    skipped = 0
    last_answer = 0.0
    pool = ConnectionPool(url, auth_headers(key, auth))
    try:
        t0 = start_at if start_at is not None else time.time() + 0.2
        measure_from = t0 + warmup_s
        cpu_from: float | None = None

        async def one(planned: float, path: str) -> None:
            nonlocal last_answer
            answered = False
            sent = time.time()
            try:
                async with asyncio.timeout(5.0):  # no task of its own: the request is written now
                    code = str(await pool.get(path))
                answered = True
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                code = type(exc).__name__
            if planned >= measure_from:
                now = time.time()
                latencies.append(now - planned)
                from_send.append(now - sent)
                late.append(max(0.0, sent - planned))
                status[code] += 1
                if answered:
                    last_answer = max(last_answer, now)

        loop = asyncio.get_running_loop()
        paced = loop.create_future()

        def launch(planned: float) -> None:
            nonlocal cpu_from, skipped
            if planned >= measure_from and cpu_from is None:
                cpu_from = _cpu_s()
            if len(outstanding) >= max_outstanding:  # the server is far behind: count, do not pile up
                skipped += 1
                return
            task = asyncio.ensure_future(one(planned, pick()))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)

        def pace() -> None:
            # The event loop's timers tick in whole milliseconds (libuv's): a thread sleeping to each
            # planned time (nanosleep) and waking the loop sends on time instead of up to ~1 ms late.
            for i in range(n):
                planned = t0 + i / rate
                delay = planned - time.time()
                if delay > 0:
                    time.sleep(delay)
                loop.call_soon_threadsafe(launch, planned)
            loop.call_soon_threadsafe(paced.set_result, None)

        timer = WallTimer.create() if pacer == "timerfd" else None
        used = "timerfd" if timer is not None else "thread"
        if timer is not None:
            # The loop wakes at each planned time itself: one wake-up, not the thread's then the loop's.
            nxt = 0

            def tick() -> None:
                nonlocal nxt
                if not timer.fired():
                    return
                now = time.time()
                while nxt < n and t0 + nxt / rate <= now:
                    launch(t0 + nxt / rate)
                    nxt += 1
                if nxt < n:
                    timer.arm(t0 + nxt / rate)
                else:
                    loop.remove_reader(timer.fd)
                    paced.set_result(None)

            loop.add_reader(timer.fd, tick)
            try:
                if n:
                    timer.arm(t0)
                else:
                    paced.set_result(None)
                await paced
            finally:
                loop.remove_reader(timer.fd)
                timer.close()
        else:
            thread = threading.Thread(target=pace, name="lookups-pacer", daemon=True)
            thread.start()
            await paced
            thread.join()
        unfinished = 0
        if outstanding:
            _, pending = await asyncio.wait(outstanding, timeout=10.0)
            unfinished = len(pending)
        wall_end = time.time()
        client_cpu = _cpu_s() - cpu_from if cpu_from is not None else None
    finally:
        pool.close()
    summary = LatencySummary.of(latencies).as_dict()
    lateness = LatencySummary.of(late)
    answered_n = sum(v for k, v in status.items() if k.isdigit())
    window = last_answer - measure_from
    return {
        "planned": n,
        "measured": len(latencies),
        "rate": rate,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "status": dict(status),
        "skipped_overload": skipped,
        "unfinished": unfinished,
        **{f"{k}": v for k, v in summary.items() if k != "count"},
        "achieved_rps": round(answered_n / window, 1) if answered_n and window > 0 else None,
        "client_send_lag_p99_ms": lateness.p99_ms,
        "from_send": {k: v for k, v in LatencySummary.of(from_send).as_dict().items() if k != "count"},
        "client_cpu_pct": (round(100 * client_cpu / max(1e-6, wall_end - measure_from), 1)
                           if client_cpu is not None else None),
        "client_pacer": used,
    }


# --------------------------------------------------------------------------- as a subprocess
def lookups_command(
    url: str, key: str, rate: float, duration_s: float, *, customers: int | None = None,
    paths_file: str | Path | None = None, seed: int | None = None, start_at: float | None = None,
    warmup_s: float | None = None, auth: str | None = None, slice_us: float | None = None, pacer: str | None = None,
    sched: str | None = None,
) -> list[str]:
    """The command line running this module with these arguments (``sys.executable -m ...``)."""
    cmd = [sys.executable, "-m", "cxstream.bench.lookups", "--url", url, "--key", key,
           "--rate", str(rate), "--duration", str(duration_s)]
    if customers is not None:
        cmd += ["--customers", str(customers)]
    if paths_file is not None:
        cmd += ["--paths-file", str(paths_file)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if start_at is not None:
        cmd += ["--start-at", repr(start_at)]
    if warmup_s is not None:
        cmd += ["--warmup", str(warmup_s)]
    if auth is not None:
        cmd += ["--auth", auth]
    if slice_us is not None:
        cmd += ["--slice-us", str(slice_us)]
    if pacer is not None:
        cmd += ["--pacer", pacer]
    if sched is not None:
        cmd += ["--sched", sched]
    return cmd


async def start_lookups(cmd: Sequence[str], cwd: str | None = None) -> asyncio.subprocess.Process:
    """Start :func:`lookups_command`'s command, its stdout and stderr piped (read by :func:`lookups_result`)."""
    return await asyncio.create_subprocess_exec(
        *cmd, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def lookups_result(proc: asyncio.subprocess.Process, timeout: float = 60.0) -> dict[str, Any]:
    """Wait for a started lookups process and parse the JSON object it printed last.

    Raises ``RuntimeError`` with the tail of its stderr when it failed (killed first if it did not end in time).
    """
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise RuntimeError(f"lookups did not finish within {timeout:.0f} s (killed)") from None
    if proc.returncode == 0 and out.strip():
        return dict(orjson.loads(out.decode().strip().splitlines()[-1]))
    raise RuntimeError(f"lookups exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cxstream.bench.lookups", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--auth", choices=AUTH_SCHEMES, default="x-api-key", help="header carrying the key")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of requests, warm-up included")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--customers", type=int, help="look up workload customers 0..N-1 by id")
    what.add_argument("--paths-file", help="look up these URL paths (one per line)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--start-at", type=float, default=None, help="epoch seconds of the first planned request")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--slice-us", type=float, default=float(DEFAULT_LATENCY_SLICE_US),
                   help="CPU time slice (µs) the client asks Linux for, as the API processes do (CX_LATENCY_SLICE_US); "
                        "0: the kernel's default")
    p.add_argument("--pacer", choices=PACERS, default="timerfd",
                   help="what wakes the client at each planned time: a timer file descriptor the event loop watches "
                        "(the thread where there is none) or a thread that wakes the loop")
    p.add_argument("--sched", choices=SCHEDS, default="fair",
                   help="the client's scheduling class: Linux's fair class, on --slice-us's slice, or the real-time "
                        "SCHED_FIFO (priority 1; needs root or CAP_SYS_NICE, else it stays fair: client_sched_error)")
    a = p.parse_args(argv)
    paths = None
    if a.paths_file is not None:
        try:
            paths = read_paths(a.paths_file)
        except (OSError, ValueError) as exc:
            p.error(f"--paths-file {a.paths_file}: {exc}")
    elif a.customers < 1:
        p.error("--customers must be at least 1")
    import uvloop  # the API's own event loop; cheaper per request for the generator too

    got_slice = request_slice(a.slice_us)  # before the pacer thread starts: it inherits the slice
    sched_error = request_fifo() if a.sched == "fifo" else None
    result = uvloop.run(
        run_lookups(a.url, a.key, a.rate, a.duration, a.customers, a.seed, start_at=a.start_at, warmup_s=a.warmup,
                    paths=paths, auth=a.auth, pacer=a.pacer)
    )
    result["client_slice_us"] = got_slice
    result["client_sched"] = "fifo" if a.sched == "fifo" and sched_error is None else "fair"
    if sched_error is not None:
        result["client_sched_error"] = sched_error
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
