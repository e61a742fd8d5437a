"""The engine's logging: one format, and no record payload in any log line, at any level.

Personal data lives in record values (identifiers, message text before redaction, outcome
attributes); the engine's own log lines never quote them.  Some libraries print whole records at
DEBUG (aiokafka's producer: ``Sending (key=... value=...)``); those loggers are held at INFO
whatever ``CX_LOG_LEVEL`` says.  ``tests/integration/test_no_pii.py`` runs an engine at DEBUG and
searches its whole output for the personal data it was sent.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from typing import Any

#: Loggers that print record keys or values at DEBUG.
PAYLOAD_LOGGERS: tuple[str, ...] = ("aiokafka.producer.producer",)


def configure_logging(level: str) -> None:
    """The root logger at *level* (``debug``, ``info``...), the payload loggers at INFO at the most verbose,
    and the Kafka client's repeated lines thinned (:class:`RepeatFilter`)."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.INFO, logging.getLogger().level))
    thin_client_logs()


#: The Kafka client's loggers: while a broker is away they log every reconnect attempt (tens a second).
CLIENT_LOGGERS = ("aiokafka",)


def thin_client_logs(every_s: float = 30.0) -> RepeatFilter:
    """Install one :class:`RepeatFilter` on every logger of :data:`CLIENT_LOGGERS` and their children.

    A logger's filters do not apply to its children's records, so each module's logger gets it
    (the modules are imported first, so that their loggers exist)."""
    # imports the client, fetcher, coordinator, conn and sender modules
    import aiokafka.consumer.consumer
    import aiokafka.producer.producer  # noqa: F401

    repeat = RepeatFilter(every_s)
    names = [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] in CLIENT_LOGGERS]
    for name in {*CLIENT_LOGGERS, *names}:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RepeatFilter)]:
            logger.removeFilter(old)
        logger.addFilter(repeat)
    return repeat


class RepeatFilter(logging.Filter):
    """Lets a warning or error through once per *every_s* seconds per (logger, message template).

    The first of a kind passes at once; its repeats within the window are counted, and the next
    one after the window passes with ``(N more like it in the last S s)`` appended.  Lines below
    WARNING pass untouched.  So a client retrying a dead broker every 50 ms logs a few lines a
    minute, not thousands, and what it says is still there.

    >>> f = RepeatFilter(every_s=3600)
    >>> rec = lambda: logging.LogRecord("aiokafka", logging.ERROR, "", 0, "Unable connect to node %s", (0,), None)
    >>> [f.filter(rec()) for _ in range(4)]
    [True, False, False, False]
    >>> f.suppressed
    3
    """

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # (logger, template) -> (last passed at, held back since)
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or now - seen[0] >= self.every_s:
            if seen is not None and seen[1]:
                record.msg = f"{record.msg} ({seen[1]} more like it in the last {now - seen[0]:.0f} s)"
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # templates are few; messages with their values baked in are not
                self._seen.clear()
            return True
        self._seen[key] = (seen[0], seen[1] + 1)
        self.suppressed += 1
        return False


class OutageLog:
    """Says a dependency is unreachable once when it starts failing, every *every_s* while it fails, and once when it is back.

    A loop that retries every second (a timer writing to Redis, a heartbeat) would otherwise
    print a line per attempt for as long as the outage lasts.

    >>> import io
    >>> stream = io.StringIO()
    >>> logger = logging.getLogger("doctest.outage")
    >>> logger.addHandler(logging.StreamHandler(stream))
    >>> logger.propagate = False
    >>> outage = OutageLog(logger, "queue statistics", every_s=3600)
    >>> for _ in range(5):
    ...     outage.failed(ConnectionError("refused"))
    >>> outage.ok()
    >>> outage.ok()
    >>> print(stream.getvalue().strip())
    queue statistics: cannot reach Redis (ConnectionError('refused')); retrying
    queue statistics: Redis answers again after 0 s (5 attempts failed)
    """

    def __init__(self, logger: logging.Logger, what: str, *, dependency: str = "Redis", every_s: float = 30.0) -> None:
        self.logger = logger
        self.what = what
        self.dependency = dependency
        self.every_s = every_s
        self.since: float | None = None
        self.failures = 0
        self._said = 0.0

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self.failures += 1
        if self.since is None:
            self.since = self._said = now
            self.logger.warning("%s: cannot reach %s (%r); retrying", self.what, self.dependency, exc)
        elif now - self._said >= self.every_s:
            self._said = now
            self.logger.warning(
                "%s: %s still unreachable after %.0f s (%r)", self.what, self.dependency, now - self.since, exc
            )

    def ok(self) -> None:
        if self.since is not None:
            self.logger.warning(
                "%s: %s answers again after %.0f s (%d attempts failed)",
                self.what, self.dependency, time.monotonic() - self.since, self.failures,
            )
            self.since = None
            self.failures = 0


def worker_ready(output: str, pid: int) -> bool:
    """Whether an engine's output says that the engine process *pid* itself is ready.

    The engine's learner runs in a process of its own that writes to the same output and logs
    its own ``[^Worker]: Ready``, often first.  A caller waiting for the engine must not take the
    learner's line for it: if the engine then failed (say its HTTP port was taken), the caller
    would go on against an engine that is not there.

    >>> out = "[2026-12-06 10:17:20,845] [15382] [INFO] [^Worker]: Ready \\n"
    >>> worker_ready(out, 15382), worker_ready(out, 15289)
    (True, False)
    """
    return f"] [{pid}] [INFO] [^Worker]: Ready" in output


class EngineNotReady(RuntimeError):
    """An engine process exited, or did not say it was ready in time; the message ends with its output's tail."""


def wait_worker_ready(output: Callable[[], str], proc: subprocess.Popen[Any], timeout_s: float, poll_s: float = 0.1) -> None:
    """Wait until the engine process *proc* says it is ready (:func:`worker_ready`) in its output, read with *output*.

    Raises :class:`EngineNotReady` as soon as the process exits, or after *timeout_s*, with the
    last 3,000 characters of the output.  The caller stops the process if it wants it stopped.

    >>> import sys
    >>> proc = subprocess.Popen([sys.executable, "-c", "print('no')"], stdout=subprocess.PIPE, text=True)
    >>> try:
    ...     wait_worker_ready(lambda: "no", proc, 30)
    ... except EngineNotReady as exc:
    ...     print(str(exc).splitlines()[0])
    the engine exited with 0 before it was ready:
    >>> proc.stdout.close()
    """
    deadline = time.monotonic() + timeout_s
    while True:
        text = output()
        if worker_ready(text, proc.pid):
            return
        if proc.poll() is not None:
            raise EngineNotReady(f"the engine exited with {proc.returncode} before it was ready:\n{text[-3000:]}")
        if time.monotonic() > deadline:
            raise EngineNotReady(f"the engine was not ready in {timeout_s:.0f} s:\n{text[-3000:]}")
        time.sleep(poll_s)
