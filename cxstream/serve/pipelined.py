"""One pipelined Redis connection for the hot paths: the API's context lookup, the engine's write-behind.

redis-py's asyncio client costs ~200 µs of CPU per command on the 2-core bench machine
(connection pool, retry wrapper, stream reader, timeouts per call), which made it the
largest single cost of a context lookup.  This client keeps one connection per API process
and writes every command as soon as it is issued (commands in flight are answered in order,
so a FIFO of futures matches replies to callers); encoding and parsing are hiredis', Redis'
own C protocol library.  It speaks TLS (``rediss://``, with the settings' CA and client
certificate) and authenticates as the settings' ACL user, exactly as the redis-py clients do.  A lookup call costs ~47 µs of CPU here (``bench/api/run.sh --compare pipelined``,
docs/PERFORMANCE.md).  Everything else in the API (health, erasure, queues) keeps redis-py.
The engine's write-behind of context copies sends each flush's commands in one write
(:meth:`PipelinedRedis.execute_many`).

Failures raise redis-py's exceptions (:class:`redis.exceptions.RedisError` subclasses), so
the API answers 503 exactly as it does for redis-py's: a lost connection fails the
commands in flight with ``ConnectionError`` and the next command reconnects; a command
that gets no reply within ``timeout_s`` raises ``TimeoutError`` (its late reply, if any, is
read and dropped, so later replies stay matched to their commands).  One watchdog timer per
connection checks the deadlines, rather than a timer per command.
"""

from __future__ import annotations

import asyncio
import collections
import ssl as ssl_module
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class _Protocol(asyncio.Protocol):
    """Commands in flight as a FIFO of (future, deadline); one watchdog timer, not one per command."""

    def __init__(self, timeout_s: float, on_message: Callable[[list[Any]], None] | None = None) -> None:
        self.reader = hiredis.Reader()
        self.on_message = on_message
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.timeout_s = timeout_s
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:  # the stream is unreadable: nothing after it can be trusted
                self._fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                if self.transport is not None:
                    self.transport.close()
                return
            if reply is False:
                return
            if self.on_message is not None and type(reply) is list and reply and reply[0] == b"message":
                self.on_message(reply)  # a subscribed connection's message: no command asked for it
                continue
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self._fail(RedisConnectionError("Redis sent a reply to no command"))
                if self.transport is not None:
                    self.transport.close()
                return
            waiter, _ = self.waiting.popleft()
            if waiter.done():  # its caller gave up (timeout or cancellation)
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                waiter.set_exception(NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc!r}" if exc else "connection to Redis closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    async def close(self, timeout_s: float = 2.0) -> None:
        """Close the connection and wait until it is (a TLS connection first exchanges close_notify with Redis)."""
        if self.transport is None:
            return
        self.transport.close()  # connection_lost fails what is in flight and stops the watchdog
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout_s)
        except TimeoutError:
            self.transport.abort()

    def _fail(self, exc: Exception) -> None:
        self.lost = exc
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiting:
            waiter, _ = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(exc)

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self.waiting.append((waiter, loop.time() + self.timeout_s))
        self.transport.write(hiredis.pack_command(args))
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout_s / 4, self._expire)
        return waiter

    def send_many(self, commands: Sequence[tuple[Any, ...]]) -> list[asyncio.Future[Any]]:
        """:meth:`send` of each command, written to the socket at once."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        waiters: list[asyncio.Future[Any]] = []
        for _ in commands:
            waiter: asyncio.Future[Any] = loop.create_future()
            self.waiting.append((waiter, deadline))
            waiters.append(waiter)
        self.transport.write(b"".join([hiredis.pack_command(args) for args in commands]))
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout_s / 4, self._expire)
        return waiters

    def _expire(self) -> None:
        """Fail the commands whose deadline passed (the oldest first: deadlines grow along the FIFO)."""
        self._watchdog = None
        now = asyncio.get_running_loop().time()
        for waiter, deadline in self.waiting:
            if deadline > now:
                break
            if not waiter.done():
                waiter.set_exception(RedisTimeoutError(f"Redis did not answer within {self.timeout_s} s"))
        if self.waiting and self.lost is None:
            self._watchdog = asyncio.get_running_loop().call_later(self.timeout_s / 4, self._expire)


class PipelinedRedis:
    """``await call("GET", key)``: one connection, commands pipelined; ``evalsha`` loads a script Redis lost.

    *url* is ``redis[s]://[[user]:password@]host[:port][/db]`` or ``unix:///path[?db=N]``
    (``supports(url)`` tells).  *username* and *password* (the settings', when not in the URL)
    are sent with ``AUTH`` on each new connection; a ``rediss://`` URL needs the TLS context
    *ssl* (:func:`cxstream.streams.security.pipelined_redis` builds both from the settings).
    With *on_message*, the connection may subscribe (``SUBSCRIBE``): each Pub/Sub message (a
    ``[b"message", channel, data]`` reply no command asked for) is handed to it.  With
    ``reconnect=False`` a command after the connection was lost raises instead of opening a new
    one (a new connection would not be subscribed).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 2.0,
        username: str | None = None,
        password: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        on_message: Callable[[list[Any]], None] | None = None,
        reconnect: bool = True,
    ) -> None:
        if not self.supports(url):
            raise ValueError(f"unsupported Redis URL for the pipelined client: {url.split('@')[-1]!r}")
        parts = parse_url(url)  # redis-py's own reading of the URL, so both clients agree on it
        self._unix: str | None = parts.get("path")
        self._host: str = parts.get("host") or "127.0.0.1"
        self._port: int = parts.get("port") or 6379
        self._username: str | None = parts.get("username") or username
        self._password: str | None = parts.get("password") or password
        self._db = int(parts.get("db") or 0)
        if urlsplit(url).scheme == "rediss" and ssl is None:
            raise ValueError("a rediss:// URL needs a TLS context (ssl=...): see cxstream.streams.security.pipelined_redis")
        self._ssl = ssl
        self._timeout_s = timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._on_message = on_message
        self._reconnect = reconnect

    @property
    def timeout_s(self) -> float:
        """Seconds a command may wait for its reply (checked every quarter of it)."""
        return self._timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        self._timeout_s = value
        if self._proto is not None:
            self._proto.timeout_s = value

    @staticmethod
    def supports(url: str) -> bool:
        return urlsplit(url).scheme in ("redis", "rediss", "unix")

    async def _connection(self) -> _Protocol:
        current = self._proto
        if current is not None and current.lost is None:
            return current
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._proto is not None and self._proto.lost is None:
                return self._proto
            if self._proto is not None and not self._reconnect:
                raise RedisConnectionError(f"the connection was lost ({self._proto.lost!r}) and is not opened again")
            loop = asyncio.get_running_loop()
            proto: _Protocol
            try:
                if self._unix is not None:
                    _, proto = await asyncio.wait_for(loop.create_unix_connection(self._protocol, self._unix), self.timeout_s)
                else:
                    _, proto = await asyncio.wait_for(
                        loop.create_connection(
                            self._protocol, self._host, self._port, ssl=self._ssl, server_hostname=self._host if self._ssl else None
                        ),
                        self.timeout_s,
                    )
            except (TimeoutError, OSError) as exc:
                raise RedisConnectionError(f"cannot connect to Redis: {exc!r}") from exc
            hello: list[asyncio.Future[Any]] = []
            if self._password is not None:
                auth = ("AUTH", self._username, self._password) if self._username else ("AUTH", self._password)
                hello.append(proto.send(auth))
            if self._db:
                hello.append(proto.send(("SELECT", self._db)))
            try:
                for reply in hello:
                    await reply
            except BaseException:
                await proto.close()
                raise
            self._proto = proto
            return proto

    def _protocol(self) -> _Protocol:
        return _Protocol(self.timeout_s, self._on_message)

    async def connection_closed(self) -> None:
        """Wait until the current connection is lost or closed (at once if there is none)."""
        proto = self._proto
        if proto is not None:
            await asyncio.shield(proto.closed)

    async def call(self, *args: Any) -> Any:
        proto = await self._connection()
        return await proto.send(args)

    async def execute_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send *commands* in one write and return their replies in order.

        Every reply is waited for; then the first failure (an error reply, a timeout, a lost
        connection) is raised, so a caller that retries knows none of them can still be in flight.
        """
        if not commands:
            return []
        proto = await self._connection()
        replies = await asyncio.gather(*proto.send_many(commands), return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    async def evalsha(self, sha: str, source: str, keys: list[str], args: list[Any]) -> Any:
        """``EVALSHA`` of a script whose *source* is loaded again if Redis does not have it (a restart, ``SCRIPT FLUSH``)."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.call("SCRIPT", "LOAD", source)
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    async def close(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None:
            await proto.close()
