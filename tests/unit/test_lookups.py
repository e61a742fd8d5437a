"""The open-loop lookup client (cxstream.bench.lookups): its request selection, and a run against a loopback server."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from cxstream.bench import lookups
from cxstream.bench.context_bench import target_path
from cxstream.bench.lookups import auth_headers, lookups_command, parse_paths, path_picker, read_paths, run_lookups
from cxstream.bench.workload import customer_ref


def test_paths_file_lines_are_stripped_and_blank_and_comment_lines_skipped(tmp_path: Path) -> None:
    f = tmp_path / "paths.txt"
    f.write_text("# targets\n/customers/C00042/context\n\n  /customers/context?email=a%40b.org \r\n/customers/C00042/context\n")
    # duplicates are kept: a path listed twice is drawn twice as often
    assert read_paths(f) == ["/customers/C00042/context", "/customers/context?email=a%40b.org", "/customers/C00042/context"]


@pytest.mark.parametrize("text", ["", "\n# only a comment\n", "customers/C1/context\n", "/customers/context?email=a b\n",
                                  "http://127.0.0.1:8080/customers/C1/context\n"])
def test_an_empty_paths_file_or_a_line_that_is_not_a_path_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_paths(text.splitlines())


def test_paths_are_drawn_uniformly_and_reproducibly_with_the_seed() -> None:
    paths = [f"/customers/C{i:05d}/context" for i in range(10)]
    draw = lambda seed: [p() for p in [path_picker(random.Random(seed), paths=paths)] for _ in range(20_000)]  # noqa: E731
    a, b, c = draw(11), draw(11), draw(12)
    assert a == b
    assert a != c
    counts = Counter(a)
    assert set(counts) == set(paths)
    assert all(abs(n - 2000) < 250 for n in counts.values())  # ~uniform (binomial sd ~42)


def test_customers_mode_draws_the_same_customers_as_before() -> None:
    rng = random.Random(11)
    pick = path_picker(random.Random(11), customers=500)
    assert [pick() for _ in range(100)] == [f"/customers/{customer_ref(rng.randrange(500))}/context" for _ in range(100)]


def test_exactly_one_source_of_paths() -> None:
    with pytest.raises(ValueError):
        path_picker(random.Random(1))
    with pytest.raises(ValueError):
        path_picker(random.Random(1), customers=10, paths=["/a"])
    with pytest.raises(ValueError):
        path_picker(random.Random(1), paths=[])


def test_the_command_line_wants_exactly_one_of_customers_and_paths_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.txt"
    f.write_text("/customers/C1/context\n")
    base = ["--url", "http://127.0.0.1:1", "--key", "k"]
    for extra in ([], ["--customers", "10", "--paths-file", str(f)]):
        with pytest.raises(SystemExit) as exc:
            lookups.main(base + extra)
        assert exc.value.code == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(SystemExit) as exc:
        lookups.main([*base, "--paths-file", str(empty)])
    assert exc.value.code == 2
    assert "no request paths" in capsys.readouterr().err


def test_the_subprocess_command_carries_the_paths_file_and_the_auth_scheme() -> None:
    cmd = lookups_command("http://h:1", "k", 1000.0, 12.0, paths_file="/tmp/p.txt", seed=1, start_at=5.5, warmup_s=2.0,
                          auth="bearer")
    assert cmd[1:3] == ["-m", "cxstream.bench.lookups"]
    args = cmd[3:]
    assert args[args.index("--paths-file") + 1] == "/tmp/p.txt"
    assert args[args.index("--auth") + 1] == "bearer"
    assert "--customers" not in args
    old = lookups_command("http://h:1", "k", 1000.0, 20.0, customers=10_000, start_at=5.5, warmup_s=3.0)
    assert "--customers" in old and "--paths-file" not in old and "--auth" not in old


def test_auth_headers() -> None:
    assert auth_headers("k") == {"X-API-Key": "k"}
    assert auth_headers("k", "bearer") == {"Authorization": "Bearer k"}
    with pytest.raises(ValueError):
        auth_headers("k", "basic")


def test_context_bench_targets_become_paths_the_paths_file_accepts() -> None:
    targets = [("id", "C00042"), ("kv", "email:jane doe@x.org"), ("email", "a+b@x.org"), ("phone", "+44 20 7946 0000"),
               ("social_handle", "@jane")]
    paths = [target_path(k, v) for k, v in targets]
    assert parse_paths(p + "\n" for p in paths) == paths
    assert paths[0] == "/customers/C00042/context"
    assert paths[2] == "/customers/context?email=a%2Bb%40x.org"


class _Answer(asyncio.Protocol):
    """A server answering each request head with ``{}``, recording when each arrived."""

    arrivals: list[float]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.arrivals.append(time.time())
            assert isinstance(self.transport, asyncio.Transport)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")


@pytest.mark.parametrize("pacer", lookups.PACERS)
async def test_requests_leave_at_their_planned_times_and_are_measured_from_them_and_from_their_send(pacer: str) -> None:
    arrivals: list[float] = []
    server = await asyncio.get_running_loop().create_server(lambda: type("A", (_Answer,), {"arrivals": arrivals})(),
                                                            "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    start = time.time() + 0.2
    try:
        out = await run_lookups(f"http://127.0.0.1:{port}", "k", 400.0, 1.5, customers=50, start_at=start, warmup_s=0.5,
                                pacer=pacer)
    finally:
        server.close()
    assert out["planned"] == len(arrivals) == 600 and out["status"] == {"200": 400} and out["skipped_overload"] == 0
    assert out["client_pacer"] == pacer  # Linux: the timer file descriptor is there
    # the pacer sends each request at its planned time, not up to a timer tick (1 ms) late, and never early
    assert min(a - (start + i / 400.0) for i, a in enumerate(sorted(arrivals))) >= 0
    assert out["client_send_lag_p99_ms"] < 50
    sent = out["from_send"]
    assert 0 < sent["p50_ms"] <= out["p50_ms"] and sent["p99_ms"] <= out["p99_ms"]


def test_the_wall_timer_fires_at_the_time_it_was_armed_for_and_not_before() -> None:
    timer = lookups.WallTimer.create()
    assert timer is not None
    try:
        assert not timer.fired()  # never armed
        timer.arm(time.time() + 0.05)
        assert not timer.fired()
        time.sleep(0.06)
        assert timer.fired() and not timer.fired()  # reading it clears it
        timer.arm(time.time() - 10)  # a time passed: at once
        assert timer.fired()
    finally:
        timer.close()


async def test_an_unknown_pacer_is_refused_and_the_command_carries_the_pacer() -> None:
    with pytest.raises(ValueError, match="pacer 'sleep'"):
        await run_lookups("http://127.0.0.1:1", "k", 10.0, 0.1, customers=5, pacer="sleep")
    cmd = lookups_command("http://h:1", "k", 1000.0, 12.0, customers=10, pacer="thread")
    assert cmd[cmd.index("--pacer") + 1] == "thread"


def _class_in_a_thread(reset_on_fork: bool) -> tuple[str | None, int, int, int]:
    """request_fifo in a thread of its own: (why refused, its class then, a child's class, its class after leave_fifo)."""
    out: list[tuple[str | None, int, int, int]] = []

    def run() -> None:
        refused = lookups.request_fifo(reset_on_fork=reset_on_fork)
        now = os.sched_getscheduler(0)
        child = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                               capture_output=True, text=True, check=True)
        lookups.leave_fifo()
        out.append((refused, now, int(child.stdout), os.sched_getscheduler(0)))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out[0]


@pytest.mark.parametrize("reset_on_fork", [False, True])
def test_the_client_enters_the_real_time_class_or_says_why_not_and_leaves_it(reset_on_fork: bool) -> None:
    refused, now, child, after = _class_in_a_thread(reset_on_fork)
    assert after == os.SCHED_OTHER and os.sched_getscheduler(0) == os.SCHED_OTHER  # only that thread, and only until left
    if refused is None:  # root or CAP_SYS_NICE
        assert now & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO and bool(now & os.SCHED_RESET_ON_FORK) == reset_on_fork
        assert child == (os.SCHED_OTHER if reset_on_fork else os.SCHED_FIFO)  # a child keeps it unless reset on fork
    else:
        assert refused.startswith("SCHED_FIFO refused") and now == os.SCHED_OTHER == child
    cmd = lookups_command("http://h:1", "k", 1000.0, 12.0, customers=10, sched="fifo")
    assert cmd[cmd.index("--sched") + 1] == "fifo"
    assert "--sched" not in lookups_command("http://h:1", "k", 1000.0, 12.0, customers=10)
