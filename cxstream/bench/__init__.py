"""Benchmarks and fault injection: what ``cxstream bench``, ``make bench`` and ``make chaos`` run.

* :mod:`.loadgen`: ``cxstream bench pipeline`` (the engine on the embedded broker, open loop, with references);
* :mod:`.context_bench`: ``cxstream bench context`` (retention across channel switches, lookups);
* :mod:`.lookups`: open-loop context lookups in a process of their own;
* :mod:`.workload`: the seeded synthetic workload the benches send;
* :mod:`.chaos`: servers, workers, traffic and accounting by event id for ``make chaos`` and its tests;
* :mod:`.engineproc`: the environment of an engine subprocess pointed at given servers;
* :mod:`.snapshots`: model snapshots in the layouts engines wrote before (the snapshot benchmark, the restore tests).

What a user replays (recordings, ``cxstream replay``, the demo, dataset adapters) is in :mod:`cxstream.replay`.
"""
