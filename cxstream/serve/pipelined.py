"""One pipelined Redis connection for the API's hot read: the context lookup.

redis-py's asyncio client costs ~150-190 µs of CPU per command on the 2-core bench machine
(connection pool, retry wrapper, stream reader, timeouts per call), which made it the
largest single cost of a context lookup.  This client keeps one connection per API process
and writes every command as soon as it is issued (commands in flight are answered in order,
so a FIFO of futures matches replies to callers); encoding and parsing are hiredis', Redis'
own C protocol library.  A lookup costs ~30 µs of CPU here (``bench/context`` and
docs/IDENTITY.md).  Everything else in the API (health, erasure, queues) keeps redis-py.

Failures raise redis-py's exceptions (:class:`redis.exceptions.RedisError` subclasses), so
the API answers 503 exactly as it does for redis-py's: a lost connection fails the
commands in flight with ``ConnectionError`` and the next command reconnects; a command
that gets no reply within ``timeout_s`` raises ``TimeoutError`` (its late reply, if any, is
read and dropped, so later replies stay matched to their commands).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

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
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self._fail(RedisConnectionError("Redis sent a reply to no command"))
                if self.transport is not None:
                    self.transport.close()
                return
            waiter = self.waiting.popleft()
            if waiter.done():  # its caller gave up (timeout or cancellation)
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                waiter.set_exception(NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc!r}" if exc else "connection to Redis closed"))

    def _fail(self, exc: Exception) -> None:
        self.lost = exc
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(exc)

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        assert self.transport is not None
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        self.transport.write(hiredis.pack_command(args))
        return waiter


class PipelinedRedis:
    """``await call("GET", key)``: one connection, commands pipelined; ``evalsha`` loads a script Redis lost.

    *url* is ``redis://[[user]:password@]host[:port][/db]`` or ``unix:///path[?db=N]``
    (``supports(url)`` tells; TLS is not supported: the API then keeps redis-py).
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        if not self.supports(url):
            raise ValueError(f"unsupported Redis URL for the pipelined client: {url.split('@')[-1]!r}")
        parts = urlsplit(url)
        self._unix = parts.path if parts.scheme == "unix" else None
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        db = parts.path.strip("/") if parts.scheme == "redis" else dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("db", "0")
        self._db = int(db or 0)
        self.timeout_s = timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    @staticmethod
    def supports(url: str) -> bool:
        return urlsplit(url).scheme in ("redis", "unix")

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.lost is None:
            return proto
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._proto is not None and self._proto.lost is None:
                return self._proto
            loop = asyncio.get_running_loop()
            try:
                if self._unix is not None:
                    _, proto = await asyncio.wait_for(loop.create_unix_connection(_Protocol, self._unix), self.timeout_s)
                else:
                    _, proto = await asyncio.wait_for(loop.create_connection(_Protocol, self._host, self._port), self.timeout_s)
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
                    await asyncio.wait_for(reply, self.timeout_s)
            except BaseException:
                assert proto.transport is not None
                proto.transport.close()
                raise
            self._proto = proto
            return proto

    async def call(self, *args: Any) -> Any:
        proto = await self._connection()
        try:
            return await asyncio.wait_for(proto.send(args), self.timeout_s)
        except TimeoutError as exc:
            raise RedisTimeoutError(f"Redis did not answer {args[0]!s} within {self.timeout_s} s") from exc

    async def evalsha(self, sha: str, source: str, keys: list[str], args: list[Any]) -> Any:
        """``EVALSHA`` of a script whose *source* is loaded again if Redis does not have it (a restart, ``SCRIPT FLUSH``)."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.call("SCRIPT", "LOAD", source)
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    async def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
