"""The stream worker's loopback endpoint: its metrics (the learner process's merged in) and its liveness, served by its event loop.

``cxstream run`` gives its HTTP API processes this endpoint's URL: the API's ``/metrics`` includes
what ``GET /metrics`` answers here, and its ``/livez`` (the liveness probe) asks ``GET /live``.

It was prometheus-client's HTTP server on a thread of its own, which does not keep the work off the
stages' loop: rendering is Python, the thread holds the GIL while it renders, and the loop gets the
GIL back only at the interpreter's switch interval (5 ms).  Rendering the worker's ~1,200 series
and parsing the learner's held the GIL for about 37 ms a scrape (py-spy ``--gil`` at 500 Hz on a loaded
worker, December 7), and every ``/livez`` rendered it all too.  With Prometheus scraping every 5 s
(``deploy/prometheus``) and the probe asking every 10 s, the records in flight stalled each time.

Here the loop itself renders, one metric family at a time, and gives the stages a turn whenever it
has held the loop for :data:`SLICE_S` (a record waits at most about one slice for a scrape).  The
learner's text is fetched without blocking and merged as text (:func:`merge_text`): each of its
series gets ``process="learner"`` and joins the worker's family of the same name, without parsing
the text into objects.  ``GET /live`` answers at once from the loop, so it also proves that the
worker's event loop turns, which the thread's answer did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from prometheus_client import generate_latest

log = logging.getLogger(__name__)

#: The longest the render holds the event loop before the stages get a turn (a family is never split).
SLICE_S = 0.001
#: The label the learner process's series carry in the worker's metrics.
LEARNER_LABEL = ("process", "learner")
_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_MAX_HEAD = 8192


class _One:
    """One metric family as a registry (prometheus-client's ``collect`` protocol)."""

    __slots__ = ("family",)

    def __init__(self, family: Any) -> None:
        self.family = family

    def collect(self) -> tuple[Any]:
        return (self.family,)


async def render(registry: Any, slice_s: float = SLICE_S) -> bytes:
    """*registry*'s text exposition, as ``generate_latest`` writes it, one family at a time with a turn for the loop every *slice_s*.

    >>> from prometheus_client import CollectorRegistry, Counter
    >>> r = CollectorRegistry()
    >>> Counter("cx_things", "Things.", registry=r).inc(2)
    >>> asyncio.run(render(r, slice_s=0.0)) == generate_latest(r)
    True
    """
    parts: list[bytes] = []
    clock = time.perf_counter
    began = clock()
    for family in registry.collect():
        parts.append(generate_latest(_One(family)))  # type: ignore[arg-type]
        if clock() - began >= slice_s:
            await asyncio.sleep(0)
            began = clock()
    return b"".join(parts)


def labelled(line: str, label: str) -> str:
    """A sample line of the text format with one more label (*label*: ``name="value"``).

    >>> labelled('cx_labels_total 7.0', 'process="learner"')
    'cx_labels_total{process="learner"} 7.0'
    >>> labelled('cx_wait_bucket{le="0.1",model="a }b"} 1.0', 'process="learner"')
    'cx_wait_bucket{le="0.1",model="a }b",process="learner"} 1.0'
    """
    end = line.rfind("}")
    if end >= 0:
        return f"{line[:end]},{label}{line[end:]}" if line[end - 1] != "{" else f"{line[:end]}{label}{line[end:]}"
    name, _, rest = line.partition(" ")
    return f"{name}{{{label}}} {rest}"


def _blocks(text: str) -> list[tuple[str, str, list[str]]]:
    """The families of a text exposition as (name, type, lines), in order; a family starts at its ``# HELP`` line."""
    blocks: list[tuple[str, str, list[str]]] = []
    lines: list[str] = []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            lines = [line]
            blocks.append((line[7:].split(" ", 1)[0], "untyped", lines))
        elif line.startswith("# TYPE ") and blocks:
            blocks[-1] = (blocks[-1][0], line.rsplit(" ", 1)[-1], lines)
            lines.append(line)
        elif blocks:
            lines.append(line)
    return blocks


def merge_text(mine: str, theirs: str, label: str, value: str, *, keep: Callable[[str], bool] = lambda name: True) -> str:
    """The exposition *mine* with the families of *theirs* (those *keep* accepts), each of their series labelled *label*=*value*.

    A family both export (``cx_redis_errors_total``, ``process_cpu_seconds_total``...) becomes one,
    with both processes' series, so the text stays valid for Prometheus (which refuses a family
    declared twice); one of another type is left out.  *keep* gets a family's name as
    prometheus-client names it (a counter's without ``_total``; its ``_created`` gauge as
    ``…_created``, a family of its own in the text format).

    >>> from prometheus_client import CollectorRegistry, Counter, Histogram
    >>> a, b = CollectorRegistry(), CollectorRegistry()
    >>> Counter("cx_things", "Things.", registry=a).inc(2)
    >>> Counter("cx_things", "Things.", registry=b).inc(5)
    >>> Counter("cx_other", "Other.", ["model"], registry=b).labels("intent").inc()
    >>> Histogram("cx_api_seconds", "The API's.", registry=b, buckets=(1.0,)).observe(0.5)
    >>> merged = merge_text(generate_latest(a).decode(), generate_latest(b).decode(), "process", "learner",
    ...                     keep=lambda name: name.removesuffix("_created") != "cx_api_seconds")
    >>> [line for line in merged.splitlines() if line.startswith(("cx_things_total", "cx_other_total", "cx_api"))]
    ['cx_things_total 2.0', 'cx_things_total{process="learner"} 5.0', 'cx_other_total{model="intent",process="learner"} 1.0']
    >>> merged.count("# TYPE cx_things_total counter"), merged.count("# TYPE cx_things_created gauge")
    (1, 1)
    """
    blocks = _blocks(mine)
    index = {name: i for i, (name, _, _) in enumerate(blocks)}
    tag = f'{label}="{value}"'
    for name, kind, lines in _blocks(theirs):
        if not keep(name.removesuffix("_total") if kind == "counter" else name):
            continue
        samples = [labelled(line, tag) for line in lines if not line.startswith("#")]
        at = index.get(name)
        if at is None:
            index[name] = len(blocks)
            blocks.append((name, kind, [line for line in lines if line.startswith("#")] + samples))
        elif blocks[at][1] == kind:
            blocks[at][2].extend(samples)
    return "".join(line + "\n" for _, _, lines in blocks for line in lines)


async def fetch_text(url: str, timeout_s: float) -> str:
    """The body of ``GET`` *url* (plain HTTP/1.0, read to the end), or an error if it is not a 200."""
    parts = urlsplit(url)

    async def get() -> bytes:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        try:
            writer.write(f"GET {parts.path or '/'} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())
            return await reader.read()
        finally:
            writer.close()

    answer = await asyncio.wait_for(get(), timeout_s)
    head, sep, body = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if not sep or len(status) < 2 or status[1] != b"200":
        raise OSError(f"{url} answered {head[:80]!r}")
    return body.decode()


def _answer(status: str, body: bytes, content_type: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: ".encode() + content_type
            + f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


class LoopbackEndpoint:
    """The worker's ``GET /metrics`` and ``GET /live`` on 127.0.0.1, answered by the event loop it is started on.

    *registry*: the worker's metrics (a ``collect`` view).  *learner_url*: where the learner
    process's metrics are now (``None`` while it has none), or ``None`` without a learner process;
    with one, ``cx_learner_metrics_up`` says whether they were fetched for the scrape.  *keep*:
    which of the learner's families to include.
    """

    def __init__(
        self, registry: Any, *, learner_url: Callable[[], str | None] | None = None,
        keep: Callable[[str], bool] = lambda name: True, slice_s: float = SLICE_S, learner_timeout_s: float = 1.0,
    ) -> None:
        self.registry, self.learner_url, self.keep = registry, learner_url, keep
        self.slice_s, self.learner_timeout_s = slice_s, learner_timeout_s
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """Its metrics URL (what ``cxstream serve --engine-metrics`` takes)."""
        return f"http://127.0.0.1:{self.port}/metrics"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def metrics(self) -> bytes:
        """The worker's exposition, the learner's merged in."""
        text = await render(self.registry, self.slice_s)
        if self.learner_url is None:
            return text
        url, up = self.learner_url(), 0
        if url is not None:
            try:
                theirs = await fetch_text(url, self.learner_timeout_s)
            except Exception as exc:  # restarting, or stuck: say so with the gauge, export the rest
                log.warning("cannot fetch the learner process's metrics from %s: %r", url, exc)
            else:
                up = 1
                await asyncio.sleep(0)
                text = merge_text(text.decode(), theirs, *LEARNER_LABEL, keep=self.keep).encode()
        return text + (
            "# HELP cx_learner_metrics_up 1 if the learner process's metrics were fetched for this scrape.\n"
            f"# TYPE cx_learner_metrics_up gauge\ncx_learner_metrics_up {float(up)}\n"
        ).encode()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
                try:
                    answer = await self._respond(head[:_MAX_HEAD])
                except Exception:  # a bug: the API's /metrics says the engine's part is missing (cx_engine_metrics_up 0)
                    log.exception("the loopback endpoint failed to answer")
                    answer = _answer("500 Internal Server Error", b"the engine failed to render its metrics; see its log\n", b"text/plain")
                writer.write(answer)
                await writer.drain()
        finally:
            writer.close()
            if task is not None:
                self._connections.discard(task)

    async def _respond(self, head: bytes) -> bytes:
        request = head.split(b"\r\n", 1)[0].split(b" ")
        if len(request) != 3 or request[0] != b"GET":
            return _answer("405 Method Not Allowed", b"GET /metrics or GET /live\n", b"text/plain")
        path = request[1].split(b"?", 1)[0]
        if path == b"/metrics":
            return _answer("200 OK", await self.metrics(), _CONTENT_TYPE)
        if path == b"/live":
            return _answer("200 OK", orjson.dumps({"status": "alive", "pid": os.getpid()}), b"application/json")
        return _answer("404 Not Found", b"GET /metrics or GET /live\n", b"text/plain")


def live_url(metrics_url: str) -> str:
    """The ``/live`` URL of the endpoint whose metrics URL is *metrics_url*.

    >>> live_url("http://127.0.0.1:41234/metrics")
    'http://127.0.0.1:41234/live'
    """
    return urlsplit(metrics_url)._replace(path="/live", query="").geturl()


__all__ = ["LEARNER_LABEL", "SLICE_S", "LoopbackEndpoint", "fetch_text", "labelled", "live_url", "merge_text", "render"]
