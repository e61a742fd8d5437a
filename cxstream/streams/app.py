"""The Faust app factory and the app-bound topics of the catalogue.

Values travel as raw bytes and are decoded by :mod:`cxstream.streams.codecs`
(msgspec): a bad payload then reaches our code, which dead-letters it with its
coordinates, instead of failing inside Faust's deserialiser.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TP

from cxstream.streams import topics as t
from cxstream.streams.security import faust_broker_credentials
from cxstream.streams.settings import Settings
from cxstream.streams.transport import scheme


def create_app(settings: Settings, broker_url: str, *, datadir: str = "faust") -> faust.App:
    """A Faust app configured from *settings*, talking to *broker_url* (``host:port[,host:port]``), its data
    under ``CX_DATA_DIR/``*datadir*."""
    url_scheme = scheme(settings.faust_fetch_wait_ms)
    brokers = ";".join(f"{url_scheme}://{b.strip()}" for b in broker_url.split(",") if b.strip())
    return faust.App(
        settings.app_id,
        broker=brokers,
        broker_credentials=faust_broker_credentials(settings),  # CX_KAFKA_SECURITY_PROTOCOL and the rest
        store=settings.table_store,
        datadir=str(settings.path(datadir)),
        web_enabled=False,  # our own HTTP API is cxstream.serve
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",  # with idempotent producers and deterministic ids (transport.py)
        broker_commit_every=1000,
        broker_commit_interval=0.5,
        stream_buffer_maxsize=16384,
        producer_linger_ms=1,
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=30.0,
        # A group (re)join waits up to the rebalance timeout for members to rejoin: keep it
        # short so a new or restarted worker starts consuming in seconds, not a minute.
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.rebalance_timeout_s / 4),
        logging_config=None,
    )


@dataclass(frozen=True)
class Topics:
    """The catalogue's topics bound to one app."""

    interactions: faust.TopicT
    advisor_events: faust.TopicT
    outcomes: faust.TopicT
    customer_events: faust.TopicT
    routing: faust.TopicT
    assignments: faust.TopicT
    routing_events: faust.TopicT
    outreach: faust.TopicT
    dead_letter: faust.TopicT


def bind_topics(app: faust.App, settings: Settings) -> Topics:
    """Declare every catalogue topic on *app* with the configured partition counts."""

    def topic(spec: t.TopicSpec) -> faust.TopicT:
        return bind_topic(app, settings, spec)

    return Topics(
        interactions=topic(t.INTERACTIONS),
        advisor_events=topic(t.ADVISOR_EVENTS),
        outcomes=topic(t.OUTCOMES),
        customer_events=topic(t.CUSTOMER_EVENTS),
        routing=topic(t.ROUTING),
        assignments=topic(t.ASSIGNMENTS),
        routing_events=topic(t.ROUTING_EVENTS),
        outreach=topic(t.OUTREACH),
        dead_letter=topic(t.DEAD_LETTER),
    )


def coordinates(event: faust.EventT) -> tuple[str, int, int]:
    """(topic, partition, offset) of the message behind a Faust event."""
    msg = event.message
    tp: TP = msg.tp
    return tp.topic, tp.partition, msg.offset


def bind_topic(app: faust.App, settings: Settings, spec: t.TopicSpec) -> faust.TopicT:
    """One catalogue topic bound to *app* (raw bytes, configured prefix and partition count)."""
    return app.topic(
        settings.topic_prefix + spec.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=spec.partitions(settings),
        replicas=settings.replication,
        compacting=spec.compacted,
    )
