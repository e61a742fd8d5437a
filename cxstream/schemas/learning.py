"""Records of the learning loop: labels for the learner, and what the learner reports.

| record        | topic                  | key        |
|---------------|------------------------|------------|
| IntentLabel   | cx.labels.v1 (1 part.) | model name |
| ChurnLabel    | cx.labels.v1 (1 part.) | model name |
| KnowledgeLabel| cx.labels.v1 (1 part.) | model name |
| NBALabel      | cx.labels.v1 (1 part.) | model name |
| ModelEvent    | cx.model-events.v1     | model name |

Labels never carry raw message text: the context stage builds them from the
redacted text it keeps.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from cxstream.schemas.common import EventTime, Record


class IntentLabel(Record, frozen=True, tag="cx.IntentLabel.v1", tag_field="type"):
    """The true intent of a contact's customer messages, from the advisor's disposition."""

    event_id: str
    at: EventTime
    text: Annotated[str, msgspec.Meta(max_length=8000, description="The contact's inbound messages, redacted, joined.")]
    intent: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    contact_id: str | None = None


class ChurnLabel(Record, frozen=True, tag="cx.ChurnLabel.v1", tag_field="type"):
    """A churned/retained outcome with the customer's features at that moment."""

    event_id: str
    at: EventTime
    features: dict[str, float | str]
    churned: bool


class KnowledgeLabel(Record, frozen=True, tag="cx.KnowledgeLabel.v1", tag_field="type"):
    """The document (or template) an advisor used on a contact, with the contact's words and outcome."""

    event_id: str
    at: EventTime
    text: Annotated[str, msgspec.Meta(max_length=8000, description="The contact's inbound messages, redacted, joined.")]
    document: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    intent: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    resolved: bool = True
    contact_id: str | None = None


class NBALabel(Record, frozen=True, tag="cx.NBALabel.v1", tag_field="type"):
    """The outcome of a next-best-action decision: the action taken and its reward (docs/INTEL.md)."""

    event_id: str
    at: EventTime
    decision_id: str
    intent: str
    features: dict[str, float | str]
    action: Annotated[str, msgspec.Meta(description="The action taken (the advisor's, else the recommended one).")]
    recommended: str
    propensity: Annotated[float, msgspec.Meta(ge=0, le=1, description="The logged propensity of the recommended action.")]
    reward: Annotated[float, msgspec.Meta(ge=0, le=1)]
    reason: Annotated[str, msgspec.Meta(description="What gave the reward: resolved, unresolved, retained, churned.")]
    document_id: str | None = None


class ModelEvent(Record, frozen=True, tag="cx.ModelEvent.v1", tag_field="type"):
    """A new model snapshot was published, or drift was detected in a model's error."""

    event_id: str
    at: EventTime
    model: Literal["intent", "churn", "assist", "nba"]
    kind: Literal["published", "drift"]
    version: int
    labels_seen: int = 0
    progressive_accuracy: float | None = None
    progressive_auc: float | None = None
    progressive_top3: Annotated[
        float | None, msgspec.Meta(description="assist: share of contacts whose document was in the top 3 suggested before learning it.")
    ] = None


Label = IntentLabel | ChurnLabel | KnowledgeLabel | NBALabel
