"""Faust's aiokafka transport with a configurable consumer fetch wait.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer.  Apache Kafka answers
a fetch as soon as data arrives, so that is only an idle-poll interval there; the
embedded broker (Tansu) holds every fetch for the full wait, which put a floor of
about 1.5 s per consumer hop under end-to-end latency (measured in
docs/PERFORMANCE.md).  This transport sets the wait from ``CX_FETCH_WAIT_MS``.

It is registered as the ``cxkafka://`` broker scheme.
"""

from __future__ import annotations

from typing import Any, ClassVar

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms: ClassVar[int] = 1500

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the constructor argument here and hands it to its fetcher on start()
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def use_fetch_wait(ms: int) -> str:
    """Set the fetch wait of every consumer this transport creates; returns the URL scheme to use."""
    ConsumerThread.fetch_max_wait_ms = int(ms)
    return "cxkafka"


TRANSPORTS.aliases["cxkafka"] = f"{__name__}:Transport"
