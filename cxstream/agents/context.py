"""Context: the per-customer table, its Redis copy, and the contacts it hands to the router.

A batch stage (:mod:`cxstream.streams.batch`) on ``cx.customer-events.v1`` (key =
canonical customer id), the only writer of the ``customer_context`` table.  Each update is a pure function
(:mod:`cxstream.context.update`); this module only reads and writes state around it.

Besides customer events and assignments it applies the identity stage's commands:

* ``MergeContext`` (on the absorbed customer's partition): send the context to the
  survivor as a ``ContextHandoff``, delete it (tombstone), leave a forwarding alias
  (``~m:{id}``) so that late records for the old id (a router assignment) follow it;
* ``ContextHandoff`` (on the survivor's partition): fold the absorbed context in;
* ``EraseContext``: delete the context, its alias and Redis copy, keep a hashed marker
  (``~e:{hash}``) so that nothing late recreates it, and audit the completion.

Table keys starting with ``~`` are these markers; canonical ids never start with ``~``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping

import faust
import msgspec
import redis.asyncio as aioredis

from cxstream.agents.erasure import ErasureStatus, audit_record
from cxstream.agents.outreach import OutreachStage
from cxstream.agents.outreach import config_from as outreach_config
from cxstream.agents.outreach import state_key as outreach_state_key
from cxstream.agents.scoring import Scorer, features_of, with_health
from cxstream.context import ContextLimits, apply_assignment, apply_interaction, apply_outcome, merge_contexts
from cxstream.context.model import CustomerContext, context_json, decode_context, decode_context_or_none, encode_context
from cxstream.context.redact import redact
from cxstream.context.resolver import hashed_id
from cxstream.context.update import apply_disposition, apply_rejection, set_scores
from cxstream.schemas import (
    Assignment,
    ContactRequest,
    ContactUpdate,
    ContextHandoff,
    EraseContext,
    InteractionEvent,
    MergeContext,
    OutcomeEvent,
    ResolveRequest,
    RoutingEvent,
)
from cxstream.schemas.learning import ChurnLabel, IntentLabel, KnowledgeLabel, NBALabel
from cxstream.serve.pipelined import PipelinedRedis
from cxstream.streams import metrics
from cxstream.streams import topics as t
from cxstream.streams.batch import BatchRuntime, BatchStage, Record
from cxstream.streams.codecs import InvalidInput, decode, encode
from cxstream.streams.keys import context_key
from cxstream.streams.settings import Settings

log = logging.getLogger(__name__)

#: Everything ``cx.customer-events.v1`` carries.
ContextInput = InteractionEvent | OutcomeEvent | Assignment | RoutingEvent | MergeContext | ContextHandoff | EraseContext


def moved_key(customer_id: str) -> bytes:
    """Table key of the forwarding alias a merged-away customer leaves behind."""
    return f"~m:{customer_id}".encode()


def erased_key(customer_id: str) -> bytes:
    """Table key of the marker an erased customer leaves behind (hashed: nothing readable)."""
    return f"~e:{hashed_id(customer_id)}".encode()


class RedisContextWriter:
    """Write-behind of Redis copies (contexts, identifier index): the latest value of each dirty key, in batches.

    The tables stay the source of truth (their changelogs in Kafka); Redis holds copies.  A
    failed flush keeps the batch (newer versions win) and retries with a backoff (0.1 s doubling
    to :attr:`MAX_BACKOFF_S`) while Redis is unreachable, so an outage costs a few attempts a
    second, not ten, and the log says so once when it starts, every :attr:`REPORT_EVERY_S` while
    it lasts, and once when it ends.  Pending copies are at most one per key (the latest value);
    past *max_pending* of them the writes are let go (``cx_redis_writes_dropped_total``) and the
    owners' *resync* callbacks mark every copy of their tables again once Redis answers; deletes
    (erasures, merges) are always kept.  :meth:`delete` is immediate and ordered after any flush
    in progress, so an erased key cannot be written back by it (if it fails, its caller queues it
    with :meth:`mark_key`: the next flush deletes it).
    """

    MAX_BACKOFF_S = 2.0
    REPORT_EVERY_S = 30.0

    def __init__(self, client: aioredis.Redis, ttl_s: int, max_batch: int = 2000,
                 pipelined: PipelinedRedis | None = None, max_pending: int = 500_000) -> None:
        self.client = client
        self.pipelined = pipelined  # the flushes' connection when given (hiredis, one write per batch); else redis-py
        self.ttl_s = ttl_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._dirty: dict[str, bytes | None] = {}  # redis key -> value, None = delete
        self._forgotten: set[str] = set()  # keys forgotten while a flush of them was in flight: not retried
        self._lock = asyncio.Lock()
        #: Called (no argument) to mark every copy of the caller's table again, after pending writes were let go.
        self.resyncs: list[Callable[[], None]] = []
        self._resync_due = False
        self.down_since: float | None = None  # monotonic time of the first failure of the outage in progress
        self._retry_at = 0.0
        self._backoff = 0.0
        self._reported = 0.0
        metrics.REDIS_UP.set(1)
        metrics.REDIS_PENDING.set(0)

    def mark(self, customer_id: str, value: bytes) -> None:
        """Schedule a customer's context copy."""
        self.mark_key(context_key(customer_id), value)

    def mark_key(self, key: str, value: bytes | None) -> None:
        """Schedule any key (None: delete it)."""
        self._dirty[key] = value
        if len(self._dirty) > self.max_pending and self.down_since is not None:
            self._let_go()

    def _let_go(self) -> None:
        """Past the bound during an outage: keep the deletes, drop the writes (rewritten from the tables later)."""
        before = len(self._dirty)
        self._dirty = {k: v for k, v in self._dirty.items() if v is None}
        dropped = before - len(self._dirty)
        metrics.REDIS_DROPPED.inc(dropped)
        if not self._resync_due:
            log.warning(
                "redis write-behind: %d pending copies past the bound (CX_REDIS_MAX_PENDING=%d) let go; "
                "every copy is rewritten from the tables once Redis answers", dropped, self.max_pending,
            )
        self._resync_due = True

    def forget(self, keys: Iterable[str]) -> None:
        """Drop pending writes of *keys*, and do not retry them if a flush of them in flight fails.

        For a partition given up in a rebalance: its next owner restores it from the changelog and
        writes every copy again (``resync``); a late retry of ours would overwrite a newer copy
        with an older one.  Pending deletes are kept: the next owner's resync writes the copies its
        table holds and deletes none, so a forgotten delete (a merged-away or erased customer)
        would leave its copy in Redis for good.
        """
        for k in keys:
            if self._dirty.get(k, b"") is not None:
                self._dirty.pop(k, None)
                self._forgotten.add(k)

    @property
    def pending(self) -> int:
        return len(self._dirty)

    @property
    def up(self) -> bool:
        """False from a failed write until one succeeds."""
        return self.down_since is None

    async def delete(self, keys: Iterable[str]) -> None:
        """Delete *keys* now (and forget pending writes of them); raises if Redis is unreachable."""
        keys = list(keys)
        if not keys:
            return
        async with self._lock:
            for k in keys:
                self._dirty.pop(k, None)
            if self.pipelined is not None:
                # on the flushes' connection: a write of a flush that timed out is still ahead of it there,
                # so it cannot land after the delete and bring an erased copy back
                await self.pipelined.execute_many([("DEL", *keys)])
            else:
                await self.client.delete(*keys)

    async def flush(self) -> int:
        """Write what is pending (once the backoff after a failure has passed); returns the copies written."""
        if self.down_since is not None and time.monotonic() < self._retry_at:
            metrics.REDIS_PENDING.set(len(self._dirty))
            return 0
        async with self._lock:
            written = 0
            if self._resync_due and self.down_since is None:
                self._resync()
            while self._dirty:
                batch = dict(list(self._dirty.items())[: self.max_batch])
                for k in batch:
                    del self._dirty[k]
                self._forgotten.clear()
                started = time.perf_counter()
                try:
                    await self._write(batch)
                except Exception as exc:  # connection errors of any kind: keep and retry
                    for k, v in batch.items():
                        if k not in self._forgotten:
                            self._dirty.setdefault(k, v)
                    self._forgotten.clear()
                    self._failed(exc)
                    break
                metrics.REDIS_FLUSH_SECONDS.observe(time.perf_counter() - started)
                metrics.REDIS_FLUSHED.inc(len(batch))
                written += len(batch)
                if self.down_since is not None:
                    self._recovered(written)
            metrics.REDIS_PENDING.set(len(self._dirty))
            return written

    async def _write(self, batch: dict[str, bytes | None]) -> None:
        if self.pipelined is not None:
            ttl = self.ttl_s
            await self.pipelined.execute_many(
                [("DEL", key) if value is None else ("SET", key, value, "EX", ttl) for key, value in batch.items()]
            )
        else:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in batch.items():
                    if value is None:
                        pipe.delete(key)
                    else:
                        pipe.set(key, value, ex=self.ttl_s)
                await pipe.execute()

    def _failed(self, exc: Exception) -> None:
        metrics.REDIS_ERRORS.inc()
        metrics.REDIS_UP.set(0)
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = self._reported = now
            self._backoff = 0.1
            log.warning("redis write-behind: Redis unreachable (%r); %d copies kept, retrying with backoff", exc, len(self._dirty))
        else:
            self._backoff = min(self.MAX_BACKOFF_S, self._backoff * 2)
            if now - self._reported >= self.REPORT_EVERY_S:
                self._reported = now
                log.warning(
                    "redis write-behind: Redis still unreachable after %.0f s (%r); %d copies pending",
                    now - self.down_since, exc, len(self._dirty),
                )
        self._retry_at = now + self._backoff

    def _recovered(self, written: int) -> None:
        assert self.down_since is not None
        log.warning(
            "redis write-behind: Redis answers again after %.1f s; writing the %d pending copies",
            time.monotonic() - self.down_since, written + len(self._dirty),
        )
        self.down_since = None
        self._backoff = 0.0
        metrics.REDIS_UP.set(1)
        if self._resync_due:
            self._resync()

    def _resync(self) -> None:
        """Mark every copy of the owners' tables again (after pending writes were let go)."""
        self._resync_due = False
        for resync in self.resyncs:
            resync()
        log.info("redis write-behind: %d copies marked again from the tables", len(self._dirty))


def stage(runtime: BatchRuntime, settings: Settings, writer: RedisContextWriter, scorer: Scorer) -> BatchStage:
    """The context stage and its table ``customer_context`` (canonical customer id -> CustomerContext JSON).

    *scorer* scores message text for intent and the context for churn risk with the
    newest published models; ground truth goes to the learner: an advisor's disposition
    (with the contact's redacted messages) and churn outcomes.
    """
    table = runtime.table("customer_context", settings.partitions)
    # With the identity fast path on every worker ('1') of a group, events of one customer reach
    # this stage by two roads from several workers; it reads them in log order, except while its
    # worker is the only one (then it produced them all, and holds a local record back behind its
    # own fast events).  The runtime knows from the group whether any member runs '1'
    # (BatchRuntime.fast_elsewhere); with 'auto' a worker sends fast events only while it is the
    # only one, so in a group without '1' identity's outputs are handed over locally as without it.
    fast_path = settings.identity_fast_path_mode != "off"
    st = runtime.stage("context", [t.CUSTOMER_EVENTS], tables=[table], local=True, fast_path_input=True)
    customer_events, routing_out = st.output(runtime.topic(t.CUSTOMER_EVENTS)), st.output(runtime.topic(t.ROUTING))
    labels, audit = st.output(runtime.topic(t.LABELS)), st.output(runtime.topic(t.AUDIT))
    nba_out, nba = st.output(runtime.topic(t.NBA)), scorer.nba
    resolve_out, bounced = st.output(runtime.topic(t.RESOLVE)), metrics.IDENTITY_ROAD.labels("slow", "bounced")
    outreach = OutreachStage(table, st.output(runtime.topic(t.OUTREACH)), outreach_config(settings))
    limits = ContextLimits(
        max_interactions=settings.context_max_interactions, max_event_ids=settings.dedupe_ids_per_customer
    )
    status = ErasureStatus(writer.client)
    source_name = runtime.topic(t.CUSTOMER_EVENTS)
    updates = functools.cache(metrics.CONTEXT_UPDATES.labels)  # children looked up once: labels() costs ~1.5 µs a call

    def resync(partition: int, restored: Mapping[bytes, bytes]) -> None:
        """Copy every restored context to Redis again: the write-behind of the last ~100 ms before a crash
        may not have reached it, and the events behind them are dropped as duplicates when redelivered."""
        for key, value in restored.items():
            if not key.startswith(b"~"):  # markers: aliases, erasures, outreach state
                writer.mark(key.decode(), value)

    def dropped(partition: int, given_up: Mapping[bytes, bytes]) -> None:
        """A partition given up in a rebalance: its pending copies are its next owner's to write (resync)."""
        writer.forget(context_key(key.decode()) for key in given_up if not key.startswith(b"~"))

    table.on_restored = resync
    table.on_dropped = dropped

    def resync_all() -> None:
        for partition, held in table.held():
            resync(partition, held)

    writer.resyncs.append(resync_all)

    def save(key: bytes, ctx: CustomerContext) -> None:
        value = encode_context(ctx)
        table[key] = value
        writer.mark(key.decode(), value)

    async def erase(key: bytes, cmd: EraseContext) -> None:
        cid = key.decode()
        old = decode_context_or_none(table.get(key))
        if old is not None:  # contacts still queued or with an advisor leave the router (and its state) too
            routed = [c for c in old.open_contacts.values() if c.needs_advisor]
            for n, c in enumerate(routed, start=1):  # the update's id names no contact: the router keeps ids a while
                update = ContactUpdate(
                    event_id=f"{cmd.request_id}:{n}", contact_id=c.contact_id,
                    routing_group=c.routing_group, kind="closed", at=cmd.at, contact_key=c.contact_key,
                )
                await routing_out.send(key=c.routing_group.encode(), value=encode(update))
        for k in (key, moved_key(cid), outreach_state_key(cid)):
            if table.get(k) is not None:
                del table[k]  # a tombstone in the changelog
        table[erased_key(cid)] = msgspec.json.encode(cmd.at)
        try:
            await writer.delete([context_key(cid)])
        except Exception as exc:  # Redis down: queue the delete; the flush timer retries it
            log.warning("erasure %s: redis delete failed (%r); queued for retry", cmd.request_id, exc)
            writer.mark_key(context_key(cid), None)
        try:
            await status.part_done(cmd.request_id, cmd.parts)
        except Exception as exc:  # progress reporting only
            log.warning("erasure %s: cannot record progress in redis: %r", cmd.request_id, exc)
        record = audit_record(
            "erasure_completed", cmd.request_id, cmd.at, "context", [hashed_id(cid)], part=cmd.part, parts=cmd.parts,
            detail=f"took {(time.time() - cmd.requested_at) * 1000:.0f} ms after the identity stage" if cmd.requested_at else "",
        )
        await audit.send(key=cmd.request_id.encode(), value=encode(record))
        metrics.CONTEXT_UPDATES.labels("EraseContext").inc()

    async def merge_away(key: bytes, cmd: MergeContext) -> None:
        raw = table.get(key)
        handoff = ContextHandoff(
            merge_id=cmd.merge_id, survivor_id=cmd.survivor_id, absorbed_id=cmd.absorbed_id, at=cmd.at,
            context=msgspec.Raw(context_json(raw) if raw else b"null"),  # the record carries JSON
        )
        await customer_events.send(key=cmd.survivor_id.encode(), value=encode(handoff))
        if raw is not None:
            del table[key]
        table[moved_key(key.decode())] = cmd.survivor_id.encode()
        writer.mark_key(context_key(key.decode()), None)  # the alias answers lookups by the old id
        metrics.CONTEXT_UPDATES.labels("MergeContext").inc()

    async def reach_out(key: bytes, ctx: CustomerContext, record: InteractionEvent | OutcomeEvent | RoutingEvent, at: float) -> None:
        if ctx.anonymous:
            return
        state = await outreach.after_update(ctx, record, at)
        if state is not None:
            table[outreach_state_key(key.decode())] = state
        if outreach.last_sent:  # the next-best action of each outreach sent
            for ev in outreach.last_sent:
                ctx, decision = nba.decide(ctx, source_id=ev.outreach_id, at=ev.created_at, channel=ev.channel, outreach_id=ev.outreach_id)
                await nba_out.send(key=key, value=encode(decision))
            outreach.last_sent = []
            save(key, ctx)

    async def learn_nba(found: list[NBALabel]) -> None:
        for label in found:
            await labels.send(key=b"nba", value=encode(label))

    async def handle(rec: Record) -> None:
        if rec.key is None:
            raise InvalidInput("no_key", "a customer event without a key (the canonical customer id)")
        key: bytes = rec.key
        record: ContextInput = decode(rec.value, ContextInput)
        customer_id = key.decode()
        if isinstance(record, EraseContext):
            await erase(key, record)
            return
        if isinstance(record, MergeContext):
            await merge_away(key, record)
            return
        old_raw = table.get(key)
        if old_raw is None:
            # A new customer, or a late record for one that was erased or merged away.
            erased = table.get(erased_key(customer_id))
            if erased is not None:
                if fast_path and isinstance(record, InteractionEvent | OutcomeEvent):
                    # sent by the fast road on a replica that had not yet seen the erasure
                    if record.occurred_at > msgspec.json.decode(erased):
                        # the identity stage decides, as for any event after an erasure (a new customer)
                        await resolve_out.send(key=record.event_id.encode(), value=encode(ResolveRequest(event=record, refused=[])))
                        bounced.inc()
                        return
                    # from before the erasure: suppressed here, so audited here as the identity stage audits the
                    # ones it suppresses (the record's id is deterministic: a replay writes the same one again)
                    await audit.send(key=record.event_id.encode(), value=encode(audit_record(
                        "erased_record_suppressed", record.event_id, record.occurred_at, "context", [hashed_id(customer_id)],
                        detail="the event predates the erasure of the customer it was sent to",
                    )))
                metrics.EVENTS_IN.labels(source_name, "erased_suppressed").inc()
                return
            moved = table.get(moved_key(customer_id))
            if moved is not None:
                await customer_events.send(key=moved, value=rec.value)
                return
        old: CustomerContext | None = decode_context_or_none(old_raw)
        routing: list[ContactRequest | ContactUpdate] = []
        if isinstance(record, ContextHandoff):
            absorbed_raw = bytes(record.context)
            absorbed = decode_context(absorbed_raw) if absorbed_raw != b"null" else None
            new = merge_contexts(old, absorbed, customer_id, record.absorbed_id, record.merge_id, record.at, limits, routing)
            duplicate = new is old
        elif isinstance(record, InteractionEvent):
            text = redact(record.text) if record.text else None  # ingest redacted it; kept as a guard
            customer_text = record.direction == "inbound" and record.kind in ("message", "contact_opened")
            scored = scorer.predict_intent(text) if customer_text else None
            detected = scorer.detect_language(text) if customer_text else None
            new, fx = apply_interaction(
                old, record, customer_id, limits,
                identifiers=record.customer.present(),
                redacted_text=text,
                anonymous=customer_id.startswith("anon-"),
                predicted=scored,
                detected=detected,
            )
            duplicate, routing = fx.duplicate, fx.routing
        elif isinstance(record, Assignment):
            new = apply_assignment(old, record, limits)
            duplicate = new is old
        elif isinstance(record, RoutingEvent) and record.kind == "rejected":  # the router could not take the contact
            rejected = apply_rejection(old, record, limits)
            if rejected is None:
                return
            new, duplicate = rejected, False
        elif isinstance(record, RoutingEvent):
            updated, text = apply_disposition(old, record, limits)
            if updated is None:
                return
            if updated is old:  # nothing to record (an abandon, a breach): outreach may still act on it
                await reach_out(key, old, record, record.at)
                return
            new, duplicate = updated, False
            intent = record.disposition.intent if record.disposition else None
            if intent and text:
                label = IntentLabel(event_id=record.event_id, at=record.at, text=text, intent=intent, contact_id=record.contact_id)
                await labels.send(key=b"intent", value=encode(label))
            document = record.disposition.document if record.disposition else None
            if document and text:  # the document the advisor used: the suggestions learn it
                assert record.disposition is not None
                known = KnowledgeLabel(
                    event_id=record.event_id, at=record.at, text=text[:8000], document=document, intent=intent,
                    resolved=record.disposition.resolved, contact_id=record.contact_id,
                )
                await labels.send(key=b"assist", value=encode(known))
            new, rewarded = nba.on_completion(new, record)
            await learn_nba(rewarded)
        else:
            new, duplicate = apply_outcome(old, record, customer_id, limits, identifiers=record.customer.present())
            if not duplicate and old is not None and record.kind in ("churned", "retained"):
                churn = ChurnLabel(
                    event_id=record.event_id, at=record.occurred_at, features=features_of(old),
                    churned=record.kind == "churned",
                )
                await labels.send(key=b"churn", value=encode(churn))
            if not duplicate:
                new, rewarded = nba.on_outcome(new, record)
                await learn_nba(rewarded)
        if duplicate:
            metrics.DUPLICATES.labels("context").inc()
            return
        if isinstance(record, (InteractionEvent, OutcomeEvent)):
            new = scorer.with_churn_and_health(new)
        elif not isinstance(record, Assignment):  # an assignment changes nothing the health score reads
            # a merge is scored again on both sides' facts; set_scores derives the merged context
            # again, so the health score reads it afresh
            if isinstance(record, ContextHandoff) and (risk := scorer.churn_risk(new)) is not None:
                new = set_scores(new, at=new.updated_at, churn_risk=risk[0], model_version=risk[1], limits=limits, churn_reasons=risk[2])
            new = with_health(new)
        if not isinstance(record, Assignment):
            for r in routing:
                if isinstance(r, ContactRequest) and new.health is not None:
                    metrics.CUSTOMER_HEALTH.labels(r.routing_group).observe(new.health)
        decision = None
        if (isinstance(record, InteractionEvent) and record.kind == "contact_opened" and record.needs_advisor
                and record.contact_id and record.contact_id in new.open_contacts):  # the next-best action of the contact
            new, decision = nba.decide(new, source_id=record.event_id, at=record.occurred_at, channel=record.channel,
                                       contact_id=record.contact_id)
        save(key, new)
        if decision is not None:
            await nba_out.send(key=key, value=encode(decision))
        updates(type(record).__name__).inc()
        if isinstance(record, (InteractionEvent, OutcomeEvent, RoutingEvent)):
            at = record.at if isinstance(record, RoutingEvent) else record.occurred_at
            await reach_out(key, new, record, at)
        for r in routing:
            await routing_out.send(key=r.routing_group.encode(), value=encode(r))

    st.handler = handle
    return st


def timers(app: faust.App, settings: Settings, writer: RedisContextWriter, scorer: Scorer) -> None:
    """The context stage's clocks, on the Faust app: the Redis write-behind and the model refresh."""

    @app.timer(settings.redis_flush_ms / 1000.0, name="cxstream.context.redis_flush")
    async def flush_to_redis() -> None:
        await writer.flush()

    @app.timer(settings.model_refresh_s, name="cxstream.context.model_refresh")
    async def refresh_models() -> None:
        await scorer.refresh(writer.client)
