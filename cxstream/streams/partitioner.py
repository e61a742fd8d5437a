"""Kafka's default partitioner with its key hashes remembered.

aiokafka's :class:`~aiokafka.partitioner.DefaultPartitioner` computes murmur2 in pure Python
(a few µs a key), and the batch stages hash most keys twice: once to decide whether a stage of
this worker takes the record locally, once when the producer partitions it.  Customer and
advisor ids repeat all the time, so the hashes are kept, in a bounded map that is cleared
when full (like the token cache of the intent model).  The partitions are exactly Kafka's:
the same murmur2, the same positive mask and modulo.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from aiokafka.partitioner import murmur2

#: Keys whose hash is kept; past it the map starts afresh (~100 bytes a key).
MAX_KEYS = 65_536

_hashes: dict[bytes, int] = {}


def key_hash(key: bytes) -> int:
    """``murmur2(key) & 0x7FFFFFFF``, remembered.

    >>> key_hash(b"customer-1") == murmur2(b"customer-1") & 0x7FFFFFFF
    True
    """
    h = _hashes.get(key)
    if h is None:
        if len(_hashes) >= MAX_KEYS:
            _hashes.clear()
        h = _hashes[key] = murmur2(key) & 0x7FFFFFFF
    return h


class CachedPartitioner:
    """``AIOKafkaProducer(partitioner=CachedPartitioner())``: DefaultPartitioner's choices, hashes remembered."""

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[key_hash(key) % len(all_partitions)]
