"""Context: the per-customer table, its Redis copy, and the contacts it hands to the router.

Consumes ``cx.customer-events.v1`` (key = canonical customer id) and is the only
writer of the ``customer_context`` table.  Each update is a pure function
(:mod:`cxstream.context.update`); this module only reads and writes state around it.
"""

from __future__ import annotations

import asyncio
import logging
import time

import faust
import redis.asyncio as aioredis

from cxstream.context import ContextLimits, apply_assignment, apply_interaction, apply_outcome
from cxstream.context.model import CustomerContext, decode_context, encode_context
from cxstream.context.redact import redact
from cxstream.schemas import Assignment, ContactRequest, ContactUpdate, InteractionEvent
from cxstream.streams import metrics
from cxstream.streams.app import Topics
from cxstream.streams.codecs import CustomerEvent, decode, encode
from cxstream.streams.deadletter import process_events
from cxstream.streams.keys import context_key
from cxstream.streams.settings import Settings

log = logging.getLogger(__name__)

class RedisContextWriter:
    """Write-behind of context copies: the latest version of each dirty customer, in batches.

    A failed flush keeps the batch (newer versions win) and retries on the next tick;
    the table stays the source of truth.
    """

    def __init__(self, client: aioredis.Redis, ttl_s: int, max_batch: int = 2000) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.max_batch = max_batch
        self._dirty: dict[str, bytes] = {}
        self._lock = asyncio.Lock()

    def mark(self, customer_id: str, value: bytes) -> None:
        self._dirty[customer_id] = value

    @property
    def pending(self) -> int:
        return len(self._dirty)

    async def flush(self) -> int:
        async with self._lock:
            written = 0
            while self._dirty:
                batch = dict(list(self._dirty.items())[: self.max_batch])
                for k in batch:
                    del self._dirty[k]
                started = time.perf_counter()
                try:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for cid, value in batch.items():
                            pipe.set(context_key(cid), value, ex=self.ttl_s)
                        await pipe.execute()
                except Exception as exc:  # connection errors of any kind: keep and retry
                    metrics.REDIS_ERRORS.inc()
                    log.warning("redis flush of %d contexts failed, will retry: %r", len(batch), exc)
                    for k, v in batch.items():
                        self._dirty.setdefault(k, v)
                    return written
                metrics.REDIS_FLUSH_SECONDS.observe(time.perf_counter() - started)
                metrics.REDIS_FLUSHED.inc(len(batch))
                written += len(batch)
            return written


def register(app: faust.App, topics: Topics, settings: Settings, writer: RedisContextWriter) -> faust.TableT:
    """Declare the context table and agent on *app*; returns the table."""
    table = app.Table(
        "customer_context",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        help="canonical customer id -> CustomerContext (JSON); written only by cxstream.agents.context",
    )
    limits = ContextLimits(
        max_interactions=settings.context_max_interactions, max_event_ids=settings.dedupe_ids_per_customer
    )

    async def handle(event: faust.EventT) -> None:
        key: bytes = event.key
        record = decode(event.value, CustomerEvent)
        customer_id = key.decode()
        old_raw = table.get(key)
        old: CustomerContext | None = decode_context(old_raw) if old_raw else None
        routing: list[ContactRequest | ContactUpdate] = []
        if isinstance(record, InteractionEvent):
            new, fx = apply_interaction(
                old, record, customer_id, limits,
                identifiers=record.customer.present(),
                redacted_text=redact(record.text) if record.text else None,
            )
            duplicate, routing = fx.duplicate, fx.routing
        elif isinstance(record, Assignment):
            new = apply_assignment(old, record, limits)
            duplicate = new is old
        else:
            new, duplicate = apply_outcome(old, record, customer_id, limits, identifiers=record.customer.present())
        if duplicate:
            metrics.DUPLICATES.labels("context").inc()
            return
        value = encode_context(new)
        table[key] = value
        writer.mark(customer_id, value)
        metrics.CONTEXT_UPDATES.labels(type(record).__name__).inc()
        for r in routing:
            await topics.routing.send(key=r.routing_group.encode(), value=encode(r))

    async def context(stream: faust.StreamT[bytes]) -> None:
        await process_events(stream, "context", topics.dead_letter, handle)

    app.agent(topics.customer_events, name="cxstream.context")(context)

    @app.timer(settings.redis_flush_ms / 1000.0, name="cxstream.context.redis_flush")
    async def flush_to_redis() -> None:
        await writer.flush()

    return table
