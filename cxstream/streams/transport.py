"""Faust's aiokafka transport with idempotent producers and a configurable fetch wait (the ``cxkafka://`` scheme).

* Faust turns producer idempotence on only with ``processing_guarantee="exactly_once"``.  The
  engine runs at least once (docs/ARCHITECTURE.md, "Delivery and failure"), and an idempotent
  producer is what keeps a retried send from writing a record twice, so every Faust producer of
  the engine has it (``acks=all``, ``enable_idempotence``), as the batch stages' producer does.
* Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer.  aiokafka keeps one fetch in
  flight per broker and leaves out of it a partition whose records are still being handed over,
  so that partition's next records wait for the fetch in flight to come back: up to the full
  wait when nothing else arrives.  ``CX_FAUST_FETCH_WAIT_MS`` sets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

#: The settings every producer of the engine uses (the batch stages', Faust's, the API's, replay's).
IDEMPOTENT: Mapping[str, Any] = {"acks": "all", "enable_idempotence": True}


class Producer(faust_aiokafka.Producer):
    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), **IDEMPOTENT}


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
    Producer = Producer
    Consumer = Consumer


def scheme(fetch_wait_ms: int) -> str:
    """Set the fetch wait of every Faust consumer this transport creates; returns the URL scheme to use."""
    ConsumerThread.fetch_max_wait_ms = int(fetch_wait_ms)
    return "cxkafka"


TRANSPORTS.aliases["cxkafka"] = f"{__name__}:Transport"
