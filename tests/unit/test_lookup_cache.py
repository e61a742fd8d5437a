"""The API's context lookup cache (cxstream.serve.lookupcache.LookupCache): what it stores, serves and drops."""

from __future__ import annotations

from cxstream.serve.lookupcache import ENTRY_OVERHEAD, LookupCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def live_cache(max_bytes: int = 1_000_000, max_age_s: float = 60.0, clock: Clock | None = None) -> LookupCache:
    cache = LookupCache(max_bytes, max_age_s, clock=clock or Clock())
    cache.go_live()
    return cache


def stored(cache: LookupCache, key: tuple[str, ...], value: bytes, deps: tuple[str, ...], code: int = 1) -> None:
    cache.finish(cache.begin(), key, code, value, deps)


def test_an_answer_through_an_alias_is_dropped_when_any_key_it_was_read_from_changes() -> None:
    deps = ("cx:ctx:old", "cx:alias:old", "cx:id:customer_id:old", "cx:ctx:new")
    for changed in deps:
        cache = live_cache()
        stored(cache, ("id", *deps[:3]), b"ctx-new", deps)
        stored(cache, ("id", "cx:ctx:other"), b"ctx-other", ("cx:ctx:other",))
        cache.invalidate([changed.encode()])
        assert cache.get(("id", *deps[:3])) is None, changed
        assert cache.get(("id", "cx:ctx:other")) == (1, b"ctx-other")
        assert len(cache) == 1


def test_only_found_contexts_are_stored() -> None:
    cache = live_cache()
    stored(cache, ("id", "cx:ctx:none"), None, ("cx:ctx:none",), code=0)  # type: ignore[arg-type]
    stored(cache, ("ident", "cx:id:phone:+1"), None, ("cx:id:phone:+1",), code=2)  # type: ignore[arg-type]
    assert len(cache) == 0 and cache.get(("id", "cx:ctx:none")) is None


def test_the_least_recently_used_go_first_when_the_bytes_are_spent() -> None:
    value = b"x" * 600
    cache = live_cache(max_bytes=3 * (len(value) + ENTRY_OVERHEAD))
    for name in "abc":
        stored(cache, ("id", name), value, (name,))
    assert cache.get(("id", "a")) is not None  # a is now the most recently used
    stored(cache, ("id", "d"), value, ("d",))
    assert [cache.get(("id", n)) is not None for n in "abcd"] == [True, False, True, True]
    assert cache.size_bytes == 3 * (len(value) + ENTRY_OVERHEAD)
    cache.invalidate([b"b"])  # its index entry went with it: nothing left to drop, nothing breaks
    assert len(cache) == 3


def test_a_value_larger_than_the_whole_cache_is_not_stored() -> None:
    cache = live_cache(max_bytes=1000)
    stored(cache, ("id", "big"), b"x" * 1000, ("big",))
    assert len(cache) == 0 and cache.size_bytes == 0


def test_an_answer_older_than_the_max_age_is_not_served() -> None:
    clock = Clock()
    cache = live_cache(max_age_s=30.0, clock=clock)
    stored(cache, ("id", "a"), b"v", ("a",))
    clock.now = 30.0
    assert cache.get(("id", "a")) == (1, b"v")
    clock.now = 30.5
    assert cache.get(("id", "a")) is None and len(cache) == 0


def test_a_lookup_in_flight_across_a_flush_or_a_lost_subscription_stores_nothing() -> None:
    cache = live_cache()
    pending = cache.begin()
    cache.invalidate(None)  # FLUSHALL / FLUSHDB: Redis names no key
    cache.finish(pending, ("id", "a"), 1, b"old", ("a",))
    assert len(cache) == 0
    stored(cache, ("id", "a"), b"v", ("a",))
    pending = cache.begin()
    cache.go_down()
    cache.go_live()
    cache.finish(pending, ("id", "b"), 1, b"old", ("b",))
    assert len(cache) == 0, "emptied when the subscription was lost; the lookup from before is not stored"


def test_a_key_named_while_another_lookup_was_in_flight_does_not_stop_it() -> None:
    cache = live_cache()
    pending = cache.begin()
    cache.invalidate([b"cx:ctx:other"])
    cache.finish(pending, ("id", "cx:ctx:a"), 1, b"v", ("cx:ctx:a",))
    assert cache.get(("id", "cx:ctx:a")) == (1, b"v")


def test_nothing_is_cached_or_served_unless_live() -> None:
    cache = LookupCache(1_000_000, 60.0)
    assert cache.begin() is None
    cache.finish(None, ("id", "a"), 1, b"v", ("a",))
    cache.go_live()
    stored(cache, ("id", "a"), b"v", ("a",))
    cache.go_down()
    assert cache.get(("id", "a")) is None and len(cache) == 0 and cache.size_bytes == 0
