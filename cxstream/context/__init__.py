"""The 360° customer context: a pure core (no I/O), one record per canonical customer."""

from cxstream.context.model import CustomerContext, InteractionSummary, OpenContact
from cxstream.context.update import (
    ContextLimits,
    Effects,
    apply_assignment,
    apply_interaction,
    apply_outcome,
    journey_stage,
    merge_contexts,
    set_scores,
)

__all__ = [
    "ContextLimits",
    "CustomerContext",
    "Effects",
    "InteractionSummary",
    "OpenContact",
    "apply_assignment",
    "apply_interaction",
    "apply_outcome",
    "journey_stage",
    "merge_contexts",
    "set_scores",
]
