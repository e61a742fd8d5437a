"""Faust's aiokafka transport with a configurable, lag-aware consumer fetch wait.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer.  Apache Kafka answers
a fetch as soon as data arrives, so that is only an idle-poll interval there; the
embedded broker (Tansu) holds a fetch that finds no new data for the full wait, which
put a floor of about 1.5 s per consumer hop under end-to-end latency (measured in
docs/PERFORMANCE.md).  This transport sets the *idle* wait from ``CX_FETCH_WAIT_MS``.

A short wait must never be used for a partition that has data to deliver, though:
Tansu's memory engine spends time proportional to the size of a partition's log
(its number of record batches and bytes) to serve a fetch, and when that exceeds the
request's ``max_wait_ms`` it answers with an *empty* record set instead of the data
it has (see docs/ARCHITECTURE.md, "Delivery and failure").  With a 10 ms wait the
single-partition ``cx.resolve.v1`` stopped being served after ~30,000 one-record
batches: position 30,482, high watermark 46,220, every fetch empty, no error -- the
identity stage starved while ingest went on.  So the wait is chosen per request:

* no fetched partition has known lag (position == high watermark): ``CX_FETCH_WAIT_MS``
  (an idle poll; new data is picked up within that time);
* some partition in the request lags (high watermark > position): :data:`LAGGING_FETCH_WAIT_MS`.
  A broker answers such a fetch as soon as it has read the data (Kafka at once, Tansu
  after its scan), so the long wait costs no latency and lets a slow scan finish.

It is registered as the ``cxkafka://`` broker scheme.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

#: Fetch wait (ms) for a request that includes a partition with data to deliver (Faust's
#: own default).  Bounds how slow a broker may be to read a lagging partition and still
#: make progress; it is not a delay: a broker answers as soon as it has the records.
LAGGING_FETCH_WAIT_MS = 1500


def lagging(fetcher: Any, assignment: Any) -> bool:
    """True if a partition the fetcher is about to fetch has records beyond its position.

    Mirrors the choice of fetchable partitions in aiokafka's ``Fetcher._get_actions_per_node``:
    a partition with buffered records not yet handed to Faust, a paused one or one without
    a position is not fetched, so its lag does not count.
    """
    buffered = fetcher._records
    for tp in assignment.tps:
        if tp in buffered:
            continue
        state = assignment.state_value(tp)
        if state.paused or not state.has_valid_position:
            continue
        if state.highwater is not None and state.highwater > state.position:
            return True
    return False


def install_lag_aware_wait(fetcher: Any, idle_ms: int, lagging_ms: int = LAGGING_FETCH_WAIT_MS) -> bool:
    """Make *fetcher* (an aiokafka ``Fetcher``) use *lagging_ms* when a fetched partition lags, else *idle_ms*.

    Hooks the method that builds each round of fetch requests (it reads ``_fetch_max_wait_ms``
    while building them).  Returns False, after setting the long wait for every request, if
    this aiokafka does not have the internals relied on: liveness first, latency second.
    """
    original: Callable[[Any], Any] | None = getattr(fetcher, "_get_actions_per_node", None)
    if original is None or not hasattr(fetcher, "_records") or not hasattr(fetcher, "_fetch_max_wait_ms"):
        log.warning("aiokafka fetcher internals changed: using a fixed %d ms fetch wait", lagging_ms)
        fetcher._fetch_max_wait_ms = lagging_ms
        return False

    def actions_per_node(assignment: Any) -> Any:
        fetcher._fetch_max_wait_ms = lagging_ms if lagging(fetcher, assignment) else idle_ms
        return original(assignment)

    lagging_ms = max(lagging_ms, idle_ms)
    fetcher._get_actions_per_node = actions_per_node
    return True


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms: ClassVar[int] = 1500

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the constructor argument here and hands it to its fetcher on start()
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer

    async def on_start(self) -> None:
        await super().on_start()  # creates and starts the aiokafka consumer (and its fetcher)
        fetcher = getattr(self._consumer, "_fetcher", None)
        if fetcher is not None:
            install_lag_aware_wait(fetcher, self.fetch_max_wait_ms)


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def use_fetch_wait(ms: int) -> str:
    """Set the idle fetch wait of every consumer this transport creates; returns the URL scheme to use."""
    ConsumerThread.fetch_max_wait_ms = int(ms)
    return "cxkafka"


TRANSPORTS.aliases["cxkafka"] = f"{__name__}:Transport"
