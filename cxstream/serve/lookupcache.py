"""The API's cache of context lookups, kept fresh by Redis' own invalidation messages.

A context lookup (:class:`cxstream.serve.http.ContextLookup`) is one round trip to Redis: the
API process writes the command, Redis has to be woken to run it, and the API is woken again by
the reply.  On a machine whose cores the stream worker and the broker keep busy, those two
wake-ups are most of a lookup's tail.  Each API process therefore keeps the contexts it has
answered in memory (:class:`LookupCache`) and answers a repeated lookup from there, without
Redis, for as long as Redis has not said the answer changed.

How it stays fresh (Redis' client-side caching, "tracking" in broadcasting mode):

* :class:`Invalidations` holds one more connection per API process.  It asks Redis to track
  the keys a lookup reads (``CLIENT TRACKING on REDIRECT <its own id> BCAST PREFIX cx:ctx:
  PREFIX cx:id: PREFIX cx:alias:``) and subscribes to ``__redis__:invalidate``.  From then on,
  whenever any client changes, deletes, expires or evicts such a key (the engine's write-behind
  of a context, an identity merge's alias, an erasure), Redis sends the key's name on it;
  ``FLUSHALL``/``FLUSHDB`` sends a message that names none.
* A cached answer remembers the keys it was read from (the context's key, and for an answer
  found through an alias or an identifier those keys too) and is dropped when any of them is
  named.  A message naming none drops everything.
* A lookup in flight when one of its keys is named does not store its answer (it may have read
  the old value), so an answer is never cached after the message that made it old.
* Nothing is cached, and every lookup goes to Redis, while that connection is not subscribed:
  before it is, and from the moment it is lost until it is back (the cache is emptied when it
  is lost: messages sent meanwhile are not delivered).  The connection is pinged every
  ``ping_s``, so a Redis that stopped answering empties the cache within ``ping_s`` plus the
  command timeout.
* An answer older than ``max_age_s`` is not served either: the bound on staleness were a message
  ever lost while the connection looked healthy.

So a cached answer is as fresh as Redis is, give or take the time an invalidation message takes
to arrive (well under a millisecond on one host), which is far shorter than the write-behind's own
delay between a context's update and its Redis copy.  Only found contexts are cached (``404``
and ``409`` answers go to Redis every time); the cache holds the stored (compressed) value and
is bounded in bytes, least recently used first out.  ``CX_LOOKUP_CACHE_MB=0`` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from cxstream.streams import metrics
from cxstream.streams.keys import alias_key, context_key

log = logging.getLogger(__name__)

#: The key prefixes whose changes Redis reports: every key a context lookup reads starts with one.
PREFIXES = (context_key(""), alias_key(""), "cx:id:")
#: The channel Redis sends invalidations on to a connection that asked for them (RESP2 clients).
CHANNEL = b"__redis__:invalidate"
#: The longest wait between two tries of the invalidations' connection (failures in a row double it from ``retry_s``).
MAX_RETRY_S = 10.0
#: Bytes counted per cached answer besides its value: the entry, its key tuple and its place in the key index.
ENTRY_OVERHEAD = 400

_HIT = metrics.LOOKUP_CACHE.labels("hit")
_MISS = metrics.LOOKUP_CACHE.labels("miss")
_BYPASS = metrics.LOOKUP_CACHE.labels("bypass")

Key = tuple[str, ...]


class _Pending:
    """A lookup gone to Redis while the cache is live: the keys named since it left, and the cache's generation then
    (:meth:`LookupCache.clear` starts a new one, so a lookup from before a flush or a lost subscription stores nothing)."""

    __slots__ = ("generation", "touched")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.touched: set[str] = set()


class LookupCache:
    """Answers of context lookups by lookup key, each dropped when Redis says one of the keys it was read from changed.

    *key* is what identifies a lookup (its mode and Redis keys); *deps* are the Redis keys its
    answer depends on.  Only :meth:`go_live` (by :class:`Invalidations`, once subscribed) lets it
    store and serve anything.

    >>> cache = LookupCache(max_bytes=10_000, max_age_s=60.0, clock=lambda: 0.0)
    >>> cache.get(("id", "cx:ctx:c1")) is None, cache.begin() is None   # not live yet: every lookup goes to Redis
    (True, True)
    >>> cache.go_live()
    >>> p = cache.begin(); cache.finish(p, ("id", "cx:ctx:c1"), 1, b"ctx-1", ("cx:ctx:c1",))
    >>> cache.get(("id", "cx:ctx:c1"))
    (1, b'ctx-1')
    >>> cache.invalidate([b"cx:ctx:c1"]); cache.get(("id", "cx:ctx:c1")) is None
    True
    >>> p = cache.begin(); cache.invalidate([b"cx:ctx:c1"])   # named while the lookup was in flight: not stored
    >>> cache.finish(p, ("id", "cx:ctx:c1"), 1, b"old", ("cx:ctx:c1",)); cache.get(("id", "cx:ctx:c1")) is None
    True
    """

    def __init__(self, max_bytes: int, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        # key -> (value, deps, stored at, bytes counted); only found contexts (the script's code 1) are stored
        self._entries: OrderedDict[Key, tuple[bytes, tuple[str, ...], float, int]] = OrderedDict()
        self._by_dep: dict[str, set[Key]] = {}
        self._pending: set[_Pending] = set()
        self._bytes = 0
        self._generation = 0
        self.live = False

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """The bytes counted against ``max_bytes``."""
        return self._bytes

    def get(self, key: Key) -> tuple[int, bytes] | None:
        """The cached answer of *key*, or None (then ask Redis, between :meth:`begin` and :meth:`finish`)."""
        if not self.live:
            _BYPASS.inc()
            return None
        entry = self._entries.get(key)
        if entry is None:
            _MISS.inc()
            return None
        if self._clock() - entry[2] > self.max_age_s:
            self._drop(key)
            _MISS.inc()
            return None
        self._entries.move_to_end(key)
        _HIT.inc()
        return 1, entry[0]

    def begin(self) -> _Pending | None:
        """Mark a lookup gone to Redis (None when the cache is not live: nothing will be stored)."""
        if not self.live:
            return None
        pending = _Pending(self._generation)
        self._pending.add(pending)
        return pending

    def finish(self, pending: _Pending | None, key: Key, code: int, value: bytes | None, deps: tuple[str, ...]) -> None:
        """Redis answered the lookup *pending*: cache a found context unless one of *deps* was named meanwhile."""
        if pending is None:
            return
        self._pending.discard(pending)
        if (code != 1 or value is None or not self.live or pending.generation != self._generation
                or not pending.touched.isdisjoint(deps)):
            return
        size = len(value) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (value, deps, self._clock(), size)
        self._bytes += size
        for dep in deps:
            self._by_dep.setdefault(dep, set()).add(key)
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        metrics.LOOKUP_CACHE_BYTES.set(self._bytes)

    def abandon(self, pending: _Pending | None) -> None:
        """The lookup *pending* failed: nothing to store."""
        if pending is not None:
            self._pending.discard(pending)

    def invalidate(self, keys: Iterable[bytes] | None) -> None:
        """Redis says *keys* changed (None: every key, a flush): drop what was read from them."""
        if keys is None:
            self.clear()
            return
        names = [k.decode("utf-8", "surrogateescape") for k in keys]
        for pending in self._pending:
            pending.touched.update(names)
        dropped = 0
        for name in names:
            for key in self._by_dep.pop(name, ()):
                if key in self._entries:
                    self._drop(key)
                    dropped += 1
        if dropped:
            metrics.LOOKUP_CACHE_INVALIDATED.inc(dropped)
            metrics.LOOKUP_CACHE_BYTES.set(self._bytes)

    def clear(self) -> None:
        """Drop every answer; lookups in flight will not store theirs."""
        self._entries.clear()
        self._by_dep.clear()
        self._bytes = 0
        self._generation += 1  # the lookups in flight will not store theirs
        metrics.LOOKUP_CACHE_BYTES.set(0)

    def go_live(self) -> None:
        """Redis reports every change of the lookup keys from now on: start caching (from empty)."""
        self.clear()
        self.live = True
        metrics.LOOKUP_CACHE_LIVE.set(1)

    def go_down(self) -> None:
        """Changes may go unreported from now on: empty the cache and stop caching."""
        self.live = False
        self.clear()
        metrics.LOOKUP_CACHE_LIVE.set(0)

    def _drop(self, key: Key) -> None:
        _, deps, _, size = self._entries.pop(key)
        self._bytes -= size
        for dep in deps:
            keys = self._by_dep.get(dep)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_dep[dep]


class Invalidations:
    """Keeps a :class:`LookupCache` live: a connection subscribed to Redis' invalidations of the lookup keys.

    *connect* makes the connection (a :class:`cxstream.serve.pipelined.PipelinedRedis` with the
    API's URL, AUTH and TLS, and ``reconnect=False``) given the function its Pub/Sub messages go to.  :meth:`start` runs it in
    the background: on a failure (Redis down, a refused ``CLIENT TRACKING``) the cache is emptied
    and stops caching, and the connection is tried again after *retry_s*, twice as long after each
    failure in a row up to :data:`MAX_RETRY_S`.
    """

    def __init__(
        self, cache: LookupCache, connect: Callable[[Callable[[list[Any]], None]], Any], *,
        retry_s: float = 1.0, ping_s: float = 5.0,
    ) -> None:
        self.cache = cache
        self._connect = connect
        self.retry_s = retry_s
        self.ping_s = ping_s
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def wait_live(self, timeout_s: float) -> bool:
        """Wait up to *timeout_s* for the subscription (for tests and the bench's readiness); True once live."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        return self.cache.live

    def _message(self, reply: list[Any]) -> None:
        if len(reply) == 3 and reply[1] == CHANNEL:
            self.cache.invalidate(reply[2])

    async def _run(self) -> None:
        failed = False
        delay = self.retry_s
        while True:
            conn = self._connect(self._message)
            try:
                client_id = await conn.call("CLIENT", "ID")
                prefixes = [arg for prefix in PREFIXES for arg in ("PREFIX", prefix)]
                await conn.call("CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST", *prefixes)
                await conn.call("SUBSCRIBE", CHANNEL)
                self.cache.go_live()
                self._subscribed.set()
                if failed:
                    log.warning("context lookup cache: subscribed to Redis' invalidations again; caching")
                failed, delay = False, self.retry_s
                # asyncio.wait, not wait_for: before Python 3.12 wait_for can swallow a cancellation that
                # comes as its timeout fires, and close() would then wait for this task forever
                lost = asyncio.ensure_future(conn.connection_closed())
                try:
                    while not (await asyncio.wait({lost}, timeout=self.ping_s))[0]:
                        await conn.call("PING")  # raises if Redis does not answer within the command timeout
                finally:
                    lost.cancel()
                raise RedisConnectionError("the connection was lost")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if not failed:
                    log.warning("context lookup cache: no invalidations from Redis (%s: %s); lookups go to Redis until they are back",
                                type(exc).__name__, exc)
                failed = True
            except Exception:  # a bug: said once, and tried again as for a failure
                if not failed:
                    log.exception("context lookup cache: the invalidations' connection failed; lookups go to Redis")
                failed = True
            finally:
                self.cache.go_down()
                self._subscribed.clear()
                with contextlib.suppress(Exception):
                    await conn.close()
            await asyncio.sleep(delay)
            if failed:
                delay = min(delay * 2, max(MAX_RETRY_S, self.retry_s))

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.cache.go_down()
