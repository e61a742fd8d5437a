"""Identity: one total order of customer events -> canonical customer ids, links, merges, erasures.

A batch stage (:mod:`cxstream.streams.batch`) on ``cx.resolve.v1`` (ONE partition), the
only writer of the ``identity`` table (one partition too).  For each event the pure :class:`cxstream.context.resolver.Resolver`
decides the canonical customer; this module then

* publishes the decisions (``IdentityLinked``, ``CustomersMerged``, ``LinkRefused``) on
  ``cx.identity.v1`` (identifiers as fingerprints only),
* sends each merge to the absorbed customer's partition of ``cx.customer-events.v1``
  (``MergeContext``; the context stage hands that context over to the survivor),
* re-keys the event by its canonical id onto ``cx.customer-events.v1``,
* keeps the Redis identifier index (``cx:id:{kind}:{value}``, ``cx:alias:{id}``) up to
  date through the write-behind writer,
* and handles erasure requests (``OutcomeEvent`` kind ``erasure_requested``): identity
  links deleted (tombstones), Redis index keys deleted at once, ``EraseContext`` to each
  affected context partition, ``IdentityErased`` and an audit record.

One partition gives the total order that makes merges replay-stable; it also caps this
stage at one worker's throughput (see docs/IDENTITY.md): the per-event work is a few
dictionary lookups and one send.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cxstream.agents.erasure import ErasureStatus, audit_record
from cxstream.context.resolver import Resolver, hashed_id
from cxstream.schemas import (
    EraseContext,
    IdentityOutput,
    InteractionEvent,
    OutcomeEvent,
    ResolveRequest,
)
from cxstream.streams import metrics
from cxstream.streams import topics as t
from cxstream.streams.batch import BatchRuntime, BatchStage, Record
from cxstream.streams.codecs import InvalidInput, decode, encode
from cxstream.streams.keys import index_key

if TYPE_CHECKING:
    from cxstream.agents.context import RedisContextWriter

log = logging.getLogger(__name__)


def _record_key(record: IdentityOutput) -> bytes:
    cid = getattr(record, "survivor_id", None) or getattr(record, "customer_id", None) or getattr(record, "event_id", "")
    return str(cid).encode()


def no_usable_identifier_key(ev: InteractionEvent | OutcomeEvent) -> str:
    """Context key of an event whose identifiers were all quarantined: one bucket per event source.

    >>> from cxstream.schemas import Identifiers
    >>> no_usable_identifier_key(InteractionEvent(event_id="e", occurred_at=1, channel="voice", kind="message",
    ...     customer=Identifiers(phone="+442079460000"), contact_id="k1"))
    'anon-5582b5e8cdc496d2'
    """
    seed = f"contact:{ev.contact_id}" if ev.contact_id else f"event:{ev.event_id}"
    return "anon-" + hashlib.sha256(seed.encode()).hexdigest()[:16]


def stage(runtime: BatchRuntime, writer: RedisContextWriter) -> BatchStage:
    """The identity stage and its table (``identity``, one partition).

    The table maps identifier -> canonical customer, customers, aliases and hashed erasure
    markers; only this stage writes it.  *writer* is the engine's Redis write-behind.
    """
    table = runtime.table("identity", 1)
    # Not local: this stage reads cx.resolve.v1 from the log, in log order, never a record that is
    # not yet in it.  Its decisions (which customer, which merge) depend on the order of events
    # from several ingest partitions; handed a record before it is produced, it could act on an
    # order that a kill -9 then erases (the record comes back through ingest's reprocessing,
    # possibly after others), while its outputs (a merge to the contexts, Redis's index) survive.
    st = runtime.stage("identity", [t.RESOLVE], tables=[table])
    identity_out, audit = st.output(runtime.topic(t.IDENTITY)), st.output(runtime.topic(t.AUDIT))
    customer_events = st.output(runtime.topic(t.CUSTOMER_EVENTS))
    resolver = Resolver(table)

    def resync(partition: int, restored: Mapping[bytes, bytes]) -> None:
        """Write the whole identifier index to Redis again (a crash may have cut its write-behind short)."""
        table.partition = partition  # the resolver reads the table's current partition (there is one)
        for (kind, value), cid in resolver.index_entries():
            writer.mark_key(index_key(kind, value), cid.encode())

    table.on_restored = resync

    def resync_all() -> None:
        for partition, held in table.held():
            resync(partition, held)

    writer.resyncs.append(resync_all)
    status = ErasureStatus(writer.client)
    source_name = runtime.topic(t.RESOLVE)

    async def erase(ev: OutcomeEvent) -> None:
        ids = ev.customer.present()
        erasure = resolver.erase(ids, request_id=ev.event_id, at=ev.occurred_at)
        targets = [cid for cid, absorbed in erasure.customers for cid in (cid, *absorbed)]
        # Index keys go now, not write-behind: lookups by identifier must fail from here on.
        # If Redis is down they are queued for deletion (retried by the flush timer); the
        # table, the source of truth, has already forgotten them.
        keys = [index_key(kind, value) for kind, value in erasure.index]
        try:
            await writer.delete(keys)
        except Exception as exc:
            log.warning("erasure %s: redis delete failed (%r); queued for retry", ev.event_id, exc)
            for k in keys:
                writer.mark_key(k, None)
        for rec in erasure.records:
            await identity_out.send(key=rec.customer_id.encode(), value=encode(rec))
        detail = "already erased" if erasure.already_erased else ("no customer found" if not targets else "")
        await audit.send(
            key=ev.event_id.encode(),
            value=encode(audit_record("erasure_requested", ev.event_id, ev.occurred_at, "identity", erasure.subjects, parts=len(targets), detail=detail)),
        )
        try:
            await status.requested(ev.event_id, len(targets))
        except Exception as exc:  # progress reporting only
            log.warning("erasure %s: cannot record progress in redis: %r", ev.event_id, exc)
        now = time.time()
        for i, cid in enumerate(targets, start=1):
            cmd = EraseContext(request_id=ev.event_id, customer_id=cid, at=ev.occurred_at, part=i, parts=len(targets), requested_at=now)
            await customer_events.send(key=cid.encode(), value=encode(cmd))
        metrics.CONTEXT_UPDATES.labels("ErasureRequested").inc()
        log.info("erasure %s: %d customer context(s) to erase", ev.event_id, len(targets))

    async def handle(rec: Record) -> None:
        req: ResolveRequest = decode(rec.value, ResolveRequest)
        ev = req.event
        if isinstance(ev, OutcomeEvent) and ev.kind == "erasure_requested":
            await erase(ev)
            return
        ids = ev.customer.present()
        if not ids:
            raise InvalidInput("no_identifier", "a resolve request without identifiers")
        res = resolver.resolve(ids, event_id=ev.event_id, at=ev.occurred_at, refused=req.refused)
        if res.suppressed_by is not None:
            metrics.EVENTS_IN.labels(source_name, "erased_suppressed").inc()
            await audit.send(
                key=ev.event_id.encode(),
                value=encode(audit_record("erased_record_suppressed", ev.event_id, ev.occurred_at, "identity", [res.suppressed_by],
                                          detail="the event predates an erasure of one of its identifiers")),
            )
            return
        for merge in res.merges:
            await customer_events.send(key=merge.absorbed_id.encode(), value=encode(merge))
            metrics.CONTEXT_UPDATES.labels("CustomersMerged").inc()
        for record in res.records:
            await identity_out.send(key=_record_key(record), value=encode(record))
        for (kind, value), cid in res.index.items():  # cid may be keys.SHARED: lookups then answer 409
            writer.mark_key(index_key(kind, value), cid.encode() if cid is not None else None)
        key = res.customer_id if res.customer_id is not None else no_usable_identifier_key(ev)
        await customer_events.send(key=key.encode(), value=encode(ev))

    st.handler = handle
    return st


__all__ = ["hashed_id", "stage"]
