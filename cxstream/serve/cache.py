"""The API process's cache of context lookups, kept true by Redis's invalidation messages.

A lookup (``GET /customers/{id}/context``, ``?email=...``, the desk's and the assistant's) runs a
Lua script that reads one to three index keys and a context in Redis (:mod:`cxstream.serve.http`).
With ``CX_HTTP_CONTEXT_CACHE=N`` each API process keeps the answers of its last *N* distinct
lookups, found or not, with the Redis keys each one read, and answers a repeated lookup without
Redis: no write to Redis's socket, no reply to read, and no wait for the Redis process to be
scheduled on a busy machine.

It stays true through Redis's client-side caching protocol (``CLIENT TRACKING``, Redis 6+): a
connection of its own, with broadcast tracking of the key prefixes a lookup reads (contexts,
aliases, identifiers) redirected to itself and subscribed to ``__redis__:invalidate``, receives
the name of every such key that is written, deleted (an erasure) or expires, and the cache drops
every answer that read it.  Negative answers are dropped the same way when the context they
missed appears.

Races and failures:

* An answer is kept only if no invalidation arrived while its script ran (a global counter,
  ``epoch``): otherwise the reply may hold a value older than an invalidation already applied.
* Until the connection is subscribed, and as soon as it is lost, nothing is served from the cache
  and everything in it is dropped; it reconnects with a backoff.  A ``PING`` every
  ``ping_interval_s`` (answered within the connection's timeout) finds a connection that went
  silent, so an answer is never served from a cache that stopped hearing about writes for longer
  than about that.
* Each answer is dropped after ``max_age_s`` whatever happens, a bound on any staleness left.

What it does not promise: a write becomes visible to the cache's lookups when its invalidation
message has been read, typically well under a millisecond after Redis applied it; a lookup that
starts in between gets the answer from before the write, as it would from a Redis replica.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from cxstream.streams import metrics
from cxstream.streams.keys import alias_key, context_key, identifier_key

log = logging.getLogger(__name__)

#: The key prefixes a lookup reads; Redis reports every change under them.
TRACKED_PREFIXES = (context_key(""), alias_key(""), identifier_key("", "").removesuffix(":"))
INVALIDATE_CHANNEL = "__redis__:invalidate"

Answer = tuple[int, bytes | None]
_hit, _miss, _raced, _off = (metrics.CONTEXT_CACHE.labels(o) for o in ("hit", "miss", "raced", "off"))


class ContextCache:
    """Lookup answers by lookup (mode, first key), each with the Redis keys it read.

    >>> cache = ContextCache(2)
    >>> cache.ready = True
    >>> cache.put(("id", "cx:ctx:a"), (1, b"A"), [b"cx:ctx:a", b"cx:alias:a"], cache.epoch)
    >>> cache.get(("id", "cx:ctx:a"))
    (1, b'A')
    >>> cache.invalidate([b"cx:alias:a"])
    >>> cache.get(("id", "cx:ctx:a")) is None
    True
    """

    def __init__(self, max_entries: int, *, max_age_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self._clock = clock
        # lookup -> (kept at, answer, keys it read), least recently used first
        self._entries: collections.OrderedDict[tuple[str, str], tuple[float, Answer, tuple[bytes, ...]]] = collections.OrderedDict()
        self._readers: dict[bytes, set[tuple[str, str]]] = {}  # Redis key -> the lookups that read it
        #: Bumped by every invalidation: an answer whose script ran across a bump is not kept.
        self.epoch = 0
        #: True while the invalidations are followed (subscribed, tracking on): only then is anything served or kept.
        self.ready = False

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, lookup: tuple[str, str]) -> Answer | None:
        if not self.ready:
            _off.inc()
            return None
        entry = self._entries.get(lookup)
        if entry is None:
            return None
        if self._clock() - entry[0] > self.max_age_s:
            self._drop(lookup)
            return None
        self._entries.move_to_end(lookup)
        _hit.inc()
        return entry[1]

    def put(self, lookup: tuple[str, str], answer: Answer, read: list[bytes], epoch: int) -> None:
        """Keep *answer* of a script that started at *epoch* and read the keys *read* (not if anything changed since)."""
        if not self.ready:
            return
        if epoch != self.epoch:
            _raced.inc()
            return
        _miss.inc()
        self._drop(lookup)
        keys = tuple(read)
        self._entries[lookup] = (self._clock(), answer, keys)
        for key in keys:
            self._readers.setdefault(key, set()).add(lookup)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))
        metrics.CONTEXT_CACHE_ENTRIES.set(len(self._entries))

    def invalidate(self, keys: list[bytes] | None) -> None:
        """Redis says *keys* changed (None: everything, a ``FLUSHALL``)."""
        self.epoch += 1
        if keys is None:
            self.clear()
            return
        dropped = 0
        for key in keys:
            for lookup in self._readers.pop(key, ()):
                if lookup in self._entries:
                    self._drop(lookup)
                    dropped += 1
        if dropped:
            metrics.CONTEXT_CACHE_INVALIDATED.inc(dropped)
            metrics.CONTEXT_CACHE_ENTRIES.set(len(self._entries))

    def clear(self) -> None:
        self.epoch += 1
        self._entries.clear()
        self._readers.clear()
        metrics.CONTEXT_CACHE_ENTRIES.set(0)

    def _drop(self, lookup: tuple[str, str]) -> None:
        entry = self._entries.pop(lookup, None)
        if entry is None:
            return
        for key in entry[2]:
            readers = self._readers.get(key)
            if readers is not None:
                readers.discard(lookup)
                if not readers:
                    del self._readers[key]


@dataclass(frozen=True)
class CacheConfig:
    """How :func:`cxstream.serve.http.build_app` makes the cache: its size, and a maker of the invalidation connection."""

    max_entries: int
    connect: Callable[[Callable[[Any], None]], Any]


class Invalidations:
    """Keeps *cache* following Redis's invalidations on a connection of its own (a :class:`PipelinedRedis`).

    *connect* makes a new, unconnected ``PipelinedRedis`` whose subscribed messages go to the
    callback it is given.
    """

    def __init__(
        self, cache: ContextCache, connect: Callable[[Callable[[Any], None]], Any], *, ping_interval_s: float = 0.5,
        backoff_s: tuple[float, float] = (0.2, 5.0),
    ) -> None:
        self.cache = cache
        self._connect = connect
        self.ping_interval_s = ping_interval_s
        self._backoff = backoff_s
        self._task: asyncio.Task[None] | None = None
        self.connections = 0  # subscriptions made (the first, then one per reconnection)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cxstream.serve.cache.invalidations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        self.cache.ready = False
        self.cache.clear()

    def _lost(self, _: asyncio.Future[None]) -> None:
        self.cache.ready = False
        self.cache.clear()

    def _message(self, payload: Any) -> None:
        if payload is None or isinstance(payload, list):
            self.cache.invalidate(payload)

    async def _run(self) -> None:
        delay = self._backoff[0]
        down_since: float | None = None
        while True:
            conn = self._connect(self._message)
            try:
                client_id = await conn.call("CLIENT", "ID")
                prefixes = [arg for prefix in TRACKED_PREFIXES for arg in ("PREFIX", prefix)]
                await conn.call("CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", *prefixes)
                await conn.call("SUBSCRIBE", INVALIDATE_CHANNEL)
                self.cache.clear()  # what was kept before the subscription may have missed a write
                self.cache.ready = True
                self.connections += 1
                if down_since is not None:
                    log.info("context cache: following Redis's invalidations again after %.1f s", time.monotonic() - down_since)
                    down_since = None
                delay = self._backoff[0]
                closed = asyncio.ensure_future(conn.closed())
                closed.add_done_callback(self._lost)  # stop serving at once, not at the next check
                try:
                    while True:
                        done, _ = await asyncio.wait({closed}, timeout=self.ping_interval_s)
                        if done:
                            raise RedisError("the invalidation connection was closed")
                        await conn.call("PING")
                finally:
                    closed.remove_done_callback(self._lost)
                    closed.cancel()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("context cache: not following Redis's invalidations (%r); lookups go to Redis until it is back", exc)
            finally:
                self.cache.ready = False
                self.cache.clear()
                with contextlib.suppress(BaseException):
                    await conn.close()
            await asyncio.sleep(delay)
            delay = min(self._backoff[1], delay * 2)
