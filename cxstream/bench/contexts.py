"""Customer contexts as the engine's context stage builds them, in process, from the benchmark workload.

For the benchmarks that need the engine's stored contexts without running it: what the hot path
costs per input (``bench/pipeline/costs.py``) and the zstd dictionary of stored contexts
(``bench/context/dictionary.py``).  The models are trained as the pipeline drain seeds them
(intent: 3,000 Banking77 rows; churn: 2,000 Telco rows), and each input goes through the context
stage's steps for interactions and outcomes (``cxstream/agents/context.py``): intent and language
of an inbound text, the pure update, the churn risk with its reasons, the health score, and the
next-best action of a routable contact.  Not here: what only the router and the desktops add
(assignments, dispositions), which the pipeline benchmark's contexts carry too.
"""

from __future__ import annotations

import csv
import itertools
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from cxstream.agents.ingest import route_customer_event
from cxstream.agents.nba import NBA
from cxstream.agents.scoring import Scorer, language_detector
from cxstream.bench.workload import Workload, WorkloadConfig
from cxstream.context.model import CustomerContext
from cxstream.context.resolver import Resolver
from cxstream.context.update import ContextLimits, apply_interaction, apply_outcome
from cxstream.intel.churn import ChurnModel
from cxstream.intel.evaluate import TELCO_FILE, read_labelled_csv
from cxstream.intel.features import telco_features, telco_label
from cxstream.intel.intent import IntentModel
from cxstream.schemas import InteractionEvent, OutcomeEvent, ResolveRequest
from cxstream.streams.codecs import decode, encode
from cxstream.streams.settings import Settings


def trained_scorer(data: Path) -> tuple[Scorer, dict[str, Any]]:
    """A scorer with the drain's seed models when the datasets are under *data* (else untrained), and what it holds."""
    scorer = Scorer(language_detector(Settings()))
    banking = data / "banking77" / "train.csv"
    if not banking.exists():
        return scorer, {"trained": False}
    intent = IntentModel()
    intent.learn_many(read_labelled_csv(banking)[:3000])
    churn = ChurnModel()
    with (data / TELCO_FILE).open(newline="", encoding="utf-8") as f:
        for row in itertools.islice(csv.DictReader(f), 2000):
            churn.learn_one(telco_features(row), telco_label(row))
    scorer.intent.model, scorer.intent.version = intent, 1
    scorer.churn.model, scorer.churn.version = churn, 1
    return scorer, {"trained": True, "intent_rows": 3000, "churn_rows": 2000}


def workload_inputs(
    customers: int, events: int, seed: int, texts: tuple[str, ...] | None = None
) -> list[InteractionEvent | OutcomeEvent]:
    """The workload's interactions and outcomes, stamped 10 ms apart from a day ago (the sender's event times)."""
    wl = Workload(WorkloadConfig(customers=customers, seed=seed), texts=texts)
    base = time.time() - 86400.0
    return [msgspec.structs.replace(e, occurred_at=base + i * 0.01)
            for i, e in enumerate(wl.events(events)) if isinstance(e, (InteractionEvent, OutcomeEvent))]


def resolve_request(event: InteractionEvent | OutcomeEvent) -> ResolveRequest:
    """*event* as ingest hands it to identity (decoded, normalised, redacted)."""
    return decode(route_customer_event(encode(event), type(event), 1 << 20).value, ResolveRequest)


def resolve_requests(
    customers: int, events: int, seed: int, texts: tuple[str, ...] | None = None
) -> list[ResolveRequest]:
    """:func:`workload_inputs` as ingest hands them to identity."""
    return [resolve_request(e) for e in workload_inputs(customers, events, seed, texts)]


def build_contexts(
    reqs: Iterable[ResolveRequest], scorer: Scorer, *, on_update: Callable[[CustomerContext], None] | None = None
) -> dict[str, CustomerContext]:
    """Each customer's context after *reqs*, built as the context stage does; *on_update* sees every new version."""
    resolver, limits, nba = Resolver({}), ContextLimits(), NBA()
    contexts: dict[str, CustomerContext] = {}
    for q in reqs:
        ev = q.event
        cid = resolver.resolve(ev.customer.present(), event_id=ev.event_id, at=ev.occurred_at,
                               refused=q.refused).customer_id or "anon"
        old = contexts.get(cid)
        if isinstance(ev, InteractionEvent):
            customer_text = ev.direction == "inbound" and ev.kind in ("message", "contact_opened")
            new, fx = apply_interaction(
                old, ev, cid, limits, identifiers=ev.customer.present(), redacted_text=ev.text,
                anonymous=cid.startswith("anon-"),
                predicted=scorer.predict_intent(ev.text) if customer_text else None,
                detected=scorer.detect_language(ev.text) if customer_text else None,
            )
            duplicate = fx.duplicate
        else:
            new, duplicate = apply_outcome(old, ev, cid, limits, identifiers=ev.customer.present())
        if duplicate:
            continue
        new = scorer.with_churn_and_health(new)
        if (isinstance(ev, InteractionEvent) and ev.kind == "contact_opened" and ev.needs_advisor
                and ev.contact_id and ev.contact_id in new.open_contacts):
            new, _ = nba.decide(new, source_id=ev.event_id, at=ev.occurred_at, channel=ev.channel, contact_id=ev.contact_id)
        contexts[cid] = new
        if on_update is not None:
            on_update(new)
    return contexts
