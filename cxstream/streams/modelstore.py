"""Model snapshots in Redis: the learner writes them, every worker's scorer hot-swaps to the newest.

Layout: ``cx:model:{namespace}{name}`` holds the snapshot bytes (the models' own pickle-free
format, see docs/INTEL.md) and ``cx:model:{namespace}{name}:version`` its version, written
together in one transaction.  The namespace is the engine's ``CX_TOPIC_PREFIX``: engines that
share a Redis but not their topics (their labels) do not share their models.  Only the learner writes; scorers poll the version
(one small GET per second) and load the bytes when it changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

M = TypeVar("M")


def snapshot_key(name: str, namespace: str = "") -> str:
    """The Redis key of a model's newest snapshot.

    >>> snapshot_key("intent"), snapshot_key("intent", "t1.")
    ('cx:model:intent', 'cx:model:t1.intent')
    """
    return f"cx:model:{namespace}{name}"


def version_key(name: str, namespace: str = "") -> str:
    """The Redis key of that snapshot's version.

    >>> version_key("intent")
    'cx:model:intent:version'
    """
    return f"cx:model:{namespace}{name}:version"


async def save_snapshot(client: aioredis.Redis, name: str, version: int, blob: bytes, namespace: str = "") -> None:
    """Store a snapshot and its version atomically."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(snapshot_key(name, namespace), blob)
        pipe.set(version_key(name, namespace), str(version))
        await pipe.execute()


async def load_snapshot(client: aioredis.Redis, name: str, namespace: str = "") -> tuple[int, bytes] | None:
    """The newest snapshot of *name* as (version, bytes), or None if there is none."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.get(version_key(name, namespace))
        pipe.get(snapshot_key(name, namespace))
        version, blob = await pipe.execute()
    if version is None or blob is None:
        return None
    return int(version), blob


class ModelCache(Generic[M]):
    """The model a scorer uses now; :meth:`refresh` swaps in a newer snapshot if there is one.

    Loading runs in a thread: a large snapshot must not stall the event loop.
    Until a snapshot exists, the *empty* model (untrained) answers.
    """

    def __init__(self, name: str, empty: Callable[[], M], load: Callable[[bytes], M], namespace: str = "") -> None:
        self.name = name
        self.namespace = namespace  # the engine's CX_TOPIC_PREFIX (see the module doc)
        self.model: M = empty()
        self.version = 0
        self._refused = 0
        self._unreachable = False  # the last refresh could not reach Redis
        self._load = load

    async def refresh(self, client: aioredis.Redis) -> bool:
        try:
            version = await client.get(version_key(self.name, self.namespace))
        except Exception as exc:  # Redis down: keep scoring with the model we have (said once per outage)
            if not self._unreachable:
                log.warning("model %s: cannot read the snapshot version (%r); scoring with version %d meanwhile", self.name, exc, self.version)
            self._unreachable = True
            return False
        if self._unreachable:
            log.info("model %s: Redis answers again", self.name)
            self._unreachable = False
        if version is None or int(version) <= max(self.version, self._refused):
            return False
        found = await load_snapshot(client, self.name, self.namespace)
        if found is None:
            return False
        new_version, blob = found
        try:
            self.model = await asyncio.to_thread(self._load, blob)
        except ValueError as exc:  # SnapshotError (an older format): keep the model we have, do not retry this version
            log.warning("model %s: snapshot version %d cannot be read (%s); still scoring with version %d", self.name, new_version, exc, self.version)
            self._refused = new_version
            return False
        self.version = new_version
        log.info("model %s: now scoring with snapshot version %d", self.name, new_version)
        return True
