"""Scoring inside the context stage: intent of message text, churn risk of the context.

Each worker keeps the newest published snapshot of each model (polled from Redis
every ``CX_MODEL_REFRESH_S`` by :meth:`Scorer.refresh`, loaded off the event loop)
and stamps its version on every score.  Until the learner has published a model,
that model does not score: an untrained intent model would only say "unknown" and
an untrained churn model 0.5.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cxstream.agents.nba import NBA
from cxstream.context.language import Detection as LanguageDetection
from cxstream.context.language import LanguageConfigError, LanguageDetector, parse_languages
from cxstream.context.model import ChurnReason, ContactRecord, CustomerContext, HealthFactor
from cxstream.context.update import ContextLimits, Prediction, set_churn
from cxstream.intel.churn import ChurnModel
from cxstream.intel.features import churn_features, churn_reasons
from cxstream.intel.health import band, health_score
from cxstream.intel.intent import IntentModel, ScoringIntentModel
from cxstream.streams import metrics
from cxstream.streams.modelstore import ModelCache
from cxstream.streams.settings import Settings, SettingsError

log = logging.getLogger(__name__)

DAY_S = 86400.0
NEGATIVE_SENTIMENT = -0.05  # VADER's usual cut: a compound score at or below it is a negative message
ENGAGEMENT_WINDOW_S = 30 * DAY_S  # contacts, repeat contacts, failed payments and complaints: the last 30 days


def churn_inputs(ctx: CustomerContext) -> dict[str, Any]:
    """What the churn model reads from a live context: the keys of :func:`churn_features`.

    As of the context's last update (``updated_at``, the event time: replays give the same
    features).  Account facts are the ones business systems sent in ``profile`` outcomes
    (``ctx.account``); engagement comes from the context's bounded logs:

    * ``contacts_30d``: contacts opened in the last 30 days (the contact log keeps 32);
    * ``repeat_contacts``: those that repeat an earlier unresolved contact with the same intent
      within the repeat window (7 days), as ``repeat_contact`` does for the latest one;
    * ``failed_payments``, ``complaints``: such events among the last interactions in the
      window, at least 1 when the latest one (``milestones``) is in the window;
    * ``negative_sentiment``: the share of negative messages among the recent ones;
      ``sentiment_trend`` as the context has it;
    * ``days_since_contact``: days since the latest contact opened (absent without one).
    """
    now = ctx.updated_at
    since = now - ENGAGEMENT_WINDOW_S
    out: dict[str, Any] = dict(ctx.account)
    products = out.get("products")
    if isinstance(products, str):
        out["products"] = [p for p in products.split("|") if p.strip()]
    contacts = [c for c in ctx.contacts if c.opened_at >= since]
    out["contacts_30d"] = len(contacts)
    out["repeat_contacts"] = _repeats(ctx.contacts, since)
    payments = complaints = 0
    for r in ctx.recent:
        if r.at >= since:
            if r.kind in ("payment_failed", "outcome:payment_failed"):
                payments += 1
            elif r.kind == "outcome:complaint":
                complaints += 1
    for kind, n, key in (("payment_failed", payments, "failed_payments"), ("complaint", complaints, "complaints")):
        at = ctx.milestones.get(kind)
        out[key] = max(n, 1) if at is not None and at >= since else n
    if ctx.sentiment_recent:
        neg = sum(1 for p in ctx.sentiment_recent if p.score <= NEGATIVE_SENTIMENT)
        out["negative_sentiment"] = neg / len(ctx.sentiment_recent)
    if ctx.sentiment_trend is not None:
        out["sentiment_trend"] = ctx.sentiment_trend
    if ctx.contacts:
        out["days_since_contact"] = max(0.0, now - ctx.contacts[-1].opened_at) / DAY_S
    return out


def health_inputs(ctx: CustomerContext, churn: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the health score (:func:`cxstream.intel.health.health_score`) reads from a live context.

    :func:`churn_inputs` (account facts, contacts, repeats, complaints, failed payments, sentiment),
    plus ``unresolved_contacts`` (contacts in the last 30 days an advisor's disposition or a
    ``contact_closed`` said were not resolved), ``csat`` (running mean, 1-5), ``nps`` (the latest
    answer, 0-10) and ``churn_risk`` (the churn model's, when it has scored the customer).
    *churn*: :func:`churn_inputs` of this context when the caller has them already (the context
    stage scores churn first; a churn score changes nothing they read), copied instead of computed again.

    >>> ctx = CustomerContext(customer_id="c", created_at=0, updated_at=10, csat_avg=2.0, csat_count=2,
    ...     contacts=[ContactRecord(contact_id="k", channel="chat", opened_at=5, resolved=False)])
    >>> i = health_inputs(ctx); (i["csat"], i["unresolved_contacts"], "nps" in i)
    (2.0, 1, False)
    """
    out = dict(churn) if churn is not None else churn_inputs(ctx)
    since = ctx.updated_at - ENGAGEMENT_WINDOW_S
    out["unresolved_contacts"] = sum(1 for c in ctx.contacts if c.opened_at >= since and c.resolved is False)
    if ctx.csat_count and ctx.csat_avg is not None:
        out["csat"] = ctx.csat_avg
    if ctx.nps_count and ctx.nps_last is not None:
        out["nps"] = ctx.nps_last
    if ctx.churn_risk is not None:
        out["churn_risk"] = ctx.churn_risk
    return out


def with_health(ctx: CustomerContext, churn: Mapping[str, Any] | None = None) -> CustomerContext:
    """The context with its health score, band and top factors (as of its ``updated_at``: replays agree).

    *churn*: the context's :func:`churn_inputs`, when the caller computed them (see :func:`health_inputs`).

    >>> c = with_health(CustomerContext(customer_id="c", created_at=0, updated_at=0, nps_last=10.0, nps_count=1))
    >>> c.health, c.health_band, [(f.factor, f.points) for f in c.health_factors]
    (71, 'healthy', [('nps', 8.0)])
    """
    score, factors = health_score(health_inputs(ctx, churn))
    top = [HealthFactor(factor=f.factor, value=f.value, points=f.points) for f in factors]
    if score == ctx.health and top == ctx.health_factors:
        return ctx
    return msgspec.structs.replace(ctx, health=score, health_band=band(score), health_factors=top)


def _repeats(contacts: list[ContactRecord], since: float, window_s: float = ContextLimits.repeat_window_s) -> int:
    """Contacts opened since *since* that repeat an earlier unresolved one with the same intent within *window_s*."""
    earlier: dict[str, list[ContactRecord]] = {}
    n = 0
    for c in contacts:  # oldest first
        if c.intent:
            prior = earlier.setdefault(c.intent, [])
            if c.opened_at >= since and any(
                c.opened_at - e.opened_at <= window_s and e.resolved is not True for e in prior
            ):
                n += 1
            prior.append(c)
    return n


def features_of(ctx: CustomerContext | None) -> dict[str, Any]:
    """The churn model's features of a live context (:func:`churn_inputs` through :func:`churn_features`)."""
    return churn_features(churn_inputs(ctx)) if ctx is not None else {}


def language_detector(settings: Settings) -> LanguageDetector | None:
    """The message language detector ``CX_LANGUAGES`` asks for (None: fewer than two languages, detection off).

    Built once per worker, its model loaded at start, so no message pays a load.
    """
    try:
        codes = parse_languages(settings.languages)
        if len(codes) < 2:
            return None
        return LanguageDetector(
            codes, settings.language_min_confidence, bool(settings.language_low_accuracy), settings.language_detector
        )
    except LanguageConfigError as exc:
        raise SettingsError(f"CX_LANGUAGES={settings.languages!r}: {exc}") from exc


class Scorer:
    """The models this worker scores with, and its message language detector (None: off)."""

    def __init__(self, languages: LanguageDetector | None = None, *, nba: NBA | None = None, namespace: str = "") -> None:
        self.languages = languages
        self.nba = nba or NBA()  # next-best action: decides even untrained (it must explore to learn)
        self._language_seconds = metrics.MODEL_PREDICT_SECONDS.labels("language")
        self._language_counts = {code: metrics.MESSAGE_LANGUAGES.labels(code) for code in (*(languages.languages if languages else ()), "unknown")}
        # scoring only: a fraction of the learning model's load (see ScoringIntentModel)
        self.intent: ModelCache[IntentModel] = ModelCache("intent", IntentModel, ScoringIntentModel.from_bytes, namespace)
        self.churn: ModelCache[ChurnModel] = ModelCache("churn", ChurnModel, ChurnModel.from_bytes, namespace)
        self._intent_seconds = metrics.MODEL_PREDICT_SECONDS.labels("intent")  # labels() costs ~1.5 µs a call
        self._churn_seconds = metrics.MODEL_PREDICT_SECONDS.labels("churn")

    async def refresh(self, client: aioredis.Redis) -> None:
        for cache in (self.intent, self.churn, self.nba.cache):
            try:
                changed = await cache.refresh(client)
            except RedisError as exc:  # Redis went away mid-way: keep scoring with the model we have
                log.warning("model %s: cannot load the newer snapshot: %r", cache.name, exc)
                continue
            if changed:
                metrics.MODEL_VERSION.labels(cache.name).set(cache.version)

    def detect_language(self, text: str | None) -> LanguageDetection | None:
        """The language of an inbound text (None: detection off, or no text)."""
        if self.languages is None or not text:
            return None
        started = time.perf_counter()
        found = self.languages.detect(text)
        self._language_seconds.observe(time.perf_counter() - started)
        self._language_counts[found.language].inc()
        return found

    def predict_intent(self, text: str | None) -> Prediction | None:
        if not text or self.intent.version == 0:
            return None
        started = time.perf_counter()
        label, confidence = self.intent.model.predict_one(text)
        self._intent_seconds.observe(time.perf_counter() - started)
        return Prediction(
            intent=None if label == "unknown" else label,
            confidence=round(float(confidence), 4),
            model_version=f"intent-{self.intent.version}",
        )

    def churn_risk(
        self, ctx: CustomerContext, inputs: dict[str, Any] | None = None
    ) -> tuple[float, str, list[ChurnReason]] | None:
        """P(churn) of the context, the model's version and the facts that raise it most.

        *inputs*: the context's :func:`churn_inputs` when the caller has them (it passes them on to
        :func:`with_health` too); computed here otherwise."""
        if self.churn.version == 0:
            return None
        started = time.perf_counter()
        if inputs is None:
            inputs = churn_inputs(ctx)
        p, shares = self.churn.model.explain_one(churn_features(inputs))
        reasons = [ChurnReason(factor=k, value=v, weight=w) for k, v, w in churn_reasons(shares, inputs)]
        self._churn_seconds.observe(time.perf_counter() - started)
        return round(float(p), 4), f"churn-{self.churn.version}", reasons

    def with_churn_and_health(self, ctx: CustomerContext) -> CustomerContext:
        """*ctx*, fresh from ``apply_interaction`` or ``apply_outcome``, with its churn risk and health score.

        The churn model's inputs are taken once and read by both; the churn score goes in with
        :func:`set_churn` (only the journey stage reads it), not a full ``set_scores``.
        """
        inputs = churn_inputs(ctx)
        risk = self.churn_risk(ctx, inputs)
        if risk is not None:
            ctx = set_churn(ctx, churn_risk=risk[0], model_version=risk[1], churn_reasons=risk[2])
        return with_health(ctx, inputs)
