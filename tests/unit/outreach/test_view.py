"""The engine's outreach view straight from the context struct equals the view of its JSON form."""

from __future__ import annotations

import msgspec

from cxstream.bench.workload import Workload, WorkloadConfig
from cxstream.context import apply_interaction, apply_outcome
from cxstream.context.model import ContactRecord, CustomerContext, IntentPoint, OpenContact
from cxstream.outreach.view import NOT_IN_CONTEXT, view_from_dict, view_of_context
from cxstream.schemas import AdvisorEvent, InteractionEvent, OutcomeEvent


def test_the_context_has_none_of_the_keys_the_struct_view_does_not_read() -> None:
    assert not set(NOT_IN_CONTEXT) & set(CustomerContext.__struct_fields__)


def test_both_views_agree_on_contexts_the_engine_builds_from_a_workload() -> None:
    contexts: dict[str, CustomerContext] = {}
    for n, ev in enumerate(Workload(WorkloadConfig(customers=60, seed=11, advisors=5)).events(3000)):
        if isinstance(ev, AdvisorEvent):
            continue
        cid = ev.customer.customer_id or ev.customer.email or ev.customer.phone or ev.customer.session_id or f"anon{n}"
        if isinstance(ev, InteractionEvent):
            ctx, _ = apply_interaction(contexts.get(cid), ev, cid, redacted_text=ev.text)
        else:
            assert isinstance(ev, OutcomeEvent)
            ctx, _ = apply_outcome(contexts.get(cid), ev, cid)
        contexts[cid] = ctx
        assert view_of_context(ctx) == view_from_dict(msgspec.to_builtins(ctx)), cid
    assert any(c.contacts for c in contexts.values()) and any(c.sentiment_recent for c in contexts.values())


def test_both_views_agree_on_consent_erasure_groups_and_intents_by_contact() -> None:
    base = CustomerContext(customer_id="c9", created_at=0, updated_at=10)
    variants = [
        msgspec.structs.replace(base, consent={"outreach": False, "sms": True}),
        msgspec.structs.replace(base, milestones={"erasure_requested": 5.0, "payment_failed": 3.0}),
        msgspec.structs.replace(base, open_contacts={
            "k2": OpenContact(contact_id="k2", channel="chat", opened_at=1, routing_group="vip"),
            "k1": OpenContact(contact_id="k1", channel="voice", opened_at=2, routing_group="billing"),
        }),
        msgspec.structs.replace(base, preferred_language="", language="fr", last_channel="sms", churn_risk=1.7,
                                contacts=[ContactRecord(contact_id="k1", channel="chat", opened_at=1),
                                          ContactRecord(contact_id="k0", channel="sms", opened_at=1, intent="billing",
                                                        resolved=True, closed_at=4)],
                                intent_history=[IntentPoint(at=1, intent="refund", contact_id="k1"),
                                                IntentPoint(at=2, intent="card_lost", contact_id="k1")]),
        msgspec.structs.replace(base, preferred_language="not a language tag!", churn_risk=-0.2),
    ]
    for ctx in variants:
        assert view_of_context(ctx) == view_from_dict(msgspec.to_builtins(ctx))
        assert view_of_context(ctx, opt_out_keys=["sms"]) == view_from_dict(msgspec.to_builtins(ctx), opt_out_keys=["sms"])


def test_a_profile_time_zone_reaches_the_outreach_quiet_hours() -> None:
    from cxstream.context.update import merge_contexts
    from cxstream.outreach import OutreachConfig
    from cxstream.outreach.guardrails import customer_zone
    from cxstream.schemas import Identifiers

    profile = OutcomeEvent(event_id="p1", occurred_at=5.0, customer=Identifiers(customer_id="c1"), kind="profile",
                           attributes={"timezone": "Asia/Tokyo", "tier": "gold"})
    ctx, _ = apply_outcome(None, profile, "c1")
    assert ctx.timezone == "Asia/Tokyo"
    view = view_of_context(ctx)
    assert view == view_from_dict(msgspec.to_builtins(ctx))
    assert str(customer_zone(view, OutreachConfig(default_timezone="Europe/London"))) == "Asia/Tokyo"
    other = CustomerContext(customer_id="c2", created_at=0, updated_at=9)
    assert merge_contexts(ctx, other, "c1", "c2", "m1", 10.0).timezone == "Asia/Tokyo"
    unknown, _ = apply_outcome(None, msgspec.structs.replace(profile, attributes={"timezone": "Mars/Olympus"}), "c1")
    assert str(customer_zone(view_of_context(unknown), OutreachConfig(default_timezone="Europe/London"))) == "Europe/London"
