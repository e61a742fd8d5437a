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
loopback port (also its probe port), and the stream worker's loopback endpoint, which the HTTP API's
``/metrics`` includes, merges them into its own with every series labelled ``process="learner"``
(:class:`cxstream.serve.loopback.LoopbackEndpoint`; ``cx_learner_metrics_up`` says whether they could be fetched).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from typing import Any

import orjson
from mode import Service

from cxstream.serve.workers import Children
from cxstream.streams.settings import Settings

log = logging.getLogger("cxstream.learner")


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
