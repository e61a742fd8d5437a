"""Proactive outreach: reach the customer before they have to call (pure core).

The outreach agent keeps one :class:`OutreachState` per customer and, after every context
update, calls :func:`evaluate` with a :class:`ContextView` of the context (built by
:func:`view_from_dict`) and the record that caused the update; it publishes the returned
:class:`~cxstream.schemas.OutreachEvent` records on ``cx.outreach.v1``.  Outcomes
(``cx.outcomes.v1``) go through :func:`record_outcome`, and :class:`OutreachStats` turns
sends, suppressions and attributions into precision and lift per trigger.
No I/O, no clock, deterministic.  See ``docs/OUTREACH.md``.
"""

from __future__ import annotations

from cxstream.outreach.config import TRIGGERS, OutreachConfig, OutreachSettings, TriggerSettings
from cxstream.outreach.decide import Attribution, Suppression, evaluate, outreach_id, record_outcome
from cxstream.outreach.guardrails import GUARDRAILS
from cxstream.outreach.state import OutreachState, decode_state, encode_state, new_state
from cxstream.outreach.stats import OutreachStats
from cxstream.outreach.view import ContactView, ContextView, view_from_dict, view_of_context

__all__ = [
    "GUARDRAILS",
    "TRIGGERS",
    "Attribution",
    "ContactView",
    "ContextView",
    "OutreachConfig",
    "OutreachSettings",
    "OutreachState",
    "OutreachStats",
    "Suppression",
    "TriggerSettings",
    "decode_state",
    "encode_state",
    "evaluate",
    "new_state",
    "outreach_id",
    "record_outcome",
    "view_from_dict",
    "view_of_context",
]
