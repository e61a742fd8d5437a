"""Next-best action inside the context stage: decide, remember the decision, turn outcomes into rewards.

The policy is :class:`cxstream.intel.nba.NBAPolicy` (the learner trains it and publishes
snapshots; each worker scores with the newest).  This module is the glue around it:

* **decisions**: for each contact that opens needing an advisor, and for each outreach the
  outreach stage sends, the policy ranks the eligible actions from the context's features and
  chooses one (ε-greedy, the propensity logged); the :class:`~cxstream.schemas.NextBestAction`
  goes to ``cx.nba.v1`` and is kept in the context (``CustomerContext.nba``, at most
  :data:`MAX_PENDING`), where the desk reads it;
* **rewards** (docs/INTEL.md "Next-best action"): a contact decision is rewarded when its contact is
  completed: 1 if the advisor marked it resolved, else 0; an outreach decision by the customer's
  next ``retained`` (1) or ``churned`` (0) outcome.  Only within the attribution window
  (``CX_NBA_WINDOW_DAYS``) of the decision; a decision with no outcome in it is dropped unlearned.
  The action learned is the one the advisor reports (``disposition.action``), else the recommended one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from cxstream.context.model import NBA_PENDING_MAX, CustomerContext
from cxstream.intel.nba import NBAConfig, NBAPolicy
from cxstream.schemas import NextBestAction, OutcomeEvent, RankedAction, RoutingEvent
from cxstream.schemas.learning import NBALabel
from cxstream.streams.modelstore import ModelCache
from cxstream.streams.settings import Settings

replace = msgspec.structs.replace

MAX_PENDING = NBA_PENDING_MAX
#: Tiers (``profile`` outcome ``tier``, lower-cased) for which ``vip_desk`` is an eligible action.
VIP_TIERS = frozenset({"vip", "gold", "platinum", "premium"})
CONTACT_ACTIONS = ("resolve", "offer_retention", "call_back", "escalate_tier")
OUTREACH_ACTIONS = ("offer_retention", "call_back", "resolve")


def config_from(settings: Settings) -> NBAConfig:
    return NBAConfig(epsilon=settings.nba_epsilon, alpha=settings.nba_alpha, min_pulls=settings.nba_min_pulls)


def features(ctx: CustomerContext, channel: str | None) -> dict[str, float | str]:
    """What the policy reads from a context: scores, sentiment, contact history, satisfaction, value, channel.

    >>> features(CustomerContext(customer_id="c", created_at=0, updated_at=0, churn_risk=0.8, tier="Gold"), "chat")
    {'churn_risk': 0.8, 'contacts_7d': 0.0, 'repeat_contact': 0.0, 'open_contacts': 0.0, 'tier': 'gold', 'channel': 'chat'}
    """
    out: dict[str, float | str] = {}
    if ctx.churn_risk is not None:
        out["churn_risk"] = round(ctx.churn_risk, 4)
    if ctx.sentiment_avg is not None:
        out["sentiment"] = round(ctx.sentiment_avg, 4)
    out["contacts_7d"] = float(min(ctx.contacts_7d, 10))
    out["repeat_contact"] = 1.0 if ctx.repeat_contact else 0.0
    out["open_contacts"] = float(min(len(ctx.open_contacts), 5))
    if ctx.csat_avg is not None:
        out["csat"] = round((ctx.csat_avg - 1.0) / 4.0, 4)  # 1..5 -> 0..1
    if ctx.value is not None and ctx.value > 0:
        out["log_value"] = round(math.log10(1.0 + ctx.value), 4)
    if ctx.tier:
        out["tier"] = ctx.tier.lower()
    if channel:
        out["channel"] = channel
    return out


def eligible(ctx: CustomerContext, base: Sequence[str]) -> list[str]:
    """The actions that apply: ``vip_desk`` for VIP tiers only."""
    out = list(base)
    if ctx.tier and ctx.tier.lower() in VIP_TIERS:
        out.append("vip_desk")
    return out


class NBA:
    """The policy this worker decides with (hot-swapped from the learner's snapshots) and the decision logic."""

    def __init__(self, config: NBAConfig | None = None, window_s: float = 7 * 86400.0, namespace: str = "") -> None:
        self.config = config or NBAConfig()
        self.window_s = window_s
        cfg = self.config
        self.cache: ModelCache[NBAPolicy] = ModelCache(
            "nba", lambda: NBAPolicy(cfg), lambda b: NBAPolicy.from_bytes(b, cfg), namespace
        )

    def decide(self, ctx: CustomerContext, *, source_id: str, at: float, channel: str | None,
               contact_id: str | None = None, outreach_id: str | None = None) -> tuple[CustomerContext, NextBestAction]:
        """Decide for a contact or an outreach; returns the context that remembers the decision, and the decision."""
        x = features(ctx, channel)
        base = OUTREACH_ACTIONS if outreach_id is not None else CONTACT_ACTIONS
        d = self.cache.model.decide(x, ctx.latest_intent, f"nba:{source_id}", eligible(ctx, base))
        rec = NextBestAction(
            decision_id=d.decision_id, customer_id=ctx.customer_id, decided_at=at, intent=d.intent,
            chosen=d.chosen,  # type: ignore[arg-type]
            propensity=round(d.propensity, 6), greedy=d.greedy, explored=d.explored,  # type: ignore[arg-type]
            epsilon=d.epsilon, model_version=f"nba-{self.cache.version}", features=x,
            ranked=[RankedAction(action=r.action, estimate=r.estimate, score=r.score, probability=r.probability,  # type: ignore[arg-type]
                                 pulls=r.pulls, source=r.source, document_id=r.document_id)  # type: ignore[arg-type]
                    for r in d.ranked],
            contact_id=contact_id, outreach_id=outreach_id,
        )
        pending = [p for p in self._live(ctx, at) if p.decision_id != rec.decision_id]
        pending = [*pending, rec][-MAX_PENDING:]
        return replace(ctx, nba=pending), rec

    def _live(self, ctx: CustomerContext, at: float) -> list[NextBestAction]:
        return [p for p in ctx.nba if at - p.decided_at <= self.window_s]

    def on_completion(self, ctx: CustomerContext, ev: RoutingEvent) -> tuple[CustomerContext, list[NBALabel]]:
        """A completed contact rewards its decision: 1 if resolved, else 0."""
        if ev.disposition is None or not ctx.nba:
            return ctx, []
        d = ev.disposition
        labels, kept = [], []
        for p in ctx.nba:
            if p.contact_id != ev.contact_id or p.contact_id is None:
                kept.append(p)
                continue
            if ev.at - p.decided_at > self.window_s:
                continue  # outside the attribution window: dropped unlearned
            labels.append(self._label(p, ev.event_id, ev.at, d.action or p.chosen, 1.0 if d.resolved else 0.0,
                                      "resolved" if d.resolved else "unresolved", d.document))
        if len(kept) == len(ctx.nba):
            return ctx, []
        return replace(ctx, nba=kept), labels

    def on_outcome(self, ctx: CustomerContext, ev: OutcomeEvent) -> tuple[CustomerContext, list[NBALabel]]:
        """A ``retained``/``churned`` outcome rewards the customer's outreach decisions in the window (1 / 0)."""
        if ev.kind not in ("retained", "churned") or not ctx.nba:
            return ctx, []
        reward = 1.0 if ev.kind == "retained" else 0.0
        labels, kept = [], []
        for p in ctx.nba:
            if p.outreach_id is None or (ev.outreach_id is not None and ev.outreach_id != p.outreach_id):
                kept.append(p)
                continue
            if 0.0 <= ev.occurred_at - p.decided_at <= self.window_s:
                labels.append(self._label(p, ev.event_id, ev.occurred_at, p.chosen, reward, ev.kind, None))
            elif ev.occurred_at < p.decided_at:
                kept.append(p)  # an outcome from before the decision says nothing about it
        if len(kept) == len(ctx.nba):
            return ctx, []
        return replace(ctx, nba=kept), labels

    @staticmethod
    def _label(p: NextBestAction, event_id: str, at: float, action: str, reward: float, reason: str,
               document_id: str | None) -> NBALabel:
        return NBALabel(
            event_id=f"{p.decision_id}:{event_id}", at=at, decision_id=p.decision_id, intent=p.intent,
            features=dict(p.features), action=action, recommended=p.chosen, propensity=p.propensity,
            reward=reward, reason=reason, document_id=document_id,
        )
