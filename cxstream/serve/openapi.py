"""The OpenAPI 3.1 document of the HTTP API (``GET /openapi.json``).

Request bodies and the records answered are described by the same msgspec types the
handlers decode with, so the document cannot drift from what the API accepts.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from cxstream.context.identity import PRECEDENCE
from cxstream.schemas import Assignment
from cxstream.serve.desk import (
    ADVISOR_ROUTES,
    CompleteBody,
    LoginBody,
    LogoutBody,
    NBAAnswer,
    PresenceBody,
    TransferBody,
)
from cxstream.serve.keys import scope_for
from cxstream.serve.pages import ChatClose, ChatMessage

_ERROR = {"$ref": "#/components/schemas/Error"}
_ADMIN: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]


def _op(summary: str, *, body: str | None = None, ok: str = "200", answer: Any = None, auth: str = "api", errors: tuple[int, ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {ok: {"description": "OK" if ok == "200" else "Accepted"}}}
    if answer is not None:
        op["responses"][ok]["content"] = {"application/json": {"schema": answer}}
    if body is not None:
        op["requestBody"] = {"required": body in ("PresenceBody", "CompleteBody", "ChatMessage"), "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}}
    if auth == "none":
        op["security"] = []
    elif auth == "advisor":
        op["security"] = [*_ADMIN, {"deskKey": []}]
        op["description"] = "The API key, or the desk key of this advisor (POST /advisors/{advisor_id}/key)."
    else:
        op["security"] = _ADMIN
    for code in (*errors, *((401,) if auth != "none" else ())):
        op["responses"][str(code)] = {"description": {400: "Invalid input; the error says what", 401: "Missing or wrong key",
            404: "Unknown", 409: "Conflict", 503: "Broker or Redis unavailable"}[code], "content": {"application/json": {"schema": _ERROR}}}
    return op


def _param(name: str, where: str = "path") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if name == "advisor_id":  # what the desk routes accept (cxstream.serve.desk.AdvisorId); others answer 400
        schema["pattern"] = r"^[A-Za-z0-9_.@-]{1,128}$"
    return {"name": name, "in": where, "required": where == "path", "schema": schema}


#: Routes that name a customer by identifiers in the query (``?email=...``): one optional parameter per kind.
_BY_IDENTIFIERS = ("/customers/context", "/customers/erase", "/customers/{customer_id}/erase")


_SUGGESTIONS: dict[str, Any] = {"type": "object", "properties": {
    "advisor_id": {"type": "string"}, "contact_id": {"type": "string"}, "model_version": {"type": ["string", "null"]},
    "documents_known": {"type": "integer"}, "contacts_remembered": {"type": "integer"}, "intent": {"type": ["string", "null"]},
    "words_used": {"type": "integer"}, "took_ms": {"type": "number"},
    "cached": {"type": "boolean", "description": "the same model version, intent and words were ranked before"},
    "suggestions": {"type": "array", "items": {"type": "object", "properties": {
        "document": {"type": "string"}, "score": {"type": "number", "description": "share of the nearest contacts' votes"},
        "similar_contacts": {"type": "integer"}, "similarity": {"type": "number"},
        "matching_words": {"type": "array", "items": {"type": "string"}}, "intents": {"type": "array", "items": {"type": "string"}},
        "uses": {"type": "integer"}, "resolved": {"type": "integer"}, "resolution_rate": {"type": ["number", "null"]},
        "why": {"type": "array", "items": {"type": "string"}}}}},
}}


@functools.cache
def document() -> dict[str, Any]:
    """The document (built once per process).

    >>> d = document()
    >>> d["openapi"], "/advisors/{advisor_id}/offers/{assignment_id}/accept" in d["paths"]
    ('3.1.0', True)
    >>> d["paths"]["/metrics"]["get"]["x-cx-scope"], d["paths"]["/queues"]["get"]["x-cx-scope"]
    ('admin', 'read')
    """
    types = (LoginBody, PresenceBody, LogoutBody, TransferBody, CompleteBody, ChatMessage, ChatClose, Assignment, NBAAnswer)
    _, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    components["Error"] = {"type": "object", "required": ["error", "detail"], "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}
    work = {"type": "object", "properties": {"advisor_id": {"type": "string"}, "work": {"type": "array", "items": {"allOf": [
        {"$ref": "#/components/schemas/Assignment"},
        {"type": "object", "properties": {"status": {"enum": ["offered", "active"]}, "offered_at": {"type": "number"}, "expires_at": {"type": "number"}}},
    ]}}}}
    adv = "/advisors/{advisor_id}"
    paths: dict[str, dict[str, Any]] = {
        "/healthz": {"get": _op("Health of the API, Redis and the engine", auth="none", errors=(503,))},
        "/livez": {"get": _op("Liveness of the API process and its engine (needs neither Redis nor the broker)", auth="none", errors=(503,))},
        "/metrics": {"get": _op("Prometheus metrics")},
        "/customers/{customer_id}/context": {"get": _op("A customer's 360° context", errors=(400, 404, 409))},
        "/customers/context": {"get": _op("A customer's context by one identifier (query: email, phone, ...)", errors=(400, 404, 409))},
        "/customers/{customer_id}/erase": {"post": _op("Request erasure (GDPR/CCPA)", ok="202", errors=(400, 503))},
        "/customers/erase": {"post": _op("Request erasure of the customer named by identifiers (query: email, phone, ...)", ok="202", errors=(400, 503))},
        "/erasures/{request_id}": {"get": _op("Progress of an erasure request", errors=(404,))},
        "/queues": {"get": _op("Live statistics of every routing group")},
        "/queues/{group}": {"get": _op("Live statistics of one routing group", errors=(404,))},
        adv + "/key": {"post": _op("Issue the advisor's desk key (API key only)", answer={"type": "object", "properties": {"advisor_id": {"type": "string"}, "key": {"type": "string"}}}, errors=(400,))},
        adv + "/login": {"post": _op("Sign in (AdvisorEvent login)", body="LoginBody", ok="202", auth="advisor", errors=(400, 503))},
        adv + "/presence": {"post": _op("Set presence (AdvisorEvent presence)", body="PresenceBody", ok="202", auth="advisor", errors=(400, 503))},
        adv + "/logout": {"post": _op("Sign out (AdvisorEvent logout)", body="LogoutBody", ok="202", auth="advisor", errors=(400, 503))},
        adv + "/work": {"get": _op("The advisor's offers and contacts", answer=work, auth="advisor", errors=(400, 503))},
        adv + "/events": {"get": _op("Live offers: server-sent events, 'event: work' with the same body as /work after each change", auth="advisor",
                                     answer={"type": "string"}, errors=(400, 503))},
        adv + "/offers/{assignment_id}/accept": {"post": _op("Accept an offer (AdvisorEvent offer_accepted)", ok="202", auth="advisor", errors=(400, 404, 409, 503))},
        adv + "/offers/{assignment_id}/reject": {"post": _op("Reject an offer (AdvisorEvent offer_rejected)", ok="202", auth="advisor", errors=(400, 404, 409, 503))},
        adv + "/contacts/{contact_id}/transfer": {"post": _op("Transfer a held contact (AdvisorEvent contact_transferred)", body="TransferBody", ok="202", auth="advisor", errors=(400, 404, 409, 503))},
        adv + "/contacts/{contact_id}/complete": {"post": _op("Complete with a disposition (AdvisorEvent contact_completed, then contact_closed)", body="CompleteBody", ok="202", auth="advisor", errors=(400, 404, 409, 503))},
        adv + "/contacts/{contact_id}/context": {"get": _op("Context of the customer of an offered or held contact", auth="advisor", errors=(400, 404, 409))},
        adv + "/contacts/{contact_id}/suggestions": {"get": _op(
            "Suggested knowledge for an offered or held contact: documents that resolved similar contacts, each with why",
            answer=_SUGGESTIONS, auth="advisor", errors=(400, 404, 409, 503))},
        adv + "/contacts/{contact_id}/nba": {"get": _op(
            "Next-best actions of an offered or held contact: ranked (the chosen one first), each with its estimated reward, "
            "probability and the model that answered; the decision's logged propensity", answer={"$ref": "#/components/schemas/NBAAnswer"},
            auth="advisor", errors=(400, 404, 409, 503))},
        "/wallboard/data": {"get": _op("Everything the wallboard shows", errors=(503,))},
        "/chat/messages": {"post": _op("A customer's chat message (opens a routed chat contact first)", body="ChatMessage", ok="202", errors=(400, 503))},
        "/chat/contacts/{contact_id}/close": {"post": _op("The customer ends the chat", body="ChatClose", ok="202", errors=(400, 503))},
        "/desk": {"get": _op("Advisor desktop page", auth="none")},
        "/wallboard": {"get": _op("Supervisor wallboard page", auth="none")},
        "/chat": {"get": _op("Customer chat page", auth="none")},
        "/openapi.json": {"get": _op("This document", auth="none")},
    }
    # the live feed answers a text/event-stream (its errors are JSON like the others')
    paths[adv + "/events"]["get"]["responses"]["200"] = {"description": "text/event-stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}
    for path, ops in paths.items():
        names = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
        for op in ops.values():
            op["parameters"] = [_param(n) for n in names]
            if path in _BY_IDENTIFIERS:
                op["parameters"] += [_param(kind, "query") for kind in PRECEDENCE]
            if op["security"]:  # the scope an API key needs (cxstream.serve.keys); a desk key opens its own advisor's routes
                scope = op["x-cx-scope"] = scope_for(path, ADVISOR_ROUTES)
                op["description"] = f"{op.get('description', '')} API keys need the {scope!r} scope.".strip()
                op["responses"]["403"] = {"description": "The key lacks the route's scope, or is another advisor's desk key",
                                          "content": {"application/json": {"schema": _ERROR}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "cxstream HTTP API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                           "description": "An API key: KEY opens every route, SCOPES:KEY in CX_API_KEYS only the routes whose x-cx-scope it has (read, advisor, admin)"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "The same API key as a bearer token"},
                "deskKey": {"type": "http", "scheme": "bearer", "description": "An advisor's desk key (cxa_...)"},
            },
        },
    }
