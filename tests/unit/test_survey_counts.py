"""CSAT and NPS are counted once per survey (issue 18): an OutcomeEvent redelivered (at-least-once) is a
duplicate however many events came between, also after the customer's context was merged with another,
and a merge never counts one survey that both sides applied twice."""

from __future__ import annotations

import pytest

from cxstream.context import ContextLimits, apply_interaction, apply_outcome, merge_contexts
from cxstream.context.model import CustomerContext, decode_context, encode_context
from cxstream.schemas import Identifiers, InteractionEvent, OutcomeEvent

LIMITS = ContextLimits()


def survey(event_id: str, at: float, value: float, kind: str = "csat", customer: str = "A") -> OutcomeEvent:
    return OutcomeEvent(event_id=event_id, occurred_at=at, customer=Identifiers(customer_id=customer), kind=kind, value=value)  # type: ignore[arg-type]


def chatter(ctx: CustomerContext | None, customer: str, n: int, start: float, prefix: str = "m") -> CustomerContext:
    """*n* ordinary messages: enough to push earlier event ids out of the per-customer ring of ids."""
    for i in range(n):
        e = InteractionEvent(event_id=f"{prefix}{customer}{i}", occurred_at=start + i, channel="chat", kind="message",
                             customer=Identifiers(customer_id=customer))
        ctx, _ = apply_interaction(ctx, e, customer, LIMITS)
    assert ctx is not None
    return ctx


def fold(ctx: CustomerContext | None, o: OutcomeEvent, customer: str = "A") -> tuple[CustomerContext, bool]:
    return apply_outcome(ctx, o, customer, LIMITS)


@pytest.mark.parametrize("kind", ["csat", "nps"])
def test_a_redelivered_survey_is_counted_once(kind: str) -> None:
    ctx, _ = fold(None, survey("s1", 10.0, 4, kind))
    again, dup = fold(ctx, survey("s1", 10.0, 4, kind))
    assert dup and again is ctx
    assert (ctx.csat_count, ctx.nps_count) == ((1, 0) if kind == "csat" else (0, 1))


@pytest.mark.parametrize("kind", ["csat", "nps"])
def test_a_survey_redelivered_after_many_other_events_is_still_counted_once(kind: str) -> None:
    """A redelivered batch can be longer than the ring of recent event ids (64): the survey is still known."""
    ctx, _ = fold(None, survey("s1", 10.0, 2, kind))
    ctx = chatter(ctx, "A", LIMITS.max_event_ids + 5, 20.0)
    ctx, dup = fold(ctx, survey("s1", 10.0, 2, kind))
    assert dup
    assert (ctx.csat_count, ctx.csat_avg) == ((1, 2.0) if kind == "csat" else (0, None))
    assert (ctx.nps_count, ctx.nps_avg) == ((1, 2.0) if kind == "nps" else (0, None))


@pytest.mark.parametrize("survivor_busy", [False, True])
def test_a_survey_redelivered_after_a_merge_is_counted_once(survivor_busy: bool) -> None:
    """B answered a survey, then B was merged into A (ContextHandoff); the survey is redelivered and now
    resolves to A.  Also when A's own ring of ids was full (a busy customer) at the merge."""
    b, _ = fold(None, survey("sB", 10.0, 1), "B")
    a, _ = fold(None, survey("sA", 12.0, 5))
    if survivor_busy:
        a = chatter(a, "A", LIMITS.max_event_ids, 20.0)
    merged = merge_contexts(a, b, "A", "B", "merge-1", 200.0, LIMITS)
    assert (merged.csat_count, merged.csat_avg) == (2, 3.0)
    again, dup = fold(merged, survey("sB", 10.0, 1, customer="A"))
    assert dup and (again.csat_count, again.csat_avg) == (2, 3.0)
    again, dup = fold(merged, survey("sA", 12.0, 5))
    assert dup and (again.csat_count, again.csat_avg) == (2, 3.0)


def test_a_survey_both_sides_applied_is_counted_once_by_the_merge() -> None:
    """The survey reached B, the engine crashed before committing, and the redelivered copy resolved to A
    (the link was made meanwhile) before B's context was handed off: both sides hold it."""
    b, _ = fold(None, survey("s1", 10.0, 2, "nps"), "B")
    b, _ = fold(b, survey("s2", 11.0, 4), "B")
    a, _ = fold(None, survey("s1", 10.0, 2, "nps"))
    a, _ = fold(a, survey("s3", 30.0, 8, "nps"))
    for m in (merge_contexts(a, b, "A", "B", "m1", 100.0, LIMITS), merge_contexts(b, a, "B", "A", "m1", 100.0, LIMITS)):
        assert (m.nps_count, m.nps_avg, m.nps_last) == (2, 5.0, 8.0)
        assert (m.csat_count, m.csat_avg, m.csat_last) == (1, 4.0, 4.0)


def test_merges_add_different_surveys_and_keep_the_newest_as_last() -> None:
    a, _ = fold(None, survey("s1", 50.0, 5))
    b, _ = fold(None, survey("s2", 10.0, 1), "B")
    b, _ = fold(b, survey("s3", 60.0, 3), "B")
    b = chatter(b, "B", 3, 5.0)  # B's context is older by update time, its last survey newer
    m = merge_contexts(a, b, "A", "B", "m1", 100.0, LIMITS)
    assert (m.csat_count, m.csat_avg, m.csat_last) == (3, 3.0, 3.0)
    # a chain of merges: C into the merged A, then the first survey redelivered yet again
    c, _ = fold(None, survey("s4", 70.0, 4), "C")
    m2 = merge_contexts(m, c, "A", "C", "m2", 200.0, LIMITS)
    assert (m2.csat_count, m2.csat_avg, m2.csat_last) == (4, 3.25, 4.0)
    assert fold(m2, survey("s2", 10.0, 1))[1]
    assert decode_context(encode_context(m2)) == m2


def test_a_redelivered_interaction_of_the_absorbed_side_is_a_duplicate_after_the_merge() -> None:
    """The ring of recent event ids survives a merge on both sides: the survivor's full ring does not push
    out every id of the absorbed customer."""
    b = chatter(None, "B", 5, 10.0, prefix="b")
    a = chatter(None, "A", LIMITS.max_event_ids, 20.0)
    m = merge_contexts(a, b, "A", "B", "m1", 200.0, LIMITS)
    assert len(m.recent_event_ids) <= LIMITS.max_event_ids
    redelivered = InteractionEvent(event_id="bB4", occurred_at=14.0, channel="chat", kind="message", customer=Identifiers(customer_id="A"))
    again, fx = apply_interaction(m, redelivered, "A", LIMITS)
    assert fx.duplicate and again.interactions_total == m.interactions_total
