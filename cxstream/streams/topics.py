"""The topic catalogue: every topic the engine reads or writes.  Read this first.

::

    channel systems ──▶ cx.interactions.v1 ───┐
    advisor desktops ─▶ cx.advisor-events.v1 ─┼─▶ ingest ──▶ cx.dead-letter.v1 (bad input + reason)
    business systems ─▶ cx.outcomes.v1 ───────┘   │ validate, normalise identifiers, redact text
                                                   ├──▶ cx.routing.v1 (advisor events)
                                                   ▼
                       cx.resolve.v1 (ONE partition: one total order)
                                ▼
                      identity (table identity) ──▶ cx.identity.v1 (links, merges, refusals)
                                │ canonical id      ──▶ cx.audit.v1 (erasure requests)
                                │                   ──▶ Redis identifier index (write-behind)
                       cx.customer-events.v1 ◀─────┘  (key = canonical customer id; + merge
                                │                      hand-offs and erasures; anonymous
                                ▼                      events come straight from ingest)
                      context  (table customer_context) ──▶ Redis copy (write-behind)
                                │                       ──▶ cx.audit.v1 (erasure completed)
                                │ contact requests / updates
                                ▼
                      cx.routing.v1 (key = routing group; + clock ticks)
                                ▼
                      router  (table router_state) ──▶ cx.assignments.v1 (key = advisor id)
                                │                  ──▶ cx.routing-events.v1
                                └── assignments also back to cx.customer-events.v1 (last advisor)

Names carry the contract version.  Every customer-keyed topic has the same
partition count (``CX_PARTITIONS``), so one customer's events stay on one partition
across topics.  Values are JSON records of :mod:`cxstream.schemas`; on topics that
carry several record types the ``type`` field says which.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxstream.streams.settings import Settings


def event_configs(settings: Settings) -> dict[str, str]:
    """Topic configs of an event topic: deleted by age and by size per partition (``CX_TOPIC_RETENTION_*``).

    >>> event_configs(Settings())["retention.ms"]
    '604800000'
    """
    mb = settings.topic_retention_mb
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(int(settings.topic_retention_hours * 3600 * 1000)),
        "retention.bytes": str(mb * 2**20 if mb >= 0 else -1),
    }


#: The largest record a table's changelog takes (and the stages' producer sends).
MAX_STATE_RECORD_BYTES = 16 * 2**20


def state_configs() -> dict[str, str]:
    """Topic configs of a state topic (a table's changelog): compacted, so a restore reads about one record per key.

    Segments roll at 16 MB or hourly (the active segment is never compacted); tombstones (an
    erasure's deletes) stay a day, so a restore that started before them still sees them.  A
    record may be up to :data:`MAX_STATE_RECORD_BYTES`: a routing group's state is one record
    (~200 bytes a contact it holds, up to ``max_contacts``), past the broker's 1 MB default.
    """
    return {
        "cleanup.policy": "compact",
        "max.message.bytes": str(MAX_STATE_RECORD_BYTES),
        "segment.bytes": str(16 * 2**20),
        "segment.ms": str(3600 * 1000),
        "min.cleanable.dirty.ratio": "0.25",
        "delete.retention.ms": str(24 * 3600 * 1000),
    }


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name (with version), what its key and value are, and how it is kept.

    *kept*: ``"events"`` (deleted by age and size, :func:`event_configs`), ``"state"`` (compacted,
    :func:`state_configs`) or ``"forever"`` (never deleted: the privacy audit trail).
    """

    name: str
    key: str
    value: str
    doc: str
    kept: str = "events"
    single_partition: bool = False

    def partitions(self, settings: Settings) -> int:
        return 1 if self.single_partition else settings.partitions

    def configs(self, settings: Settings) -> dict[str, str]:
        """The topic configs it is created with.

        >>> AUDIT.configs(Settings())["retention.ms"]
        '-1'
        """
        if self.kept == "state":
            return state_configs()
        if self.kept == "forever":
            return {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
        return event_configs(settings)

    @property
    def compacted(self) -> bool:
        return self.kept == "state"


INTERACTIONS = TopicSpec(
    "cx.interactions.v1", "any (a customer identifier is recommended)", "InteractionEvent",
    "Every customer interaction from every channel system.",
)
ADVISOR_EVENTS = TopicSpec(
    "cx.advisor-events.v1", "advisor id", "AdvisorEvent",
    "Advisor desktop events: login, presence, skills, offer answers, completions with disposition.",
)
OUTCOMES = TopicSpec(
    "cx.outcomes.v1", "any", "OutcomeEvent",
    "Business outcomes: churned/retained, CSAT, NPS, payments, consent, erasure requests.",
)
CUSTOMER_EVENTS = TopicSpec(
    "cx.customer-events.v1", "canonical customer id", "InteractionEvent | OutcomeEvent | Assignment",
    "Internal: validated inputs and assignments, keyed by the customer they belong to.",
)
ROUTING = TopicSpec(
    "cx.routing.v1", "routing group", "ContactRequest | ContactUpdate | AdvisorEvent | RouterTick",
    "Internal: the router's totally ordered input per routing group.",
)
ASSIGNMENTS = TopicSpec(
    "cx.assignments.v1", "advisor id", "Assignment",
    "Offers of contacts to advisors, for advisor desktops.",
)
ROUTING_EVENTS = TopicSpec(
    "cx.routing-events.v1", "routing group", "RoutingEvent",
    "Queueing, escalation, SLA breaches, offer timeouts, abandons.",
)
OUTREACH = TopicSpec(
    "cx.outreach.v1", "customer id", "OutreachEvent",
    "Proactive outreach recommendations for campaign and messaging systems.",
)
NBA = TopicSpec(
    "cx.nba.v1", "customer id", "NextBestAction",
    "Next-best actions ranked for open contacts and outreach, each with its logged propensity.",
)
RESOLVE = TopicSpec(
    "cx.resolve.v1", "event id", "ResolveRequest",
    "Internal: validated customer events awaiting identity resolution, in one total order.",
    single_partition=True,
)
IDENTITY = TopicSpec(
    "cx.identity.v1", "canonical customer id", "IdentityLinked | CustomersMerged | LinkRefused | IdentityErased",
    "Identity decisions: links, merges, refused links, erasures (identifiers as fingerprints only).",
)
AUDIT = TopicSpec(
    "cx.audit.v1", "request id", "AuditRecord",
    "Privacy audit trail: erasure requested / completed, late records suppressed (no personal data).",
    kept="forever",
)
LABELS = TopicSpec(
    "cx.labels.v1", "model name", "IntentLabel | ChurnLabel | KnowledgeLabel",
    "Internal: ground truth for the learner (dispositions, documents used, churn outcomes); one partition, one learner.",
    single_partition=True,
)
MODEL_EVENTS = TopicSpec(
    "cx.model-events.v1", "model name", "ModelEvent",
    "Model snapshots published and drifts detected by the learner.",
)
DEAD_LETTER = TopicSpec(
    "cx.dead-letter.v1", "source topic", "DeadLetter",
    "Inputs the engine could not use, with topic/partition/offset, reason and raw payload.",
)

CATALOGUE: tuple[TopicSpec, ...] = (
    INTERACTIONS,
    ADVISOR_EVENTS,
    OUTCOMES,
    CUSTOMER_EVENTS,
    ROUTING,
    ASSIGNMENTS,
    ROUTING_EVENTS,
    OUTREACH,
    NBA,
    LABELS,
    MODEL_EVENTS,
    DEAD_LETTER,
    RESOLVE,
    IDENTITY,
    AUDIT,
)

#: Input topics of the engine: the only ones an outside system writes.
INPUTS: tuple[TopicSpec, ...] = (INTERACTIONS, ADVISOR_EVENTS, OUTCOMES)


def by_name(name: str) -> TopicSpec:
    """The spec of a topic, by name.

    >>> by_name("cx.assignments.v1").key
    'advisor id'
    """
    for spec in CATALOGUE:
        if spec.name == name:
            return spec
    raise KeyError(f"no topic {name!r} in the catalogue")
