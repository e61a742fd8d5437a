"""The cached partitioner picks exactly the partitions of Kafka's default partitioner."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from cxstream.streams import partitioner
from cxstream.streams.partitioner import CachedPartitioner, key_hash


def test_same_partition_as_the_default_partitioner_for_any_key_and_partition_count() -> None:
    rng = random.Random(3)
    ours, theirs = CachedPartitioner(), DefaultPartitioner()
    keys = [rng.randbytes(rng.randint(0, 40)) for _ in range(2000)] + [f"cust-{i}".encode() for i in range(500)]
    for n in (1, 2, 3, 4, 7, 12, 24):
        parts = list(range(n))
        for key in keys:
            assert ours(key, parts, parts) == theirs(key, parts, parts)
            assert ours(key, parts, parts) == theirs(key, parts, parts)  # the remembered hash too
    gappy = [0, 2, 5]  # partitions as metadata may list them: the index into the sorted list, as Kafka does
    assert all(ours(k, gappy, gappy) == theirs(k, gappy, gappy) for k in keys)


def test_no_key_picks_an_available_partition() -> None:
    ours = CachedPartitioner()
    assert {ours(None, [0, 1, 2, 3], [1, 3]) for _ in range(200)} <= {1, 3}
    assert ours(None, [0, 1, 2], []) in (0, 1, 2)


def test_the_remembered_hashes_are_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(partitioner, "MAX_KEYS", 100)
    partitioner._hashes.clear()
    for i in range(1000):
        key_hash(f"k{i}".encode())
        assert len(partitioner._hashes) <= 100
