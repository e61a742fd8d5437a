"""A real Prometheus scraping a real engine: every Grafana panel query and every recording rule returns data.

The engine runs as in production (``cxstream run``, its API key in ``CX_API_KEYS``); Debian's
``/usr/bin/prometheus`` (``make prometheus-deps``) runs deploy/prometheus/prometheus.yml with only
the paths, the target and the intervals changed: it reads the key from its ``credentials_file``
and loads deploy/prometheus/rules.yml.  Real traffic makes the series exist: advisors log in,
contacts are assigned and completed with dispositions (the intent model learns and is used),
churn outcomes train the churn model, abandoned calls become outreach whose conversions are
attributed, malformed records go to the dead-letter topic.  Then every query of every dashboard
in deploy/grafana/dashboards (variables replaced by a regex matching every value) and every
recording rule's expression, as written (the 30-day precision too), is evaluated through
Prometheus' HTTP API; the test fails listing each one that returns nothing, or only NaN.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cxstream.schemas import AdvisorEvent, Disposition, Identifiers, InteractionEvent, OutcomeEvent, OutreachEvent
from cxstream.streams import topics as t
from cxstream.streams.embedded import EmbeddedRedis, free_port
from tests.integration.conftest import API_KEY, RunningEngine, start_engine, stop_engine
from tests.integration.helpers import consume_until, produce, wait_for
from tests.integration.test_learning import TEXTS
from tests.integration.test_outreach import abandoned_call
from tests.integration.test_pipeline import assignments_for, get, login, uid

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = Path("/usr/bin/prometheus")
#: Grafana's variables as "All" selects them, and its interval macros (Grafana computes them from the
#: scrape interval and the panel's resolution; any window holding a few 1 s scrapes is one it could pick).
VARIABLES = {"instance": ".+", "routing_group": ".+"}
MACROS = {"__rate_interval": "2m", "__interval": "2m", "__range": "1h"}


@pytest.fixture(scope="module")
def engine(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    """An engine on the session's broker and a Redis of its own: the models it trains (snapshots in Redis
    under ``cx:model:{name}``, whatever the app id) must not reach the other tests' engines."""
    tag = uuid.uuid4().hex[:8]
    base = tmp_path_factory.mktemp("monitored")
    with EmbeddedRedis(base / "redis") as rds:
        e = start_engine(
            servers[0], rds.url, base, f"m{tag}.", f"cxmon-{tag}",
            CX_SNAPSHOT_EVERY="2", CX_SNAPSHOT_INTERVAL_S="1", CX_MODEL_REFRESH_S="0.5",
        )
        yield e
        stop_engine(e)


def prometheus_config(engine: RunningEngine, base: Path) -> Path:
    """deploy/prometheus/prometheus.yml with its files under *base*, this engine as the target, 1 s intervals."""
    text = (ROOT / "deploy/prometheus/prometheus.yml").read_text()
    changes = [
        (r"scrape_interval: \S+", "scrape_interval: 1s"),
        (r"evaluation_interval: \S+", "evaluation_interval: 1s"),
        (r"/etc/prometheus/", f"{base}/"),
        (r'targets: \["engine-1:8080", "engine-2:8080"\]', f'targets: ["{engine.http.removeprefix("http://")}"]'),
    ]
    for pattern, replacement in changes:
        text, n = re.subn(pattern, replacement, text)
        assert n, f"deploy/prometheus/prometheus.yml has no {pattern!r} any more: update this test"
    assert "credentials_file" in text and API_KEY not in text
    (base / "cx_api_key").write_text(API_KEY + "\n")  # what the compose file mounts at /etc/prometheus/cx_api_key
    shutil.copy(ROOT / "deploy/prometheus/rules.yml", base / "rules.yml")
    config = base / "prometheus.yml"
    config.write_text(text)
    return config


@contextlib.contextmanager
def running_prometheus(engine: RunningEngine, base: Path) -> Iterator[str]:
    if not PROMETHEUS.is_file():
        pytest.fail(f"{PROMETHEUS} is missing: `make prometheus-deps` installs Debian's prometheus (make test does it first)")
    config = prometheus_config(engine, base)
    port = free_port()
    log = base / "prometheus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={base / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url + "/-/ready", timeout=2) as resp:
                    return resp.status == 200
            return False

        wait_for(ready, timeout=30, interval=0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def api(url: str, path: str, **params: str) -> Any:
    req = urllib.request.Request(f"{url}{path}?{urllib.parse.urlencode(params)}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:  # a query Prometheus refuses (bad PromQL): say which and why
        body = json.loads(exc.read())
        raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}") from exc
    assert body["status"] == "success", body
    return body["data"]


def finite_values(url: str, expr: str) -> list[float]:
    """The values *expr* evaluates to now, without NaN (what a panel shows as nothing)."""
    data = api(url, "/api/v1/query", query=expr)
    values = [float(r["value"][1]) for r in data["result"]] if data["resultType"] == "vector" else []
    if data["resultType"] == "scalar":
        values = [float(data["result"][1])]
    return [v for v in values if not math.isnan(v)]


def concrete(expr: str) -> str:
    """A panel's query as Grafana sends it with every variable on "All"."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return VARIABLES.get(name) or MACROS.get(name) or m.group(0)  # $1 (label_replace) stays

    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)
    assert not re.search(r"\$(?!\d)", out), f"a variable this test does not know in {expr}"
    return out


def dashboards() -> list[tuple[str, dict[str, Any]]]:
    paths = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
    assert len(paths) >= 3
    return [(p.name, json.loads(p.read_text())) for p in paths]


# -- the traffic -------------------------------------------------------------------------------


def serve_contacts(e: RunningEngine, advisor: str, group: str, round_: int, done: int) -> int:
    """Two chat contacts with a message each, assigned, accepted and completed with their intent (labels for the learner)."""
    batch = []
    truth = {}
    for intent, texts in TEXTS.items():
        cust = Identifiers(customer_id=uid("C"))
        k, text = uid("k"), texts[round_ % len(texts)]
        truth[k] = intent
        batch.append((cust.customer_id.encode(), InteractionEvent(
            event_id=uid("o"), occurred_at=time.time(), channel="chat", kind="contact_opened", customer=cust,
            contact_id=k, needs_advisor=True, routing_group=group, text=text)))
        batch.append((cust.customer_id.encode(), InteractionEvent(
            event_id=uid("m"), occurred_at=time.time(), channel="chat", kind="message", customer=cust,
            contact_id=k, routing_group=group, text=text)))
    asyncio.run(produce(e.broker, e.topic(t.INTERACTIONS.name), batch))
    answers = []
    for a in assignments_for(e, group, done + 2)[done:]:
        base = dict(advisor_id=advisor, routing_group=group, contact_id=a.contact_id, assignment_id=a.assignment_id)
        answers.append((advisor.encode(), AdvisorEvent(event_id=uid("acc"), occurred_at=time.time(), kind="offer_accepted", **base)))
        answers.append((advisor.encode(), AdvisorEvent(
            event_id=uid("done"), occurred_at=time.time(), kind="contact_completed",
            disposition=Disposition(intent=truth[a.contact_id], resolved=True), **base)))
    asyncio.run(produce(e.broker, e.topic(t.ADVISOR_EVENTS.name), answers))
    return done + 2


def outreach_converted(e: RunningEngine, queue: str) -> None:
    """A consenting customer abandons a call (an outreach is sent), then converts (attributed to it); another, without consent, is held back."""
    consenting, silent = Identifiers(customer_id=uid("C")), Identifiers(customer_id=uid("C"))
    consent = OutcomeEvent(event_id=uid("c"), occurred_at=time.time() - 5, customer=consenting, kind="consent",
                           attributes={"sms": True})
    asyncio.run(produce(e.broker, e.topic(t.OUTCOMES.name), [(b"c", consent)]))
    wait_for(lambda: get(e, f"/customers/{consenting.customer_id}/context")[0] == 200)
    asyncio.run(produce(e.broker, e.topic(t.INTERACTIONS.name), abandoned_call(consenting, queue) + abandoned_call(silent, queue)))
    decode = msgspec.json.Decoder(OutreachEvent).decode
    sent = asyncio.run(consume_until(
        e.broker, e.topic(t.OUTREACH.name), lambda vs: any(v.customer_id == consenting.customer_id for v in vs), decode,
    ))
    offer = next(v for v in sent if v.customer_id == consenting.customer_id)
    converted = OutcomeEvent(event_id=uid("conv"), occurred_at=time.time(), customer=consenting, kind="converted",
                             outreach_id=offer.outreach_id)
    asyncio.run(produce(e.broker, e.topic(t.OUTCOMES.name), [(b"c", converted)]))


def churn_history(e: RunningEngine) -> None:
    """A CRM's profiles and churn outcomes: labels for the churn model."""
    customers = [Identifiers(customer_id=uid("C")) for _ in range(8)]
    profiles = [(b"x", OutcomeEvent(
        event_id=uid("p"), occurred_at=time.time(), customer=c, kind="profile",
        attributes={"contract": "Month-to-month" if i % 2 else "Two year", "tenure_months": 2 if i % 2 else 40}))
        for i, c in enumerate(customers)]
    asyncio.run(produce(e.broker, e.topic(t.OUTCOMES.name), profiles))
    wait_for(lambda: get(e, f"/customers/{customers[-1].customer_id}/context")[0] == 200)
    labels = [(b"x", OutcomeEvent(event_id=uid("out"), occurred_at=time.time(), customer=c, kind="churned" if i % 2 else "retained"))
              for i, c in enumerate(customers)]
    asyncio.run(produce(e.broker, e.topic(t.OUTCOMES.name), labels))


def models_in_use(e: RunningEngine, group: str) -> None:
    """Wait until the scorers predict with both models (published by the learner, picked up by the worker)."""
    cust = Identifiers(customer_id=uid("C"))
    counts: dict[str, float] = {}

    def scored() -> bool:
        asyncio.run(produce(e.broker, e.topic(t.INTERACTIONS.name), [(b"n", InteractionEvent(
            event_id=uid("m"), occurred_at=time.time(), channel="chat", kind="message", customer=cust,
            routing_group=group, text="my card still has not arrived"))]))
        time.sleep(0.5)
        status, body = get(e, "/metrics")
        assert status == 200
        for model in ("intent", "churn"):
            m = re.search(rf'^cx_model_predict_seconds_count{{model="{model}"}} (\S+)$', body.decode(), re.M)
            counts[model] = float(m.group(1)) if m else 0.0
        return all(counts.values())

    try:
        wait_for(scored, timeout=40, interval=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"the scorers do not use both models: predictions {counts}") from exc


def dead_letter(e: RunningEngine) -> None:
    asyncio.run(produce(e.broker, e.topic(t.INTERACTIONS.name), [(uid("bad").encode(), b"not json at all {")]))


def test_every_dashboard_query_and_recording_rule_returns_data(engine: RunningEngine, tmp_path: Path) -> None:
    e = engine
    with running_prometheus(e, tmp_path) as prom:
        # scraped with the key from the file: the target is up (a 401 would leave it down)
        def target_up() -> bool:
            targets = api(prom, "/api/v1/targets")["activeTargets"]
            return any(tg["labels"].get("job") == "cxstream" and tg["health"] == "up" for tg in targets)

        wait_for(target_up, timeout=20, interval=0.5)
        up = api(prom, "/api/v1/query", query='up{job="cxstream"}')["result"]
        assert [r["value"][1] for r in up] == ["1"], up

        group, queue, advisor = uid("g"), uid("q"), uid("adv")  # queue: nobody logged in, calls are abandoned
        asyncio.run(produce(e.broker, e.topic(t.ADVISOR_EVENTS.name), [login(advisor, group, time.time(), capacity={"chat": 3, "voice": 1})]))
        dead_letter(e)
        done = 0
        for round_ in range(3):
            done = serve_contacts(e, advisor, group, round_, done)
        # before the churn model exists (then a risky customer's outreach could be a churn_risk one), twice
        # seconds apart: increase() over a 30-day window of a few seconds of samples counts the second
        outreach_converted(e, queue)
        time.sleep(2.5)
        outreach_converted(e, queue)
        churn_history(e)
        models_in_use(e, group)
        done = serve_contacts(e, advisor, group, 3, done)
        dead_letter(e)
        time.sleep(3)  # a few more scrapes after the last records (1 s interval)

        empty: list[str] = []
        evaluated = 0
        for name, dashboard in dashboards():
            for variable in dashboard["templating"]["list"]:  # label_values(SELECTOR, LABEL): the selector has that label
                m = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
                assert m, variable
                data = api(prom, "/api/v1/query", query=concrete(m.group(1)))["result"]
                if not any(m.group(2) in r["metric"] for r in data):
                    empty.append(f"{name} variable ${variable['name']}: {variable['query']['query']}")
            for panel in dashboard["panels"]:
                for target in panel.get("targets", []):
                    evaluated += 1
                    if not finite_values(prom, concrete(target["expr"])):
                        empty.append(f"{name} / {panel['title']} / {target['refId']}: {target['expr']}")

        groups = api(prom, "/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        rules_text = (ROOT / "deploy/prometheus/rules.yml").read_text()
        assert len(rules) == len(re.findall(r"^\s*- (?:alert|record): ", rules_text, re.M)), "every rule loaded"
        bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] == "err"]
        assert not bad, f"rules failing to evaluate: {bad}"
        recording = [r for r in rules if r["type"] == "recording"]
        assert {r["name"] for r in recording} >= {"cx:outreach_precision:30d", "cx:consumer_lag:sum_by_topic"}
        for rule in recording:  # the expression as written: the 30-day window over what exists
            evaluated += 1
            if not finite_values(prom, rule["query"]):
                empty.append(f"recording rule {rule['name']}: {rule['query']}")

        # the 30-day precision of what was sent here: 2 abandoned-call outreaches, 2 conversions
        precision = api(prom, "/api/v1/query", query='cx:outreach_precision:30d{trigger="abandoned_contact"}')["result"]
        assert [float(r["value"][1]) for r in precision] == [1.0], precision
    assert not empty, f"{len(empty)} of {evaluated} queries returned no data:\n" + "\n".join(empty)
    assert evaluated > 50
