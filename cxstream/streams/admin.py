"""Topic administration: create the catalogue's topics with the configured partition counts."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from cxstream.streams.security import kafka_client_kwargs
from cxstream.streams.settings import Settings
from cxstream.streams.topics import CATALOGUE, TopicSpec

log = logging.getLogger(__name__)


async def partitions_of(
    client: AIOKafkaConsumer | AIOKafkaProducer, topic: str, *, timeout: float = 10.0
) -> list[TopicPartition]:
    """The partitions of *topic*, from a metadata request that names it; waits up to *timeout* for it to exist.

    A client's ``partitions_for_topic()`` answers from the metadata it already has, and a
    client knows only the topics it asked about: Apache Kafka answers the bootstrap request
    (which names no topic) with none.  So right after ``start()`` it returns None on a real
    broker for a topic that exists.  Every caller that needs a topic's partitions asks here.
    Raises :class:`TimeoutError` if the topic does not exist after *timeout* seconds.
    """
    kafka = client.client if isinstance(client, AIOKafkaProducer) else client._client
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    kafka.add_topic(topic)  # tracked from now on: later metadata refreshes include it
    while True:
        parts = kafka.cluster.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        if loop.time() > deadline:
            raise TimeoutError(f"topic {topic} does not exist (waited {timeout:.0f} s)")
        await kafka.force_metadata_update()
        if not kafka.cluster.partitions_for_topic(topic):
            await asyncio.sleep(0.1)


async def ensure_topics(
    bootstrap: str,
    settings: Settings,
    specs: tuple[TopicSpec, ...] = CATALOGUE,
    *,
    prefix: str = "",
    timeout: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    *prefix* is prepended to every name (tests give each run its own topics).
    Retries the connection until *timeout*, since a broker may still be starting.
    """
    wanted = [(prefix + s.name, s.partitions(settings), s.configs(settings)) for s in specs]
    return await ensure_named_topics(bootstrap, wanted, settings, timeout=timeout)


async def ensure_named_topics(
    bootstrap: str, topics: list[tuple[str, int, dict[str, str]]], settings: Settings, *, timeout: float = 30.0
) -> list[str]:
    """Create the (name, partitions, topic configs) topics that do not exist yet, with ``settings.replication``
    replicas; returns the names created.

    A topic that exists keeps the configs it has (an operator's changes are not undone).
    """
    replication = settings.replication
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **kafka_client_kwargs(settings))
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=replication,
                topic_configs=configs,
            )
            for name, partitions, configs in topics
            if name not in existing
        ]
        created = []
        for topic in wanted:  # one at a time: a concurrent creator must not fail the rest
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        await admin.close()
