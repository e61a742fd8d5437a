"""API keys with scopes: which key opens which route.

An entry of ``CX_API_KEYS`` (comma-separated) or of the file ``CX_API_KEYS_FILE`` (one per
line, ``#`` comments) is either ``KEY``, which opens every route, or ``SCOPES:KEY`` with
``SCOPES`` one or more of the scopes below joined by ``+`` (``read+advisor:k3y``):

| scope | opens |
|---|---|
| ``read`` | customer contexts, queue statistics, the wallboard's data |
| ``advisor`` | every advisor's desk routes (``/advisors/{id}/...`` but ``/key``), the chat routes |
| ``admin`` | erasure requests and their status, ``/metrics``, issuing desk keys |

A route not listed in :data:`ROUTE_SCOPES` needs ``admin``.  Keys are compared in constant
time against every configured key (no early exit), and never logged: the middleware's 401/403
and any error only ever name the scope that was missing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

SCOPES: tuple[str, ...] = ("read", "advisor", "admin")
ALL: frozenset[str] = frozenset(SCOPES)

ROUTE_SCOPES: dict[str, str] = {
    "/customers/context": "read",
    "/customers/{customer_id}/context": "read",
    "/queues": "read",
    "/queues/{group}": "read",
    "/wallboard/data": "read",
    "/chat/messages": "advisor",
    "/chat/contacts/{contact_id}/close": "advisor",
    "/metrics": "admin",
    "/customers/erase": "admin",
    "/customers/{customer_id}/erase": "admin",
    "/erasures/{request_id}": "admin",
    "/advisors/{advisor_id}/key": "admin",
}


def parse_keys(entries: Iterable[str]) -> dict[str, frozenset[str]]:
    """Each key and the scopes it opens; a ``ValueError`` names an unknown scope or an empty key.

    >>> parse_keys(["k1", "read:k2", "read+advisor:k3"]) == {
    ...     "k1": ALL, "k2": frozenset({"read"}), "k3": frozenset({"read", "advisor"})}
    True
    >>> parse_keys(["write:k4"])
    Traceback (most recent call last):
    ...
    ValueError: an API key entry has the unknown scope 'write' (scopes: read, advisor, admin)
    """
    out: dict[str, frozenset[str]] = {}
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        head, sep, key = entry.partition(":")
        if not sep:
            out[entry] = ALL
            continue
        scopes = frozenset(s.strip() for s in head.split("+"))
        unknown = sorted(scopes - ALL)
        if unknown:  # the message names the scope, never the key
            raise ValueError(f"an API key entry has the unknown scope {unknown[0]!r} (scopes: {', '.join(SCOPES)})")
        if not key.strip():
            raise ValueError(f"API key entry with scopes {head!r} has no key after the ':'")
        out[key.strip()] = out.get(key.strip(), frozenset()) | scopes
    return out


def scopes_of(presented: str, keys: dict[str, frozenset[str]]) -> frozenset[str] | None:
    """The scopes *presented* opens, None if it is no configured key (compared with every key, in constant time each)."""
    found: frozenset[str] | None = None
    given = presented.encode()
    for key, scopes in keys.items():
        if hmac.compare_digest(given, key.encode()):
            found = scopes
    return found


def scope_for(route: str, advisor_routes: frozenset[str]) -> str:
    """The scope a route needs: :data:`ROUTE_SCOPES`, ``advisor`` for the desk routes, else ``admin``.

    >>> scope_for("/queues", frozenset()), scope_for("/advisors/{advisor_id}/login", frozenset({"/advisors/{advisor_id}/login"}))
    ('read', 'advisor')
    >>> scope_for("/something/new", frozenset())
    'admin'
    """
    scope = ROUTE_SCOPES.get(route)
    if scope is not None:
        return scope
    return "advisor" if route in advisor_routes else "admin"
