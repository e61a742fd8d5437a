"""API keys with scopes on a running engine: each key opens the routes of its scopes, 403 elsewhere; no key is printed."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cxstream.streams.logs import worker_ready
from tests.integration.conftest import API_KEY, RunningEngine, start_engine, stop_engine
from tests.integration.test_pipeline import uid

pytestmark = pytest.mark.integration

KEYS = {scope: f"{scope}-{secrets.token_urlsafe(18)}" for scope in ("read", "advisor", "admin", "read+advisor")}

#: (method, path, body, the scope it needs)
ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/queues", None, "read"),
    ("GET", "/customers/nobody-here/context", None, "read"),
    ("GET", "/customers/context?email=nobody@example.org", None, "read"),
    ("GET", "/wallboard/data", None, "read"),
    ("POST", "/chat/messages", {"text": "hello", "email": "scopes@example.org"}, "advisor"),
    ("POST", "/advisors/scope-ann/login", {"routing_group": "scopes"}, "advisor"),
    ("GET", "/advisors/scope-ann/work", None, "advisor"),
    ("GET", "/metrics", None, "admin"),
    ("POST", "/customers/nobody-here/erase", {}, "admin"),
    ("GET", "/erasures/no-such-request", None, "admin"),
    ("POST", "/advisors/scope-ann/key", None, "admin"),
]


def call(base: str, path: str, method: str, body: Any, key: str) -> tuple[int, Any]:
    """Status and body (JSON when it is JSON) of one request with *key*."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"X-API-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            status, raw, kind = resp.status, resp.read(), resp.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        with exc:
            status, raw, kind = exc.code, exc.read(), exc.headers.get_content_type()
    return status, json.loads(raw) if kind == "application/json" else raw.decode()


@pytest.fixture(scope="module")
def scoped_engine(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    base = tmp_path_factory.mktemp("scopes")
    keyfile = base / "keys"
    keyfile.write_text("# one entry per line\n" + "".join(f"{k}\n" if s == "all" else f"{s}:{k}\n" for s, k in KEYS.items()))
    tag = uid("s")[-8:]
    e = start_engine(servers[0], servers[1], base, f"s{tag}.", f"cxscopes-{tag}", CX_API_KEYS_FILE=str(keyfile))
    yield e
    stop_engine(e)


@pytest.mark.parametrize(("method", "path", "body", "needs"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_each_key_opens_the_routes_of_its_scopes_and_no_other(
    scoped_engine: RunningEngine, method: str, path: str, body: Any, needs: str
) -> None:
    for scopes, key in KEYS.items():
        status, answer = call(scoped_engine.http, path, method, body, key=key)
        if needs in scopes.split("+"):
            assert status not in (401, 403), (scopes, status, answer)
        else:
            assert (status, answer["error"]) == (403, "forbidden"), (scopes, status, answer)
            assert repr(needs) in answer["detail"] and key not in answer["detail"]
    # the unscoped key of CX_API_KEYS opens everything; a wrong key nothing
    status, answer = call(scoped_engine.http, path, method, body, key=API_KEY)
    assert status not in (401, 403), (status, answer)
    assert call(scoped_engine.http, path, method, body, key="not-a-key")[0] == 401


def test_no_key_reaches_the_engines_output(scoped_engine: RunningEngine) -> None:
    out = scoped_engine.output()
    assert worker_ready(out, scoped_engine.proc.pid)
    for key in [*KEYS.values(), API_KEY]:
        assert key not in out


def test_an_unknown_scope_stops_the_engine_with_a_message_that_names_the_scope_not_the_key(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    secret = secrets.token_urlsafe(18)
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"write:{secret}\n")
    with pytest.raises(RuntimeError) as failed:
        e = start_engine(servers[0], servers[1], tmp_path, "bad.", "cxbadscope", CX_API_KEYS_FILE=str(keyfile))
        stop_engine(e)
    assert "unknown scope 'write'" in str(failed.value) and secret not in str(failed.value)


TEMPLATES = {
    "/customers/nobody-here/context": "/customers/{customer_id}/context", "/customers/context?email=nobody@example.org": "/customers/context",
    "/advisors/scope-ann/login": "/advisors/{advisor_id}/login", "/advisors/scope-ann/work": "/advisors/{advisor_id}/work",
    "/customers/nobody-here/erase": "/customers/{customer_id}/erase", "/erasures/no-such-request": "/erasures/{request_id}",
    "/advisors/scope-ann/key": "/advisors/{advisor_id}/key",
}


def test_the_openapi_document_states_the_scope_each_route_enforces(scoped_engine: RunningEngine) -> None:
    status, doc = call(scoped_engine.http, "/openapi.json", "GET", None, key="")
    assert status == 200
    for method, path, _, needs in ROUTES:
        op = doc["paths"][TEMPLATES.get(path, path)][method.lower()]
        assert op["x-cx-scope"] == needs and "403" in op["responses"], (path, op)
