"""Fuzz the HTTP API of a running engine from the OpenAPI document it serves (schemathesis).

With an admin key every documented operation gets generated valid and invalid input
(path and query parameters, bodies); it must never answer 5xx, and its answers must
conform to the document (status codes, content types, bodies).  Every operation that
needs a key answers the same requests 401 without a key or with a wrong one, and 403
with a key that lacks the operation's scope.  Bounded and derandomized: the same
requests on every run.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from cxstream.serve.openapi import document
from tests.integration.conftest import RunningEngine, start_engine, stop_engine
from tests.integration.test_pipeline import uid

pytestmark = pytest.mark.integration

KEYS = {scope: f"{scope}-{secrets.token_urlsafe(18)}" for scope in ("read", "advisor", "admin")}
#: For each scope, a key that has every scope but it.
LACKING = {scope: KEYS[next(s for s in KEYS if s != scope)] for scope in KEYS}
EXAMPLES = 8  # per operation and generation mode (valid, then invalid input)


@pytest.fixture(scope="module")
def fuzzed_api(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    base = tmp_path_factory.mktemp("apifuzz")
    keyfile = base / "keys"
    keyfile.write_text("".join(f"{scope}:{key}\n" for scope, key in KEYS.items()))
    tag = uid("a")[-8:]
    e = start_engine(servers[0], servers[1], base, f"a{tag}.", f"cxapifuzz-{tag}", CX_API_KEYS_FILE=str(keyfile))
    yield e
    stop_engine(e)


@pytest.fixture(scope="module")
def api_schema(fuzzed_api: RunningEngine) -> schemathesis.BaseSchema:
    """The document the engine serves, as schemathesis reads it."""
    return schemathesis.openapi.from_url(fuzzed_api.http + "/openapi.json")


#: Every operation of the document; the live feed (server-sent events: 200, then it never ends) is left out.
OPERATIONS = [(path, method) for path, ops in document()["paths"].items() for method in ops if not path.endswith("/events")]


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_the_api_answers_generated_requests_without_5xx_as_documented_and_never_without_its_key(
    fuzzed_api: RunningEngine, api_schema: schemathesis.BaseSchema, path: str, method: str
) -> None:
    operation = api_schema[path][method]
    scope = operation.definition.raw.get("x-cx-scope")
    base = fuzzed_api.http

    def send(case: schemathesis.Case, headers: dict[str, str]) -> schemathesis.Response:
        """The case with exactly these key headers (schemathesis keeps the headers of a call in the case)."""
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in ("authorization", "x-api-key")}
        return case.call(base_url=base, headers=headers, timeout=30)

    def check(case: schemathesis.Case) -> None:
        # with a key of the operation's scope: no 5xx, and the answer is what the document says
        response = send(case, {"X-API-Key": KEYS[scope or "admin"]})
        assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body, response.status_code, response.text[:300])
        assert response.status_code not in (401, 403), (case.method, case.formatted_path, response.status_code, response.text[:300])
        # every check of schemathesis but one: a request the document allows may still be refused (400) for a
        # rule it cannot state (an email must be an email address, one identifier is needed), as documented
        case.validate_response(response, excluded_checks=[positive_data_acceptance])
        if scope is None:
            return  # a public route
        for headers, status in (({}, 401), ({"X-API-Key": "not-a-key"}, 401), ({"Authorization": "Bearer " + "0" * 24}, 401),
                                ({"X-API-Key": LACKING[scope]}, 403)):
            refused = send(case, headers)
            assert refused.status_code == status, (case.method, case.formatted_path, headers, refused.status_code, refused.text[:300])
            kind = refused.headers.get("content-type") or [""]
            assert (kind[0] if isinstance(kind, list) else kind).startswith("application/json") and refused.json()["error"], refused.text

    # invalid input only where there is input: parameters or a body
    takes_input = bool(operation.definition.raw.get("parameters") or operation.definition.raw.get("requestBody"))
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (GenerationMode.POSITIVE,):
        run = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
                       suppress_health_check=list(HealthCheck))(given(operation.as_strategy(generation_mode=mode))(check))
        run()


@pytest.mark.parametrize("body", [b'{"routing_group":"g\xff"}', b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}"],
                         ids=["invalid UTF-8", "nested 5000 deep"])
@pytest.mark.parametrize("path", ["/advisors/fuzz-ann/login", "/chat/messages"])
def test_a_body_that_is_not_utf8_json_is_a_400_that_says_so(fuzzed_api: RunningEngine, path: str, body: bytes) -> None:
    """Found by fuzzing the body decoder: invalid UTF-8 in a string raised msgspec's UnicodeDecodeError, a 500."""
    req = urllib.request.Request(fuzzed_api.http + path, data=body, method="POST",
                                 headers={"X-API-Key": KEYS["advisor"], "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    with refused.value as answer:
        assert answer.code == 400 and json.loads(answer.read())["error"] in ("not_utf8", "not_json", "invalid_body")
