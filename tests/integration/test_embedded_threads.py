"""An embedded server started from a worker thread outlives that thread (real Redis).

Linux sends ``PR_SET_PDEATHSIG`` when the *thread* that forked the child ends, so a server started
from ``asyncio.to_thread`` or an executor used to die with that thread; the servers of other
threads are spawned by a daemon thread that lives as long as the process.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from cxstream.streams import embedded
from cxstream.streams.embedded import EmbeddedRedis

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _start_in_a_thread_that_ends(server: EmbeddedRedis) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            server.start()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=start, name="short-lived")
    t.start()
    t.join(30)
    assert not t.is_alive() and not errors, errors


def _alive_after_the_thread(server: EmbeddedRedis) -> bool:
    assert server.proc is not None
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # the signal, if it comes, comes within milliseconds of the thread's end
        if server.proc.poll() is not None:
            return False
        time.sleep(0.05)
    return redis.Redis.from_url(server.url).ping() is True


def test_a_server_started_from_a_thread_that_ends_keeps_running(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    _start_in_a_thread_that_ends(server)
    try:
        assert _alive_after_the_thread(server)
        assert any(t.name == "cx-embedded-spawner" and t.daemon for t in threading.enumerate())
    finally:
        server.stop()


def test_without_the_spawner_the_thread_took_its_server_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the spawner is for: forked from the short-lived thread itself, the server is killed when it ends."""
    monkeypatch.setattr(embedded._Spawner, "popen", classmethod(lambda cls, start: start()))
    server = EmbeddedRedis(tmp_path / "redis")
    _start_in_a_thread_that_ends(server)
    try:
        assert not _alive_after_the_thread(server)
    finally:
        server.stop()
