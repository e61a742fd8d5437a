"""API key entries, scopes and where they come from (no server: tests/integration/test_api_scopes.py runs one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from cxstream.serve import desk, keys
from cxstream.serve.common import resolve_api_keys
from cxstream.serve.http import build_app
from cxstream.serve.pages import PUBLIC_ROUTES
from cxstream.streams.settings import Settings, SettingsError


def test_entries_come_from_the_variable_and_the_file(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("# the wallboard\nread:wall-1\n\n  admin:ops-2  \n")
    s = Settings(api_keys="full-0, ,advisor:desk-3", api_keys_file=str(f))
    assert s.api_key_set == frozenset({"full-0", "advisor:desk-3", "read:wall-1", "admin:ops-2"})
    parsed = keys.parse_keys(s.api_key_set)
    assert parsed == {"full-0": keys.ALL, "desk-3": {"advisor"}, "wall-1": {"read"}, "ops-2": {"admin"}}
    assert keys.scopes_of("wall-1", parsed) == {"read"} and keys.scopes_of("wall-", parsed) is None


def test_a_missing_file_and_an_unknown_scope_are_settings_errors_that_never_show_the_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"CX_API_KEYS_FILE=.*nope"):
        _ = Settings(api_keys_file=str(tmp_path / "nope")).api_key_set
    with pytest.raises(SettingsError, match="unknown scope 'raed'") as bad:
        resolve_api_keys(Settings(api_keys="raed:s3cr3t-value"))
    assert "s3cr3t-value" not in str(bad.value)
    with pytest.raises(ValueError, match="no key"):
        keys.parse_keys(["admin:"])


def test_a_generated_key_is_announced_by_its_file_not_by_its_value(tmp_path: Path) -> None:
    said: list[str] = []
    (generated,) = resolve_api_keys(Settings(data_dir=str(tmp_path)), said.append)
    assert (tmp_path / "api-key").read_text().strip() == generated
    assert (tmp_path / "api-key").stat().st_mode & 0o077 == 0
    assert said and all(generated not in m for m in said) and str(tmp_path / "api-key") in said[0]


def test_secrets_stay_out_of_the_settings_repr() -> None:
    text = repr(Settings(api_keys="k-visible-nowhere", advisor_key_secret="s-visible-nowhere"))
    assert "visible-nowhere" not in text


def test_every_route_of_the_api_needs_a_scope_someone_chose_or_is_public() -> None:
    """A new route is admin-only until it is given a scope here or in the desk's routes."""
    app = build_app(aioredis.from_url("redis://127.0.0.1:1"), frozenset({"k"}), "app")
    routes = {r.canonical for r in app.router.resources()}
    unscoped = routes - PUBLIC_ROUTES - set(keys.ROUTE_SCOPES) - desk.ADVISOR_ROUTES
    assert unscoped == set(), unscoped
    assert set(keys.ROUTE_SCOPES) <= routes  # no stale entry
    assert {keys.scope_for(r, desk.ADVISOR_ROUTES) for r in routes - PUBLIC_ROUTES} == set(keys.SCOPES)


def test_the_openapi_document_describes_every_route_the_api_serves() -> None:
    """Found by the API fuzz: POST /customers/erase was served but not documented, nor the identifier query parameters."""
    from cxstream.serve.openapi import document

    app = build_app(aioredis.from_url("redis://127.0.0.1:1"), frozenset({"k"}), "app")
    served = {(r.canonical, route.method.lower()) for r in app.router.resources() for route in r if route.method != "HEAD"}
    doc = document()
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served - documented - {("/static/{name}", "get")} == set()  # the pages' own files are not API
    assert documented <= served
    for path in ("/customers/context", "/customers/erase", "/customers/{customer_id}/erase"):
        (op,) = doc["paths"][path].values()
        assert {p["name"] for p in op["parameters"] if p["in"] == "query"} >= {"email", "phone", "customer_id"}
