"""The lookup front: context lookups answered without aiohttp, every other request handed to it.

A context lookup (``GET /customers/{id}/context``, ``GET /customers/context?email=…``) is what
a CRM screen-pop or an IVR asks on every call, at rates a hundred times those of the other
routes; in aiohttp a lookup cost ~320-470 µs of CPU, most of it aiohttp's request and response
objects, its router and middleware, not the Redis call (~50 µs) or the decompression
(docs/PERFORMANCE.md, "What limits them"; through the front ~270-350 µs).  The front is the protocol on the API's listening socket:

* It reads each request head itself.  A ``GET`` of one of the two lookup routes, over
  HTTP/1.1, without a body or an upgrade, with a key that has the route's scope (``read``: :data:`cxstream.serve.keys.ROUTE_SCOPES`), it answers
  itself: :func:`cxstream.serve.http.context_answer`, the function the aiohttp route calls,
  written with the headers aiohttp writes, and counted in the same Prometheus histogram
  (``cx_http_request_seconds`` by route and status).
* At the first request that is anything else (another route or method, no key or a key
  without ``read``, a head it cannot read, HTTP/1.0), once the answers before it are written,
  it hands the connection to aiohttp (``transport.set_protocol``) with the bytes not yet read:
  aiohttp answers that request and every later one on the connection, exactly as without the
  front (its 400s, 401s and 403s included).

Requests on one connection are answered in order (HTTP/1.1 pipelining), one at a time.  An
idle connection is closed after :data:`KEEPALIVE_S`, as aiohttp closes its own (an hour); a head larger
than :data:`MAX_HEAD` goes to aiohttp, which refuses it.  ``CX_HTTP_LOOKUP_FRONT=0`` serves
everything with aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from redis.exceptions import RedisError

from cxstream.serve import keys
from cxstream.serve.http import API_KEY_SCOPES, LOOKUP, Answer, context_answer, presented_key, redis_unavailable
from cxstream.streams import metrics

log = logging.getLogger(__name__)

#: Idle connections are closed after this long: aiohttp's own keep-alive timeout (its ``RequestHandler``'s
#: default since 3.11, longer than proxies and clients keep an idle connection).
KEEPALIVE_S = 3630.0
#: A request head larger than this goes to aiohttp, which refuses a line longer than it (a lookup's head is ~100 bytes).
MAX_HEAD = 8190
#: Reading stops while this much is buffered unanswered (a client pipelining faster than answers go).
MAX_BUFFERED = 1 << 20

_PREFIX = "/customers/"
_SUFFIX = "/context"
_BY_QUERY = "/customers/context"
_ROUTE_BY_ID = "/customers/{customer_id}/context"
_HANDED = frozenset({"content-length", "transfer-encoding", "upgrade", "expect"})
#: A header name is an RFC 9110 token; a head with a control character but CR LF and tab is aiohttp's to refuse.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")


class Lookup:
    """A lookup request the front answers: its route, the customer id in the path, the query's pairs."""

    __slots__ = ("close", "customer_id", "query", "route")

    def __init__(self, route: str, customer_id: str, query: list[tuple[str, str]], close: bool) -> None:
        self.route = route
        self.customer_id = customer_id
        self.query = query
        self.close = close


def _unquoted(text: str) -> str | None:
    """*text* percent-decoded, None when that is not plain UTF-8 or would give a slash (aiohttp's reading then decides)."""
    if "%" not in text:
        return text
    try:
        out = unquote(text, errors="strict")
    except UnicodeDecodeError:
        return None
    return None if "/" in out else out


def read_lookup(head: bytes, scopes: dict[str, frozenset[str]]) -> Lookup | None:
    """The lookup a request *head* (up to its blank line) asks for, or None if aiohttp is to answer it.

    >>> ks = {"k": keys.ALL, "q": frozenset({"admin"})}
    >>> r = read_lookup(b"GET /customers/c%401/context HTTP/1.1\\r\\nX-API-Key: k", ks)
    >>> r.route, r.customer_id, r.query, r.close
    ('/customers/{customer_id}/context', 'c@1', [], False)
    >>> read_lookup(b"GET /customers/context?email=a%2Bb%40x.org HTTP/1.1\\r\\nAuthorization: Bearer k\\r\\nConnection: close", ks).query
    [('email', 'a+b@x.org')]
    >>> [read_lookup(h, ks) for h in (b"GET /customers/c1/context HTTP/1.1\\r\\nX-API-Key: q",  # no 'read' scope
    ...                                b"GET /customers/c1/context HTTP/1.1",  # no key
    ...                                b"POST /customers/c1/context HTTP/1.1\\r\\nX-API-Key: k",
    ...                                b"GET /queues HTTP/1.1\\r\\nX-API-Key: k",
    ...                                b"GET /customers/a/b/context HTTP/1.1\\r\\nX-API-Key: k",
    ...                                b"GET /customers/c1/context HTTP/1.0\\r\\nX-API-Key: k")]
    [None, None, None, None, None, None]
    """
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    if _CONTROL.search(text):
        return None
    lines = text.split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or request_line[0] != "GET" or request_line[2] != "HTTP/1.1":
        return None
    target = request_line[1]
    path, _, raw_query = target.partition("?")
    if "#" in target:
        return None
    if path == _BY_QUERY:
        route, customer_id = _BY_QUERY, ""
    elif path.startswith(_PREFIX) and path.endswith(_SUFFIX) and len(path) > len(_PREFIX) + len(_SUFFIX):
        segment = path[len(_PREFIX) : -len(_SUFFIX)]
        found = _unquoted(segment) if "/" not in segment else None
        if found is None:
            return None
        route, customer_id = _ROUTE_BY_ID, found
    else:
        return None
    auth = api_key = None
    close = False
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            return None
        name = name.lower()
        if name in _HANDED:
            return None
        value = value.strip()
        if name == "authorization":
            auth = value if auth is None else auth
        elif name == "x-api-key":
            api_key = value if api_key is None else api_key
        elif name == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            if "upgrade" in tokens:
                return None
            close = close or "close" in tokens
    presented = presented_key(auth, api_key)
    if not presented:
        return None
    granted = keys.scopes_of(presented, scopes)
    if granted is None or keys.ROUTE_SCOPES[route] not in granted:
        return None
    try:
        query = parse_qsl(raw_query, keep_blank_values=True, errors="strict") if raw_query else []
    except (UnicodeDecodeError, ValueError):
        return None
    return Lookup(route, customer_id, query, close)


class _Date:
    """The ``Date`` header's value, made once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second, self.text = second, formatdate(second, usegmt=True)
        return self.text


def response_bytes(status: int, body: bytes, date: str, close: bool) -> bytes:
    """The response aiohttp writes for a JSON body, byte for byte.

    >>> response_bytes(404, b"{}", "Sat, 05 Dec 2026 08:30:46 GMT", False).split(b"\\r\\n")[:3]
    [b'HTTP/1.1 404 Not Found', b'Content-Type: application/json', b'Content-Length: 2']
    """
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nDate: {date}\r\nServer: {SERVER_SOFTWARE}\r\n"
    )
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode("latin-1") + body


class LookupFront:
    """What the connections of one listening socket share: the app, aiohttp's protocol factory, the open connections."""

    def __init__(self, app: web.Application, aiohttp_server: Callable[[], asyncio.Protocol]) -> None:
        self.app = app
        self.aiohttp_server = aiohttp_server
        self.connections: set[FrontConnection] = set()
        self.date = _Date()
        self.closing = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._observers: dict[tuple[str, int], Any] = {}

    def __call__(self) -> FrontConnection:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(KEEPALIVE_S / 5, self._sweep)
        return FrontConnection(self)

    def observe(self, route: str, status: int, seconds: float) -> None:
        child = self._observers.get((route, status))
        if child is None:
            child = self._observers[route, status] = metrics.HTTP_REQUESTS.labels(route, str(status))
        child.observe(seconds)

    def _sweep(self) -> None:
        """Close the connections idle for :data:`KEEPALIVE_S`."""
        now = asyncio.get_running_loop().time()
        for conn in list(self.connections):
            if not conn.busy and now - conn.last_active > KEEPALIVE_S:
                conn.shut()
        self._sweeper = None if self.closing else asyncio.get_running_loop().call_later(KEEPALIVE_S / 5, self._sweep)

    def close(self) -> None:
        """Stop: idle connections close now, a busy one after its answer."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.connections):
            if conn.busy:
                conn.close_after = True
            else:
                conn.shut()

    async def wait_answered(self, timeout_s: float) -> None:
        """Until the lookups in flight are answered (after :meth:`close`), at most *timeout_s*."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(c.busy for c in self.connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)


class FrontConnection(asyncio.Protocol):
    """One client connection while the front serves it (:mod:`cxstream.serve.front`)."""

    def __init__(self, front: LookupFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False
        self.close_after = False
        self.reading_paused = False
        self.writing_paused = False
        self.last_active = 0.0
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:  # TCP keep-alive probes, as aiohttp sets them: a vanished client's connection ends
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.last_active = asyncio.get_running_loop().time()
        self.front.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        self.last_active = asyncio.get_running_loop().time()
        if len(self.buffer) > MAX_BUFFERED and self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        if not self.busy:
            self._next()

    def eof_received(self) -> bool:
        if self.busy:
            self.close_after = True
        else:
            self.shut()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.transport = None

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if not self.busy:
            self._next()

    def shut(self) -> None:
        self.front.connections.discard(self)
        if self.transport is not None:
            self.transport.close()

    def _next(self) -> None:
        """Answer the next whole request in the buffer, or hand the connection over, or wait for more bytes."""
        if self.transport is None or self.writing_paused:
            return
        if self.close_after or (self.front.closing and not self.buffer):
            self.shut()
            return
        end = self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._hand_over()
            return
        lookup = read_lookup(self.buffer[:end], self.front.app[API_KEY_SCOPES])
        if lookup is None:
            self._hand_over()
            return
        self.buffer = self.buffer[end + 4 :]
        if self.reading_paused and len(self.buffer) <= MAX_BUFFERED:
            self.reading_paused = False
            self.transport.resume_reading()
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self._answer(lookup))

    async def _answer(self, lookup: Lookup) -> None:
        started = time.perf_counter()
        answer: Answer
        try:
            answer = await context_answer(self.front.app[LOOKUP], lookup.customer_id, lookup.query)
        except RedisError as exc:
            answer = redis_unavailable(lookup.route, exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: a 500 that says so (aiohttp's says it in plain text), and the traceback logged
            log.exception("context lookup failed on %s", lookup.route)
            answer = 500, b'{"error":"internal_error","detail":"the server failed; see its log"}'
        self.front.observe(lookup.route, answer[0], time.perf_counter() - started)
        self.busy = False
        self.task = None
        if self.transport is None:
            return
        close = lookup.close or self.front.closing
        self.transport.write(response_bytes(answer[0], answer[1], self.front.date.now(), close))
        self.last_active = asyncio.get_running_loop().time()
        if close:
            self.close_after = True
        self._next()

    def _hand_over(self) -> None:
        """aiohttp serves this connection from the request at the head of the buffer on."""
        transport = self.transport
        assert transport is not None and not self.busy
        self.front.connections.discard(self)
        self.transport = None
        handler = self.front.aiohttp_server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.writing_paused:
            handler.pause_writing()
        if self.reading_paused:
            transport.resume_reading()
        buffered, self.buffer = self.buffer, b""
        if buffered:
            with contextlib.suppress(Exception):  # aiohttp answers what it cannot read with a 400 itself
                handler.data_received(buffered)


__all__ = ["KEEPALIVE_S", "LookupFront", "read_lookup", "response_bytes"]
