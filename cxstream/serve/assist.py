"""Suggested knowledge on the desk: ``GET /advisors/{id}/contacts/{contact_id}/suggestions``.

The learner publishes the ``assist`` model (:class:`cxstream.intel.assist.KnowledgeModel`, learned
from completions that name the document used) to Redis like the other models; each API process
keeps the newest snapshot (checked at most once a second, on request) and ranks documents when
an advisor asks, from the contact's own inbound messages in the customer's context (redacted
by ingest) and the contact's intent.  Computing on request, not on every message, keeps the
engine's per-message cost unchanged: only contacts an advisor looks at are ranked.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from cxstream.intel.assist import KnowledgeModel
from cxstream.serve import desk
from cxstream.serve.common import error
from cxstream.streams.modelstore import ModelCache

#: How often an API process asks Redis whether a newer snapshot exists (on request only).
REFRESH_S = 1.0
#: Suggestions shown per contact.
TOP_K = 3
#: Rankings kept per API process, by (model version, intent, contact text): the desk asks again every
#: few seconds, and a ranking costs one pass over the model's memory (docs/INTEL.md).
CACHE_SIZE = 1024


class AssistModels:
    """The newest published ``assist`` snapshot, refreshed at most every ``REFRESH_S`` when asked."""

    def __init__(self, client: aioredis.Redis, namespace: str = "") -> None:
        self.client = client
        self.cache: ModelCache[KnowledgeModel] = ModelCache("assist", KnowledgeModel, KnowledgeModel.from_bytes, namespace)
        self._checked = -math.inf
        self._ranked: OrderedDict[tuple[int, str | None, str], list[dict[str, Any]]] = OrderedDict()

    async def model(self) -> tuple[KnowledgeModel, int]:
        now = time.monotonic()
        if now - self._checked >= REFRESH_S:
            self._checked = now
            await self.cache.refresh(self.client)
        return self.cache.model, self.cache.version

    def suggest(self, model: KnowledgeModel, version: int, text: str, intent: str | None) -> tuple[list[dict[str, Any]], bool]:
        """:func:`suggestions`, remembered per (version, intent, text); also whether it was remembered."""
        key = (version, intent, text)
        found = self._ranked.get(key)
        if found is not None:
            self._ranked.move_to_end(key)
            return found, True
        found = suggestions(model, text, intent)
        self._ranked[key] = found
        if len(self._ranked) > CACHE_SIZE:
            self._ranked.popitem(last=False)
        return found, False


ASSIST: web.AppKey[AssistModels] = web.AppKey("assist", AssistModels)


def contact_words(ctx: dict[str, Any], contact_id: str) -> tuple[str, str | None]:
    """The contact's inbound message texts (oldest first, joined) and its intent, from a context's JSON.

    The same text the learner learns from when the contact completes (``apply_disposition``).

    >>> ctx = {"recent": [{"contact_id": "k", "kind": "message", "direction": "inbound", "text": "still broken"},
    ...                   {"contact_id": "k", "kind": "message", "direction": "outbound", "text": "sorry"},
    ...                   {"contact_id": "x", "kind": "message", "direction": "inbound", "text": "other"},
    ...                   {"contact_id": "k", "kind": "message", "direction": "inbound", "text": "app crashes"}],
    ...        "contacts": [{"contact_id": "k", "intent": "app_crash"}]}
    >>> contact_words(ctx, "k")
    ('app crashes still broken', 'app_crash')
    """
    texts = [
        str(s["text"]) for s in reversed(ctx.get("recent") or [])
        if s.get("contact_id") == contact_id and s.get("text") and s.get("direction", "inbound") == "inbound"
        and s.get("kind") in ("message", "contact_opened")
    ]
    intent = next((c.get("intent") for c in ctx.get("contacts") or [] if c.get("contact_id") == contact_id and c.get("intent")), None)
    if intent is None:
        intent = next(
            (p.get("intent") for p in reversed(ctx.get("intent_history") or []) if p.get("contact_id") == contact_id), None
        )
    return " ".join(texts), intent


def suggestions(model: KnowledgeModel, text: str, intent: str | None, k: int = TOP_K) -> list[dict[str, Any]]:
    """The top-*k* documents for *text* with why, as the route answers them."""
    out = []
    for s in model.rank(text, k=k, intent=intent):
        why = [f"used on {s.similar} of the {min(model.k, model._n_rows)} most similar past contacts (best cosine {s.similarity:.2f})"]
        if s.words:
            why.append("matching words: " + ", ".join(s.words))
        if intent and intent in s.intents:
            why.append(f"same intent: {intent}")
        why.append(f"resolved {s.resolved} of {s.uses} contacts it was used on")
        out.append({
            "document": s.document, "score": s.score, "similar_contacts": s.similar, "similarity": s.similarity,
            "matching_words": s.words, "intents": s.intents, "uses": s.uses, "resolved": s.resolved,
            "resolution_rate": round(s.resolved / s.uses, 4) if s.uses else None, "why": why,
        })
    return out


def add_routes(
    app: web.Application, client: aioredis.Redis, raw_context: Callable[[web.Request, str], Awaitable[bytes | None]], namespace: str = ""
) -> None:
    """The suggestions route; *raw_context* answers a customer's context JSON by canonical id (None: none)."""
    app[ASSIST] = AssistModels(client, namespace)

    @desk.guarded
    async def contact_suggestions(request: web.Request) -> web.Response:
        """Suggested documents for a contact the advisor is offered or holds, each with why."""
        advisor_id = desk._advisor(request)
        w = await desk._held(request, advisor_id, active=False)
        a = w.assignment
        try:
            model, version = await request.app[ASSIST].model()
            raw = await raw_context(request, a.customer_id)
        except (aioredis.RedisError, OSError) as exc:
            return error(503, "redis_unavailable", f"cannot read the model or the context: {exc}")
        ctx = orjson.loads(raw) if raw else {}
        text, intent = contact_words(ctx, a.contact_id)
        intent = intent or a.intent
        started = time.perf_counter()
        found, cached = request.app[ASSIST].suggest(model, version, text, intent) if text else ([], False)
        body = {
            "advisor_id": advisor_id, "contact_id": a.contact_id, "model_version": f"assist-{version}" if version else None,
            "documents_known": len(model.documents), "contacts_remembered": model._n_rows, "intent": intent,
            "words_used": len(text.split()), "suggestions": found, "cached": cached,
            "took_ms": round((time.perf_counter() - started) * 1e3, 3),
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    app.router.add_get("/advisors/{advisor_id}/contacts/{contact_id}/suggestions", contact_suggestions)
