"""The API's producer for what desks and the chat page send: ``AdvisorEvent``s and ``InteractionEvent``s.

They go onto the engine's ordinary input topics (``cx.advisor-events.v1``,
``cx.interactions.v1``), exactly as any desktop or channel system would publish them,
so ingest validates them and the router and the context see nothing new.  A request is
answered once the broker has acknowledged the record (``acks=all``, idempotent producer).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer, TopicPartition

from cxstream.schemas.common import Record
from cxstream.streams.codecs import encode
from cxstream.streams.security import kafka_client_kwargs
from cxstream.streams.settings import Settings
from cxstream.streams.transport import IDEMPOTENT

log = logging.getLogger(__name__)


class PublishUnavailable(RuntimeError):
    """The broker did not take the record; the message says why."""


async def leader_unreachable(producer: AIOKafkaProducer, topic: str, key: bytes, timeout_s: float = 2.0) -> str | None:
    """Why a record of *key* cannot be published to *topic* now (its partition's leader does not answer), or None.

    Asked before a record is handed to the producer: during a broker outage the producer
    would keep the record and deliver it once the broker is back, after the API had answered
    503, so a request the client was told failed (and may send again) would still take
    effect.  Refused here, nothing is left behind.
    """
    cluster = producer.client.cluster
    try:
        await asyncio.wait_for(producer.client._wait_on_metadata(topic), timeout_s)
        partition = producer._partition(topic, None, None, None, key, None)
    except Exception as exc:
        return f"no metadata for {topic}: {type(exc).__name__}"
    leader = cluster.leader_for_partition(TopicPartition(topic, partition))
    if leader is None or leader < 0:
        return f"{topic}[{partition}] has no leader"
    try:
        ready = await asyncio.wait_for(producer.client.ready(leader), timeout_s)
    except Exception as exc:
        return f"the broker leading {topic}[{partition}] does not answer: {type(exc).__name__}"
    return None if ready else f"the broker leading {topic}[{partition}] does not answer"


class KafkaPublisher:
    """An aiokafka producer started on first use and started again after a failure."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.broker_url = settings.broker_url
        self.prefix = settings.topic_prefix
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.broker_url, linger_ms=0, **IDEMPOTENT, **kafka_client_kwargs(self.settings)
                )
                try:
                    await asyncio.wait_for(producer.start(), self.timeout_s)
                except Exception as exc:
                    await producer.stop()
                    raise PublishUnavailable(f"the broker at {self.broker_url} did not answer: {type(exc).__name__}") from exc
                self._producer = producer
            return self._producer

    async def send(self, topic: str, key: str, record: Record) -> None:
        """Publish *record* to *topic* (a catalogue name; the prefix is added) and wait for the broker's ack."""
        producer = await self._started()
        why = await leader_unreachable(producer, self.prefix + topic, key.encode())
        if why is not None:
            raise PublishUnavailable(f"nothing was published: {why}")
        try:
            await asyncio.wait_for(await producer.send(self.prefix + topic, encode(record), key=key.encode()), self.timeout_s)
        except Exception as exc:  # the broker went away just now: the producer may still deliver it when it is back
            raise PublishUnavailable(
                f"could not publish to {self.prefix + topic}: {type(exc).__name__} (it may still be published once the broker answers)"
            ) from exc

    async def stop(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
