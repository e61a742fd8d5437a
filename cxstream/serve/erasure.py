"""The API's side of erasure (GDPR art. 17 / CCPA): publish a request, read its progress.

``POST /customers/{id}/erase`` validates and normalises the identifiers itself (as ingest
does) and publishes the request straight onto ``cx.resolve.v1`` as a ``ResolveRequest``
with source ``api`` (one hop less than through ``cx.outcomes.v1``); the identity and
context agents do the erasing (``cxstream/agents/erasure.py`` describes the whole path).
Progress is the Redis hash ``cx:erasure:{request id}``, its times all wall-clock seconds:

* ``requested_at``: when the request was made, the request's own ``occurred_at`` (the API's
  clock for ``POST .../erase``; for a request published on ``cx.outcomes.v1`` the identity
  stage's clock when it handled it, as nothing recorded it before);
* ``accepted_at`` (API requests only): when the API accepted it, just before publishing it,
  never before ``requested_at``;
* ``started_at``: when the identity stage handled it (``parts``: contexts to erase);
* ``done`` and ``completed_at``: the context stage's progress.

The API writes the first two, the agents the others (``cxstream.agents.erasure.ErasureStatus``).

Only schemas and streams are imported here: the API never imports the agents.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from cxstream.schemas import Identifiers, OutcomeEvent, ResolveRequest
from cxstream.serve.publish import leader_unreachable
from cxstream.streams import topics as t
from cxstream.streams.codecs import encode
from cxstream.streams.keys import erasure_key
from cxstream.streams.security import kafka_client_kwargs
from cxstream.streams.settings import Settings
from cxstream.streams.transport import IDEMPOTENT

log = logging.getLogger(__name__)

#: Erasure progress records are kept this long (they hold no personal data).
STATUS_TTL_S = 30 * 86400

#: Sends (key, value) to ``cx.resolve.v1``; may return a delivery future, which is awaited.
Publish = Callable[[bytes, bytes], Awaitable[Any]]


class ErasureUnavailable(RuntimeError):
    """The request could not be published (the broker did not answer)."""


def erasure_request(customer: Identifiers, *, via: str = "api", now: float | None = None) -> OutcomeEvent:
    """A new erasure request for the customer named by *customer* (a fresh request id).

    >>> r = erasure_request(Identifiers(email="a@b.co"), now=5.0)
    >>> r.kind, r.event_id.startswith("erase-"), r.attributes
    ('erasure_requested', True, {'requested_via': 'api'})
    """
    return OutcomeEvent(
        event_id=f"erase-{uuid.uuid4().hex}",
        occurred_at=time.time() if now is None else now,
        customer=customer,
        kind="erasure_requested",
        attributes={"requested_via": via},
    )


async def erasure_status(client: aioredis.Redis, request_id: str) -> dict[str, float | int | str] | None:
    """The progress of one request as ``GET /erasures/{request_id}`` answers it; None if unknown."""
    raw = await client.hgetall(erasure_key(request_id))
    if not raw:
        return None
    fields = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
    out: dict[str, float | int | str] = {"request_id": request_id}
    for name in ("parts", "done"):
        if name in fields:
            out[name] = int(fields[name])
    for name in ("requested_at", "accepted_at", "started_at", "completed_at"):
        if name in fields:
            out[name] = fields[name]
    out["status"] = "completed" if "completed_at" in fields else "pending"
    if "completed_at" in fields and "accepted_at" in fields:
        out["took_ms"] = round((fields["completed_at"] - fields["accepted_at"]) * 1000, 1)
    return out


class ErasureRequests:
    """Publishes the API's erasure requests (through *publish*) and marks them accepted in Redis."""

    def __init__(self, publish: Publish, client: aioredis.Redis) -> None:
        self._publish = publish
        self.client = client

    async def submit(self, customer: Identifiers) -> OutcomeEvent:
        request = erasure_request(customer)
        key = erasure_key(request.event_id)
        # One clock (this process's) for both, the request's own time first: accepted >= requested even if
        # the wall clock steps back; the engine's stages only add started_at/completed_at (hsetnx requested_at).
        accepted_at = max(time.time(), request.occurred_at)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"requested_at": request.occurred_at, "accepted_at": accepted_at})
            pipe.expire(key, STATUS_TTL_S)
            await pipe.execute()
        sent = await self._publish(request.event_id.encode(), encode(ResolveRequest(event=request, source="api")))
        if inspect.isawaitable(sent):
            await sent  # 202 means the request is on the topic, not just in a buffer
        return request


class KafkaErasurePublisher:
    """An aiokafka producer for ``{prefix}cx.resolve.v1``, started lazily and restarted after a failure.

    The API answers lookups whether or not the broker is up; only an erasure request needs it.
    """

    def __init__(self, settings: Settings, start_timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.broker_url = settings.broker_url
        self.topic = settings.topic_prefix + t.RESOLVE.name
        self.start_timeout_s = start_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.broker_url, linger_ms=0, **IDEMPOTENT, **kafka_client_kwargs(self.settings)
                )
                try:
                    await asyncio.wait_for(producer.start(), self.start_timeout_s)
                except Exception as exc:
                    await producer.stop()
                    raise ErasureUnavailable(f"the broker at {self.broker_url} did not answer: {type(exc).__name__}") from exc
                self._producer = producer
            return self._producer

    async def start(self) -> None:
        """Connect now (best effort): a failure is logged, the next request tries again."""
        try:
            await self._started()
        except ErasureUnavailable as exc:
            log.warning("erasure producer: %s; will retry on the first erasure request", exc)

    async def __call__(self, key: bytes, value: bytes) -> None:
        producer = await self._started()
        why = await leader_unreachable(producer, self.topic, key)
        if why is not None:
            raise ErasureUnavailable(f"the erasure request was not published: {why}")
        try:
            await asyncio.wait_for(await producer.send(self.topic, value, key=key), self.start_timeout_s)
        except Exception as exc:
            raise ErasureUnavailable(f"could not publish to {self.topic}: {type(exc).__name__}") from exc

    async def stop(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
