"""``cxstream learn``: the learner in a process of its own, beside the stream worker (``CX_LEARNER_PROCESS=1``, the default).

The learner (:mod:`cxstream.agents.learner`) is the models' single writer: it tests and then
learns every label the desktops and business systems send (one partition of ``cx.labels.v1``, in
order) and publishes the models' snapshots, which every worker's scorer loads.  In the stream
worker's process it shared one event loop and one GIL with the batch stages: at 1,050 contacts/s it
and the Faust consumer thread that fetched its labels were about a tenth of that process's samples;
in its own process the worker used 81-82 % of a core against 94 %, and the contacts' e2e p50 fell
from 26-27 to 20-21 ms (docs/PERFORMANCE.md, "Levers measured").  So ``cxstream run`` starts it as a child, like its HTTP
API processes (:class:`LearnerProcess`, on :class:`cxstream.serve.workers.Children`), restarts it
if it dies, and stops it on the way out.

The child is a Faust worker with the learner's agent and its publication timer and nothing else:
the same app id, so the same consumer group (the one that holds ``cx.labels.v1``'s committed offset
from before; Faust's assignor gives each member only the topics it subscribes to), its Faust data
under ``CX_DATA_DIR/faust-learner``.  Several engine workers start one each; the group gives the
labels' one partition to one of them, and the others wait as standbys.  Its metrics are served on a
loopback port (also its probe port), and the stream worker's metrics endpoint, which the HTTP API's
``/metrics`` includes, merges them into its own with every series labelled ``process="learner"``
(:class:`WithLearner`; ``cx_learner_metrics_up`` says whether they could be fetched).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from mode import Service
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from cxstream.serve.workers import Children
from cxstream.streams.settings import Settings

log = logging.getLogger("cxstream.learner")

LEARNER_LABEL = ("process", "learner")  # the label the learner's series carry in the worker's metrics


class LearnerProcess(Children):
    """The one ``cxstream learn`` child of ``cxstream run``."""

    what = "learner process"

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        """*settings* must carry the resolved broker and Redis URLs; *kwargs*: :class:`Children`'s."""
        super().__init__(settings, 1, **kwargs)

    def command(self) -> list[str]:
        return ["learn"]

    @property
    def metrics_url(self) -> str | None:
        """Its loopback metrics endpoint now (a restarted child listens on another port)."""
        child = self.children[0] if self.children else None
        return f"http://127.0.0.1:{child.probe_port}/metrics" if child is not None and child.probe_port else None


class WithLearner:
    """A registry view (prometheus-client's ``collect`` protocol): *base*'s families and the learner process's.

    The learner's are read from its loopback endpoint at each scrape (in the metrics server's
    thread, within *timeout_s*) and each of its series gets the label ``process="learner"``; a family
    both processes export (``cx_redis_errors_total``, ``process_cpu_seconds_total``...) becomes one
    family with both processes' series, so the text stays valid for Prometheus.
    """

    def __init__(
        self, base: Any, url: Callable[[], str | None], *, keep: Callable[[str], bool] = lambda name: True, timeout_s: float = 1.0
    ) -> None:
        """*keep*: which of the learner's families to include (by name: the API's own are the API's to export)."""
        self.base = base
        self.url = url
        self.keep = keep
        self.timeout_s = timeout_s

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {m.name: m for m in self.base.collect()}
        url, up = self.url(), 0
        if url is not None:
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                    text = resp.read().decode()
            except Exception as exc:  # restarting, or stuck: say so with the gauge, export the rest
                log.warning("cannot fetch the learner process's metrics from %s: %r", url, exc)
            else:
                up = 1
                merge_labelled(families, text, *LEARNER_LABEL, keep=self.keep)
        yield from families.values()
        gauge = GaugeMetricFamily("cx_learner_metrics_up", "1 if the learner process's metrics were fetched for this scrape.")
        gauge.add_metric([], up)
        yield gauge


def merge_labelled(
    families: dict[str, Metric], text: str, label: str, value: str, *, keep: Callable[[str], bool] = lambda name: True
) -> None:
    """Add the families of the exposition *text* (those *keep* accepts) to *families*, every sample labelled *label*=*value*.

    A family already there (of the same type) gets the samples; one of another type is left out.
    prometheus-client writes a counter's or histogram's ``_created`` samples as a gauge family of
    their own, which comes back here to the family it belongs to (else it would be declared twice).

    >>> from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    >>> from prometheus_client.parser import text_string_to_metric_families
    >>> mine, theirs = CollectorRegistry(), CollectorRegistry()
    >>> Counter("cx_things", "Things.", registry=mine).inc(2)
    >>> Counter("cx_things", "Things.", registry=theirs).inc(5)
    >>> Counter("cx_other", "Other.", ["model"], registry=theirs).labels("intent").inc()
    >>> for registry in (mine, theirs):
    ...     Histogram("cx_wait_seconds", "Waits.", registry=registry, buckets=(1.0,)).observe(0.5)
    >>> families = {m.name: m for m in mine.collect()}
    >>> merge_labelled(families, generate_latest(theirs).decode(), "process", "learner")
    >>> [(s.name, s.labels, s.value) for s in families["cx_things"].samples if s.name.endswith("_total")]
    [('cx_things_total', {}, 2.0), ('cx_things_total', {'process': 'learner'}, 5.0)]
    >>> [(s.labels, s.value) for s in families["cx_other"].samples if s.name.endswith("_total")]
    [({'model': 'intent', 'process': 'learner'}, 1.0)]
    >>> class View:
    ...     def collect(self):
    ...         return families.values()
    >>> names = [f.name for f in text_string_to_metric_families(generate_latest(View()).decode())]
    >>> sorted(names) == sorted(set(names)), len([n for n in names if n.startswith("cx_wait_seconds")])
    (True, 2)
    """
    for family in text_string_to_metric_families(text):
        if not keep(family.name):
            continue
        samples = [s._replace(labels={**s.labels, label: value}) for s in family.samples]
        mine = families.get(family.name)
        owner = families.get(family.name.removesuffix("_created")) if family.name.endswith("_created") else None
        if owner is not None and mine is None:  # a _created gauge: back with its counter or histogram
            owner.samples.extend(samples)
        elif mine is None:
            family.samples = samples
            families[family.name] = family
        elif mine.type == family.type:
            mine.samples.extend(samples)


class _Ready(Service):
    """Writes the ready line (``pid``, ``probe_port``) to ``--ready-fd`` once the Faust worker has started."""

    def __init__(self, ready_fd: int | None, probe_port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ready_fd = ready_fd
        self.probe_port = probe_port

    async def on_started(self) -> None:
        log.info("learner process %d started; metrics on 127.0.0.1:%d", os.getpid(), self.probe_port)
        if self.ready_fd is not None:
            fd, self.ready_fd = self.ready_fd, None
            with os.fdopen(fd, "wb") as ready:
                ready.write(orjson.dumps({"pid": os.getpid(), "probe_port": self.probe_port}) + b"\n")


def main_learn(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point of ``cxstream learn`` (arguments ``ready_fd``, ``parent_pid``; see ``cxstream.cli``)."""
    import faust
    from prometheus_client import start_http_server

    from cxstream.agents import learner as learner_agent
    from cxstream.engine import new_event_loop, tune_gc
    from cxstream.serve.main import die_with
    from cxstream.streams.app import bind_topics, create_app
    from cxstream.streams.logs import configure_logging
    from cxstream.streams.security import redis_pool

    if args.parent_pid is not None:
        die_with(args.parent_pid)
    if settings.learner_nice:  # before any thread starts: Linux keeps a niceness per thread, new ones inherit it
        os.nice(settings.learner_nice)
    configure_logging(settings.log_level)
    if not settings.broker_url or not settings.redis_url:
        print("cxstream learn: set CX_BROKER_URL and CX_REDIS_URL (cxstream run passes its own)", file=sys.stderr)
        return 2
    loop = new_event_loop(settings.event_loop)
    asyncio.set_event_loop(loop)
    app = create_app(settings, settings.broker_url, datadir="faust-learner")
    topics = bind_topics(app, settings)
    client = redis_pool(settings, max_connections=8, timeout=5, socket_timeout=10, socket_connect_timeout=5)
    learner_agent.register(app, topics, settings, client)
    server, thread = start_http_server(0, addr="127.0.0.1")
    tune_gc()
    worker = faust.Worker(
        app, _Ready(args.ready_fd, server.server_port, loop=loop), loop=loop, loglevel=settings.log_level, redirect_stdouts=False
    )
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(client.aclose())
        server.shutdown()
        server.server_close()
        thread.join(2)
        with contextlib.suppress(Exception):
            loop.close()
    return code
