"""Erasure (GDPR art. 17 / CCPA deletion): request, progress and audit trail.

An erasure request is an ``OutcomeEvent`` of kind ``erasure_requested``, published on
``cx.outcomes.v1`` by a business system, or by ``POST /customers/{id}/erase`` (which
validates it itself and publishes it straight onto ``cx.resolve.v1``).
It travels like every customer event (ingest -> identity -> context), so it is ordered
with the customer's other events:

1. **identity** resolves the request's identifiers to every canonical customer they name
   (with the customers merged into them), deletes the identity links (tombstones in the
   ``identity`` changelog), keeps hashed erasure markers only, deletes the Redis index
   keys at once, writes ``erasure_requested`` to ``cx.audit.v1`` and sends one
   ``EraseContext`` per customer id to its context partition;
2. **context** deletes the context (tombstone in the ``customer_context`` changelog), its
   Redis copy, any alias left by a merge, keeps a hashed marker so that late records
   (a router assignment, a merge hand-off in flight) cannot resurrect it, and writes
   ``erasure_completed`` to ``cx.audit.v1``.

Progress is in Redis, hash ``cx:erasure:{request id}`` (``GET /erasures/{request id}``):
``requested_at`` (the API's, or the identity stage's when nothing recorded it before), ``accepted_at``
(API requests), ``started_at`` (identity), ``parts`` (contexts to erase), ``done``, ``completed_at``
(``cxstream/serve/erasure.py`` says which clock each comes from).  Erasing
again is harmless: the second request finds nothing and is audited as such.
"""

from __future__ import annotations

import hashlib
import time

import redis.asyncio as aioredis

from cxstream.schemas import AuditRecord
from cxstream.schemas.identity import AuditAction
from cxstream.streams.keys import erasure_key

#: Erasure progress records are kept this long (they hold no personal data).
STATUS_TTL_S = 30 * 86400


def audit_record(
    action: AuditAction,
    request_id: str,
    at: float,
    agent: str,
    subjects: list[str],
    *,
    parts: int = 0,
    part: int = 0,
    detail: str = "",
) -> AuditRecord:
    """An audit record with a deterministic id (the same action on the same request gives the same id).

    >>> r = audit_record("erasure_completed", "erase-1", 10.0, "context", ["customer:ab"], part=1, parts=2)
    >>> r.audit_id, r.part, r.parts
    ('audit-e5c3ffd3cc9d5da8', 1, 2)
    """
    audit_id = "audit-" + hashlib.sha256(f"{action}|{request_id}|{part}".encode()).hexdigest()[:16]
    return AuditRecord(
        audit_id=audit_id, action=action, request_id=request_id, at=at, processed_at=time.time(), agent=agent,
        subjects=subjects, parts=parts, part=part, detail=detail,
    )


class ErasureStatus:
    """The Redis hash that tracks one request's progress."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def accepted(self, request_id: str, at: float) -> None:
        key = erasure_key(request_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"accepted_at": at})
            pipe.expire(key, STATUS_TTL_S)
            await pipe.execute()

    async def requested(self, request_id: str, parts: int) -> None:
        key = erasure_key(request_id)
        now = time.time()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"parts": parts, "started_at": now})
            pipe.hsetnx(key, "requested_at", now)  # the API's time of the request, when it made it, stays
            pipe.hsetnx(key, "done", 0)
            if parts == 0:
                pipe.hset(key, "completed_at", now)
            pipe.expire(key, STATUS_TTL_S)
            await pipe.execute()

    async def part_done(self, request_id: str, parts: int) -> bool:
        """Count one erased context; True when it was the last one."""
        key = erasure_key(request_id)
        done = int(await self.client.hincrby(key, "done", 1))
        if done >= parts:
            await self.client.hset(key, "completed_at", time.time())
        await self.client.expire(key, STATUS_TTL_S)
        return done >= parts
