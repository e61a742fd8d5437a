"""Scoring inside the context stage: intent of message text, churn risk of the context.

Each worker keeps the newest published snapshot of each model (polled from Redis
every ``CX_MODEL_REFRESH_S`` by :meth:`Scorer.refresh`, loaded off the event loop)
and stamps its version on every score.  Until the learner has published a model,
that model does not score: an untrained intent model would only say "unknown" and
an untrained churn model 0.5.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

from cxstream.context.model import CustomerContext
from cxstream.context.update import Prediction
from cxstream.intel.churn import ChurnModel
from cxstream.intel.features import churn_features
from cxstream.intel.intent import IntentModel
from cxstream.streams import metrics
from cxstream.streams.modelstore import ModelCache


def features_of(ctx: CustomerContext | None) -> dict[str, Any]:
    """The churn model's features from a context (its JSON form, as the model's mapping expects)."""
    return churn_features(msgspec.to_builtins(ctx)) if ctx is not None else {}


class Scorer:
    """The models this worker scores with."""

    def __init__(self) -> None:
        self.intent: ModelCache[IntentModel] = ModelCache("intent", IntentModel, IntentModel.from_bytes)
        self.churn: ModelCache[ChurnModel] = ModelCache("churn", ChurnModel, ChurnModel.from_bytes)

    async def refresh(self, client: aioredis.Redis) -> None:
        for cache in (self.intent, self.churn):
            if await cache.refresh(client):
                metrics.MODEL_VERSION.labels(cache.name).set(cache.version)

    def predict_intent(self, text: str | None) -> Prediction | None:
        if not text or self.intent.version == 0:
            return None
        started = time.perf_counter()
        label, confidence = self.intent.model.predict_one(text)
        metrics.MODEL_PREDICT_SECONDS.labels("intent").observe(time.perf_counter() - started)
        return Prediction(
            intent=None if label == "unknown" else label,
            confidence=round(float(confidence), 4),
            model_version=f"intent-{self.intent.version}",
        )

    def churn_risk(self, ctx: CustomerContext) -> tuple[float, str] | None:
        if self.churn.version == 0:
            return None
        started = time.perf_counter()
        p = self.churn.model.predict_proba_one(features_of(ctx))
        metrics.MODEL_PREDICT_SECONDS.labels("churn").observe(time.perf_counter() - started)
        return round(float(p), 4), f"churn-{self.churn.version}"
