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


def outlast_outages(producer: Any, seconds: float) -> None:
    """Let *producer*'s records wait up to *seconds* for an unreachable broker instead of ``request_timeout_ms`` (40 s).

    An idempotent aiokafka producer retries a failed produce request until it succeeds, but a
    record whose partition has no known leader fails with ``NotLeaderForPartitionError`` once
    it is older than the batch lifetime, which aiokafka sets to the request timeout.  A broker
    stopped for 30 s and started again answers its first metadata requests without leaders,
    when the records produced before the outage were already 40 s old: the stages' loop then
    died and the engine stopped (found by ``tests/integration/test_outages.py``).  Only the
    lifetime of waiting records is lengthened; requests to a broker that answers keep their
    timeout.
    """
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is None or not hasattr(accumulator, "_batch_ttl"):
        raise RuntimeError("this aiokafka version keeps no batch lifetime where cxstream expects it (transport.outlast_outages)")
    accumulator._batch_ttl = float(seconds)


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
