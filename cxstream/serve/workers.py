"""The child processes ``cxstream run`` starts, watches and stops: its HTTP API processes, and (with
:class:`cxstream.agents.learnproc.LearnerProcess`, on the same :class:`Children`) its learner's.

``CX_HTTP_WORKERS`` children run ``python -m cxstream.cli serve`` with the engine's
settings (and the broker/Redis URLs and API keys it resolved, embedded ones included);
they share the HTTP port through SO_REUSEPORT.  Each child reports on a pipe when it
listens, with a private loopback *probe* port; the supervisor

* waits until every child has reported (start fails if one does not within the timeout),
* checks every ``probe_every_s`` that each child is alive and answers ``GET /healthz`` on its
  probe port (any HTTP answer counts: a 503 says the engine or Redis is unwell, not the API),
* restarts a child that exited or failed ``probe_failures`` probes in a row (SIGKILL first),
  with a growing delay when children keep dying young,
* stops them with SIGTERM, then SIGKILL after a grace period, and reaps them.

Children live in their own process group (a terminal's Ctrl-C reaches the engine, which
stops them in order) and get SIGKILL if the engine dies without stopping them
(``PR_SET_PDEATHSIG``, set by the child itself through ``--parent-pid``).  PDEATHSIG
follows the *thread* that forked the child, so children are only ever started from the
event loop's thread, never from an executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from cxstream.streams.embedded import free_port
from cxstream.streams.settings import Settings, SettingsError

log = logging.getLogger(__name__)


class ApiStartError(RuntimeError):
    """An HTTP API process did not start listening."""


@dataclasses.dataclass
class _Child:
    slot: int
    proc: subprocess.Popen[bytes]
    started: float
    probe_port: int | None = None
    failures: int = 0


def child_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an API process: *base* (default ``os.environ``) with every setting as ``CX_*``.

    Settings read from ``CX_SETTINGS_FILE`` are passed as variables too, so the file is not read again.

    >>> env = child_environment(Settings(redis_url="redis://r:1/0", http_port=81), base={"PATH": "/bin", "CX_SETTINGS_FILE": "x"})
    >>> env["CX_REDIS_URL"], env["CX_HTTP_PORT"], env["PATH"], "CX_SETTINGS_FILE" in env
    ('redis://r:1/0', '81', '/bin', False)
    """
    env = dict(os.environ if base is None else base)
    env.pop("CX_SETTINGS_FILE", None)
    for f in dataclasses.fields(settings):
        env[f"CX_{f.name.upper()}"] = str(getattr(settings, f.name))
    return env


async def probe(host: str, port: int, timeout: float) -> bool:
    """True if an HTTP server on *host:port* answers ``GET /healthz`` (whatever the status) within *timeout*."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(b"GET /healthz HTTP/1.0\r\nHost: probe\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith(b"HTTP/")
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class Children:
    """*count* child processes of one ``python -m cxstream.cli`` command, started, watched and stopped.

    A subclass says which command (:meth:`command`) and what to call them (``what``).  Each child
    reports on the ``--ready-fd`` pipe with one JSON line holding its ``probe_port`` (a loopback
    HTTP port of its own, probed with ``GET /healthz``: any HTTP answer counts).
    """

    what = "child process"

    def __init__(
        self,
        settings: Settings,
        count: int,
        *,
        say: Callable[[str], None] = print,
        start_timeout_s: float = 120.0,  # a child imports the whole API; on a loaded 2-core machine that took over 30 s
        probe_every_s: float = 2.0,
        probe_timeout_s: float = 3.0,
        probe_failures: int = 3,
    ) -> None:
        self.settings = settings
        self.count = count
        self.say = say
        self.start_timeout_s = start_timeout_s
        self.probe_every_s = probe_every_s
        self.probe_timeout_s = probe_timeout_s
        self.probe_failures = probe_failures
        self.children: list[_Child] = []
        self.restarts = 0
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    def command(self) -> list[str]:
        """The ``cxstream`` subcommand and its options (``--ready-fd`` and ``--parent-pid`` are added)."""
        raise NotImplementedError

    def ready_message(self, child: _Child) -> str:
        return f"{self.what} {child.proc.pid} (slot {child.slot}) is ready, probe port {child.probe_port}"

    @property
    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.children]

    async def start(self) -> None:
        """Start every process and wait until each is ready; then watch them."""
        try:
            for slot in range(self.count):
                self.children.append(await self._spawn(slot))
        except BaseException:
            await self.stop()
            raise
        self._watch = asyncio.ensure_future(self._watch_loop())

    async def _spawn(self, slot: int) -> _Child:
        read_fd, write_fd = os.pipe()
        cmd = [sys.executable, "-m", "cxstream.cli", *self.command(), "--ready-fd", str(write_fd), "--parent-pid", str(os.getpid())]
        try:
            proc = subprocess.Popen(
                cmd, env=child_environment(self.settings), stdin=subprocess.DEVNULL, pass_fds=(write_fd,), process_group=0
            )
        finally:
            os.close(write_fd)
        child = _Child(slot, proc, time.monotonic())
        try:
            child.probe_port = int((await self._ready(read_fd, proc))["probe_port"])
        except BaseException:
            self._kill(child)
            raise
        finally:
            os.close(read_fd)
        log.info("%s", self.ready_message(child))
        return child

    async def _ready(self, fd: int, proc: subprocess.Popen[bytes]) -> dict[str, int]:
        os.set_blocking(fd, False)
        deadline = time.monotonic() + self.start_timeout_s
        data = b""
        while True:
            with contextlib.suppress(BlockingIOError):
                chunk = os.read(fd, 4096)
                if not chunk:
                    break  # closed: it wrote its line, or it died
                data += chunk
                if data.endswith(b"\n"):
                    break
            if proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                raise ApiStartError(f"{self.what} {proc.pid} was not ready within {self.start_timeout_s:.0f} s")
            await asyncio.sleep(0.02)
        if not data.endswith(b"\n"):
            code = proc.wait(5) if proc.poll() is None else proc.returncode
            raise ApiStartError(f"{self.what} {proc.pid} exited with code {code} before it was ready")
        found: dict[str, int] = orjson.loads(data)
        return found

    async def _check(self, child: _Child) -> str | None:
        """Why *child* must be restarted, or None."""
        code = child.proc.poll()
        if code is not None:
            return f"exited with code {code}"
        if child.probe_port is None or await probe("127.0.0.1", child.probe_port, self.probe_timeout_s):
            child.failures = 0
            return None
        child.failures += 1
        return f"did not answer {child.failures} health checks in a row" if child.failures >= self.probe_failures else None

    async def _watch_loop(self) -> None:
        delay = 1.0
        while not self._stopping:
            await asyncio.sleep(self.probe_every_s)
            children = list(self.children)
            verdicts = await asyncio.gather(*(self._check(c) for c in children))  # probed concurrently
            for i, (child, why) in enumerate(zip(children, verdicts, strict=True)):
                if why is None or self._stopping:
                    continue
                self.say(f"{self.what} {child.proc.pid} {why}; restarting it")
                self._kill(child)
                if time.monotonic() - child.started < 10:  # dying young: do not spin
                    await asyncio.sleep(delay)
                    delay = min(30.0, delay * 2)
                else:
                    delay = 1.0
                if self._stopping:
                    return
                try:
                    self.children[i] = await self._spawn(child.slot)
                    self.restarts += 1
                except ApiStartError as exc:
                    self.say(f"could not restart the {self.what}: {exc}; retrying")
                    self.children[i] = _Child(child.slot, child.proc, time.monotonic())  # dead: retried next round

    def _kill(self, child: _Child) -> None:
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(5)

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM every process, SIGKILL what is left after *grace_s*, reap them all."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(BaseException):
                await self._watch
            self._watch = None
        children, self.children = self.children, []
        for child in children:
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(c.proc.poll() is None for c in children) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for child in children:
            self._kill(child)


class ApiWorkers(Children):
    """``settings.http_workers`` processes of ``cxstream serve`` on one port."""

    what = "HTTP API process"

    def __init__(self, settings: Settings, *, engine_metrics_url: str | None = None, **kwargs: Any) -> None:
        """*settings* must carry the resolved broker and Redis URLs and API keys; *kwargs*: :class:`Children`'s."""
        if settings.http_workers < 1:
            raise SettingsError(f"CX_HTTP_WORKERS={settings.http_workers}: at least one HTTP API process is needed")
        port = settings.http_port or free_port(settings.http_host)
        super().__init__(settings.replace(http_port=port), settings.http_workers, **kwargs)
        self.engine_metrics_url = engine_metrics_url

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def command(self) -> list[str]:
        return ["serve", *(["--engine-metrics", self.engine_metrics_url] if self.engine_metrics_url else [])]

    def ready_message(self, child: _Child) -> str:
        return f"HTTP API process {child.proc.pid} (slot {child.slot}) listens on {self.url}, probe port {child.probe_port}"
