"""Topic administration: create the catalogue's topics with the configured partition counts."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from cxstream.streams.settings import Settings
from cxstream.streams.topics import CATALOGUE, TopicSpec

log = logging.getLogger(__name__)


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
    wanted = [(prefix + s.name, s.partitions(settings), s.compacted) for s in specs]
    return await ensure_named_topics(bootstrap, wanted, settings.replication, timeout=timeout)


async def ensure_named_topics(
    bootstrap: str, topics: list[tuple[str, int, bool]], replication: int, *, timeout: float = 30.0
) -> list[str]:
    """Create the (name, partitions, compacted) topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
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
                topic_configs={"cleanup.policy": "compact"} if compacted else {},
            )
            for name, partitions, compacted in topics
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
