"""The API's lookup cache's bookkeeping (cxstream.serve.cache), without Redis."""

from __future__ import annotations

from cxstream.serve.cache import TRACKED_PREFIXES, ContextCache


def cache(max_entries: int = 3) -> tuple[ContextCache, list[float]]:
    now = [0.0]
    c = ContextCache(max_entries, max_age_s=30.0, clock=lambda: now[0])
    c.ready = True
    return c, now


def test_the_tracked_prefixes_are_those_a_lookup_reads() -> None:
    assert TRACKED_PREFIXES == ("cx:ctx:", "cx:alias:", "cx:id:")


def test_nothing_is_served_or_kept_while_the_invalidations_are_not_followed() -> None:
    c, _ = cache()
    c.put(("id", "a"), (1, b"A"), [b"a"], c.epoch)
    c.ready = False
    assert c.get(("id", "a")) is None
    c.put(("id", "b"), (1, b"B"), [b"b"], c.epoch)
    c.ready = True
    assert c.get(("id", "b")) is None


def test_the_least_recently_used_goes_first_and_leaves_no_reader_behind() -> None:
    c, _ = cache(2)
    c.put(("id", "a"), (1, b"A"), [b"k:a", b"shared"], c.epoch)
    c.put(("id", "b"), (1, b"B"), [b"k:b", b"shared"], c.epoch)
    assert c.get(("id", "a")) == (1, b"A")  # a is now the most recently used
    c.put(("id", "c"), (0, None), [b"k:c"], c.epoch)
    assert len(c) == 2 and c.get(("id", "b")) is None and c.get(("id", "a")) == (1, b"A")
    assert set(c._readers) == {b"k:a", b"shared", b"k:c"} and c._readers[b"shared"] == {("id", "a")}
    c.invalidate([b"shared"])
    assert len(c) == 1 and set(c._readers) == {b"k:c"}


def test_an_answer_is_dropped_after_max_age_and_flushall_drops_everything() -> None:
    c, now = cache()
    c.put(("id", "a"), (1, b"A"), [b"a"], c.epoch)
    now[0] = 29.0
    assert c.get(("id", "a")) == (1, b"A")
    now[0] = 30.5
    assert c.get(("id", "a")) is None and len(c) == 0
    c.put(("ident", "e"), (2, None), [b"e"], c.epoch)
    c.invalidate(None)
    assert len(c) == 0 and c._readers == {}


def test_an_answer_read_across_an_invalidation_is_not_kept() -> None:
    c, _ = cache()
    started = c.epoch
    c.invalidate([b"unrelated"])
    c.put(("id", "a"), (1, b"maybe stale"), [b"a"], started)
    assert c.get(("id", "a")) is None
    c.put(("id", "a"), (1, b"A"), [b"a"], c.epoch)
    assert c.get(("id", "a")) == (1, b"A")
