"""cx_gc_pause_seconds: every pass of the cyclic collector timed, per generation, by one callback."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from cxstream.engine import watch_gc


def _count(generation: int) -> float:
    return REGISTRY.get_sample_value("cx_gc_pause_seconds_count", {"generation": str(generation)}) or 0.0


def _sum(generation: int) -> float:
    return REGISTRY.get_sample_value("cx_gc_pause_seconds_sum", {"generation": str(generation)}) or 0.0


def test_each_collection_is_timed_in_its_generation_by_one_callback() -> None:
    watch_gc()
    watch_gc()  # a second call (the engine and the learner's process both tune the collector) adds nothing
    assert sum(1 for cb in gc.callbacks if getattr(cb, "__name__", "") == "_gc_timer") == 1
    enabled = gc.isenabled()
    gc.disable()  # only the passes asked for below
    try:
        before = [_count(g) for g in range(3)]
        sum_before = _sum(2)
        garbage = [[i] for i in range(100_000)]  # containers for a full pass to walk
        gc.collect(0)
        gc.collect(1)
        gc.collect(2)
        del garbage
        after = [_count(g) for g in range(3)]
    finally:
        if enabled:
            gc.enable()
    assert [a - b for a, b in zip(after, before, strict=True)] == [1.0, 1.0, 1.0]
    assert _sum(2) > sum_before  # a full pass over 100,000 lists takes measurable time
