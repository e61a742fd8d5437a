"""Outreach: after each context update, the triggers and guardrails of :mod:`cxstream.outreach`.

Runs inside the context stage (no extra hop: it needs the context just written).
Its per-customer state lives in the ``customer_context`` table under ``~o:{id}``,
beside the context, so it is on the same partition and restored with it; erasure
deletes it.  Outreach events go to ``cx.outreach.v1`` (key = customer id); outcomes
that answer an outreach are attributed to it, which feeds precision per trigger.

Held recommendations (quiet hours, frequency cap, an open contact) are re-evaluated
at the customer's next event; a customer with no further events keeps them until
they expire (see docs/OUTREACH.md).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from cxstream.context.model import CustomerContext
from cxstream.outreach import (
    TRIGGERS,
    OutreachConfig,
    OutreachSettings,
    decode_state,
    encode_state,
    evaluate,
    record_outcome,
    view_of_context,
)
from cxstream.outreach.decide import ATTRIBUTED_KINDS
from cxstream.schemas import InteractionEvent, OutcomeEvent, OutreachEvent, RoutingEvent
from cxstream.streams import metrics
from cxstream.streams.batch import Output
from cxstream.streams.codecs import encode
from cxstream.streams.settings import Settings


def state_key(customer_id: str) -> bytes:
    """Table key of a customer's outreach state.

    >>> state_key("cust-1")
    b'~o:cust-1'
    """
    return f"~o:{customer_id}".encode()


class OutreachConfigError(ValueError):
    """The outreach configuration file cannot be used; the message says why."""


def config_from(settings: Settings) -> OutreachSettings:
    """Outreach configuration per routing group.

    The ``CX_OUTREACH_*`` settings make the default; ``CX_OUTREACH_CONFIG_FILE`` (TOML
    or JSON, the fields of :class:`cxstream.outreach.OutreachSettings`: ``default`` and
    ``groups.NAME``, each an ``OutreachConfig``) overrides it per routing group.
    """
    base = OutreachConfig(
        churn_threshold=settings.outreach_churn_threshold,
        quiet_start=settings.outreach_quiet_start,
        quiet_end=settings.outreach_quiet_end,
        cap_window_s=settings.outreach_cap_days * 86400.0,
        holdout_fraction=settings.outreach_holdout,
    )
    if not settings.outreach_config_file:
        return OutreachSettings(default=base)
    path = Path(settings.outreach_config_file)
    try:
        text = path.read_text()
        raw = tomllib.loads(text) if path.suffix == ".toml" else msgspec.json.decode(text)
        base_fields = msgspec.structs.asdict(base)
        default = msgspec.convert({**base_fields, **raw.get("default", {})}, OutreachConfig)
        groups = {
            name: msgspec.convert({**base_fields, **cfg}, OutreachConfig) for name, cfg in raw.get("groups", {}).items()
        }
    except (OSError, ValueError, msgspec.ValidationError, AttributeError) as exc:
        raise OutreachConfigError(f"CX_OUTREACH_CONFIG_FILE={path}: {exc}") from exc
    return OutreachSettings(default=default, groups=groups)


class OutreachStage:
    """Evaluates one customer after an update; the caller owns the table and the topic."""

    def __init__(self, table: Mapping[bytes, Any], topic: Output, config: OutreachSettings) -> None:
        self.table = table
        self.topic = topic
        self.config = config
        self.last_sent: list[OutreachEvent] = []  # what the latest after_update sent (next-best action decides for each)
        # Exported at 0 from the start: Prometheus' increase() does not count a series' first sample,
        # so a counter created by its first outreach would leave that outreach out of the 30-day precision.
        for trigger in TRIGGERS:
            metrics.OUTREACH.labels(trigger)
            for kind in sorted(ATTRIBUTED_KINDS):
                metrics.OUTREACH_OUTCOMES.labels(trigger, kind)

    async def after_update(
        self, ctx: CustomerContext, record: InteractionEvent | OutcomeEvent | RoutingEvent, now: float
    ) -> bytes | None:
        """Run outreach for *ctx* after *record*; returns the new state bytes for the caller to save."""
        key = state_key(ctx.customer_id)
        raw = self.table.get(key)
        state = stored = decode_state(raw) if raw else None
        if state is not None and isinstance(record, OutcomeEvent):
            state, attribution = record_outcome(state, record)
            if attribution is not None:
                metrics.OUTREACH_OUTCOMES.labels(attribution.trigger, attribution.kind).inc()
        view = view_of_context(ctx)
        state, sent, suppressed = evaluate(state, view, record, now, self.config.for_group(view.routing_group))
        self.last_sent = list(sent)
        for ev in sent:
            await self.send(ev)
        for s in suppressed:
            metrics.OUTREACH_SUPPRESSED.labels(s.trigger, s.guardrail).inc()
        if state is stored and stored is not None:  # evaluate's fast path (nothing fired, held or aged out): unchanged
            return None
        new = encode_state(state)
        return None if new == raw else new

    async def send(self, ev: OutreachEvent) -> None:
        metrics.OUTREACH.labels(ev.reason).inc()
        await self.topic.send(key=ev.customer_id.encode(), value=encode(ev))
