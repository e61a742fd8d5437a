"""docker-compose.yml: valid against the Compose Specification's JSON schema, and true to the engine.

No Docker engine runs here or in CI, so the file is checked statically: the official schema
(vendored in tests/data/compose, provenance in its README) and the project's own rules below
(`problems`), each of which is also shown to catch a broken copy of the file.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cxstream.streams.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests/data/compose/compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
PROM_KEY_PATH = "/etc/prometheus/cx_api_key"
MIN_RETENTION_MARGIN_S = 5 * 86400  # Prometheus keeps at least 5 days more than its longest rule range


def load(path: Path = COMPOSE) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in cls(schema).iter_errors(doc)]


# -- reading the file as Compose does ---------------------------------------------------------------

DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def seconds(duration: str) -> float:
    """A Prometheus duration in seconds.

    >>> seconds("1h30m"), seconds("40d")
    (5400.0, 3456000.0)
    """
    parts = DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return float(sum(int(n) * UNIT_S[u] for n, u in parts))


def env(service: dict[str, Any]) -> dict[str, str]:
    e = service.get("environment") or {}
    if isinstance(e, list):
        e = dict(item.split("=", 1) for item in e)
    return {k: str(v) for k, v in e.items()}


def argv(value: Any) -> list[str]:
    return list(value) if isinstance(value, list) else str(value or "").split()


def flags(service: dict[str, Any]) -> dict[str, str]:
    """``--name=value`` arguments of a service's command."""
    return dict(a[2:].split("=", 1) for a in argv(service.get("command")) if a.startswith("--") and "=" in a)


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of every volume, secret and config mount of a service."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            source, target = v.split(":")[:2]
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        else:
            source, target, kind = v.get("source", ""), v["target"], v.get("type", "volume")
        out.append((kind, source, target))
    for kind, default_dir in (("secrets", "/run/secrets/"), ("configs", "/")):
        for s in service.get(kind) or []:
            source, target = (s, None) if isinstance(s, str) else (s["source"], s.get("target"))
            if not target or not target.startswith("/"):
                target = default_dir + (target or source)
            out.append((kind[:-1], source, target))
    return out


def mounted_at(service: dict[str, Any], path: str, kinds: tuple[str, ...]) -> tuple[str, str, str] | None:
    """The mount of one of *kinds* whose target is *path* or a folder holding it."""
    for m in mounts(service):
        if m[0] in kinds and (path == m[2] or path.startswith(m[2].rstrip("/") + "/")):
            return m
    return None


def kafka_uuid_ok(value: str) -> bool:
    """A Kafka cluster id: 16 bytes in URL-safe base64 without padding (``kafka-storage.sh random-uuid``)."""
    try:
        return len(value) == 22 and len(base64.urlsafe_b64decode(value + "==")) == 16
    except ValueError:
        return False


def rule_ranges(rules_text: str) -> list[float]:
    """Every range selector's length in deploy/prometheus/rules.yml, seconds."""
    return [seconds(d) for d in re.findall(r"\[(\d+(?:ms|[ywdhms])(?:\d+(?:ms|[ywdhms]))*)(?::[^\]]*)?\]", rules_text)]


def engine_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in doc["services"].items() if "build" in s}


# -- the project's rules ------------------------------------------------------------------------------

def problems(doc: dict[str, Any], root: Path = ROOT) -> list[str]:
    """What is wrong with a parsed docker-compose.yml, by the project's rules (empty: nothing)."""
    out: list[str] = []
    services: dict[str, dict[str, Any]] = doc.get("services") or {}
    declared = set(doc.get("volumes") or {})
    used: set[str] = set()
    for name, svc in services.items():
        for kind, source, target in mounts(svc):
            if kind == "volume":
                used.add(source)
                if source not in declared:
                    out.append(f"{name}: volume {source!r} (at {target}) is not declared under volumes:")
            elif kind == "bind" and not (root / source).exists():
                out.append(f"{name}: mounts {source}, which does not exist")
            elif kind in ("secret", "config") and source not in (doc.get(kind + "s") or {}):
                out.append(f"{name}: {kind} {source!r} is not declared under {kind}s:")
        for dep, cond in (svc.get("depends_on") or {}).items() if isinstance(svc.get("depends_on"), dict) else []:
            if cond.get("condition") == "service_healthy" and "healthcheck" not in services.get(dep, {}):
                out.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
    out += [f"volume {v!r} is declared but no service mounts it" for v in sorted(declared - used)]
    for name, cfg in (doc.get("configs") or {}).items():
        if "file" in cfg and not (root / cfg["file"]).exists():
            out.append(f"config {name}: {cfg['file']} does not exist")

    text = yaml.safe_dump(doc)
    if "rocksdb://" in text or "CX_TABLE_STORE" in text:
        out.append("CX_TABLE_STORE/rocksdb:// is set: no table uses the Faust store (and rocksdict is not installed)")

    # the API key: one file, read by the engines and by Prometheus
    key = (doc.get("secrets") or {}).get("cx_api_key")
    if not key or "file" not in key:
        out.append("no secret cx_api_key with a file: the API key has no single source")
    else:
        out += ignored_problems(key["file"], root)
    engines = engine_services(doc)
    if not engines:
        out.append("no engine service (built from the Dockerfile)")
    for name, svc in engines.items():
        e = env(svc)
        if "CX_API_KEYS" in e:
            out.append(f"{name}: CX_API_KEYS is set in its environment: the key must come from the secret only")
        if not mounted_at(svc, "/run/secrets/cx_api_key", ("secret",)):
            out.append(f"{name}: the secret cx_api_key is not mounted at /run/secrets/cx_api_key")
        if e.get("CX_API_KEYS_FILE") != "/run/secrets/cx_api_key":
            out.append(f"{name}: CX_API_KEYS_FILE is not the secret's file /run/secrets/cx_api_key")
        known = {n for n, _, _ in Settings.documented()}
        out += [f"{name}: {k} is no setting of the engine" for k in e if k.startswith("CX_") and k not in known]
        try:
            Settings.from_env(e)
        except ValueError as exc:
            out.append(f"{name}: {exc}")

    kafka = services.get("kafka")
    if kafka is None:
        out.append("no kafka service")
    else:
        ke = env(kafka)
        dirs = [d for d in ke.get("KAFKA_LOG_DIRS", "").split(",") if d]
        if not dirs:
            out.append("kafka: KAFKA_LOG_DIRS is not set: apache/kafka then writes to /tmp/kraft-combined-logs")
        for d in dirs:
            if not mounted_at(kafka, d, ("volume",)):
                out.append(f"kafka: log dir {d} is not on a named volume: the topics are lost with the container")
        node = ke.get("KAFKA_NODE_ID", "")
        voters = dict(v.split("@", 1) for v in ke.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").split(",") if "@" in v)
        if "controller" in ke.get("KAFKA_PROCESS_ROLES", ""):
            if node not in voters:
                out.append(f"kafka: node {node} is a controller but not among the quorum voters {sorted(voters)}")
            controller = ke.get("KAFKA_CONTROLLER_LISTENER_NAMES", "")
            listeners = dict(x.split("://", 1) for x in ke.get("KAFKA_LISTENERS", "").split(",") if "://" in x)
            port = voters.get(node, ":").rsplit(":", 1)[1]
            if controller not in listeners or not listeners[controller].endswith(":" + port):
                out.append(f"kafka: the controller listener {controller} does not listen on the voters' port {port}")
            if controller + ":" not in ke.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", ""):
                out.append(f"kafka: {controller} has no security protocol")
        if "CLUSTER_ID" in ke and not kafka_uuid_ok(ke["CLUSTER_ID"]):
            out.append(f"kafka: CLUSTER_ID {ke['CLUSTER_ID']!r} is not a Kafka Uuid (22 base64url characters)")

    prom = services.get("prometheus")
    if prom is None:
        out.append("no prometheus service")
    else:
        out += prometheus_problems(prom, services, root)

    am = services.get("alertmanager")
    if am is None:
        out.append("no alertmanager service: the alert rules notify nobody")
    else:
        out += alertmanager_problems(am, doc, root)
    return out


def ignored_problems(path: str, root: Path) -> list[str]:
    """A key file must be one git ignores (never committed by accident)."""
    git = shutil.which("git")
    if git is None:
        return [f"cannot check that {path} is git-ignored: no git on PATH"]
    r = subprocess.run([git, "check-ignore", "--no-index", "-q", path], cwd=root, capture_output=True, check=False)
    return [] if r.returncode == 0 else [f"the key file {path} is not git-ignored"]


def prometheus_problems(prom: dict[str, Any], services: dict[str, Any], root: Path) -> list[str]:
    out = []
    f = flags(prom)
    tsdb = f.get("storage.tsdb.path")
    if not tsdb:
        out.append("prometheus: no --storage.tsdb.path")
    elif not mounted_at(prom, tsdb, ("volume",)):
        out.append(f"prometheus: its TSDB ({tsdb}) is not on a named volume: history is lost on every recreate")
    longest = max(rule_ranges((root / "deploy/prometheus/rules.yml").read_text()), default=0.0)
    retention = f.get("storage.tsdb.retention.time")
    if retention is None or seconds(retention) < max(30 * 86400, longest + MIN_RETENTION_MARGIN_S):
        out.append(f"prometheus: retention {retention} is too short for a {longest / 86400:g}-day rule range")
    if not mounted_at(prom, PROM_KEY_PATH, ("secret",)) or mounted_at(prom, PROM_KEY_PATH, ("secret",))[1] != "cx_api_key":
        out.append(f"prometheus: the secret cx_api_key is not mounted at {PROM_KEY_PATH}")
    config_path = f.get("config.file", "/etc/prometheus/prometheus.yml")
    cfg_mount = mounted_at(prom, config_path, ("bind",))
    if not cfg_mount or not (root / cfg_mount[1]).is_file():
        out.append(f"prometheus: {config_path} is not mounted from a file of the repository")
        return out
    cfg = yaml.safe_load((root / cfg_mount[1]).read_text())
    for rule_file in cfg.get("rule_files") or []:
        if not mounted_at(prom, rule_file, ("bind",)):
            out.append(f"prometheus: rule file {rule_file} is not mounted")
    jobs = list(cfg.get("scrape_configs") or [])
    for job in jobs:
        cred = ((job.get("authorization") or {}).get("credentials_file"))
        if cred and not mounted_at(prom, cred, ("secret", "bind", "config")):
            out.append(f"prometheus: job {job.get('job_name')} reads {cred}, which is not mounted")
    targets = [t for job in jobs for sc in job.get("static_configs") or [] for t in sc.get("targets") or []]
    for am in (cfg.get("alerting") or {}).get("alertmanagers") or []:
        targets += [t for sc in am.get("static_configs") or [] for t in sc.get("targets") or []]
    for t in targets:
        host = t.rsplit(":", 1)[0]
        if host not in services and host not in ("localhost", "127.0.0.1"):
            out.append(f"prometheus: target {t} is no service of this file")
    return out


#: Keys Alertmanager's configuration accepts where this file uses them (its docs, "Configuration"):
#: a misspelt key is refused by Alertmanager at start, so it is refused here.
AM_KEYS = {
    "top": {"global", "route", "receivers", "inhibit_rules", "templates", "time_intervals", "mute_time_intervals"},
    "route": {"receiver", "group_by", "continue", "matchers", "match", "match_re", "group_wait", "group_interval",
              "repeat_interval", "mute_time_intervals", "active_time_intervals", "routes"},
    "receiver": {"name", "webhook_configs", "email_configs", "slack_configs", "pagerduty_configs", "opsgenie_configs",
                 "msteams_configs", "msteamsv2_configs", "telegram_configs", "discord_configs", "pushover_configs",
                 "sns_configs", "victorops_configs", "webex_configs", "wechat_configs", "jira_configs"},
    "webhook": {"send_resolved", "http_config", "url", "url_file", "max_alerts", "timeout"},
}
AM_DURATIONS = ("group_wait", "group_interval", "repeat_interval", "resolve_timeout")
MATCHER = re.compile(r"""^\s*[A-Za-z_][A-Za-z0-9_]*\s*(=|!=|=~|!~)\s*"[^"]*"\s*$""")


def alertmanager_config_problems(cfg: dict[str, Any]) -> list[str]:
    """Keys, durations and matchers of an Alertmanager configuration, checked as Alertmanager would."""
    out = [f"alertmanager.yml: unknown key {k!r}" for k in sorted(set(cfg) - AM_KEYS["top"])]
    for k in AM_DURATIONS:
        if k in (cfg.get("global") or {}):
            try:
                seconds(str(cfg["global"][k]))
            except ValueError as exc:
                out.append(f"alertmanager.yml: global.{k}: {exc}")
    stack = [cfg.get("route") or {}]
    while stack:
        r = stack.pop()
        out += [f"alertmanager.yml: unknown route key {k!r}" for k in sorted(set(r) - AM_KEYS["route"])]
        for k in AM_DURATIONS:
            if k in r:
                try:
                    seconds(str(r[k]))
                except ValueError as exc:
                    out.append(f"alertmanager.yml: route {k}: {exc}")
        out += [f"alertmanager.yml: bad matcher {m!r}" for m in r.get("matchers") or [] if not MATCHER.match(m)]
        stack += r.get("routes") or []
    for rc in cfg.get("receivers") or []:
        out += [f"alertmanager.yml: unknown receiver key {k!r}" for k in sorted(set(rc) - AM_KEYS["receiver"])]
        for w in rc.get("webhook_configs") or []:
            out += [f"alertmanager.yml: unknown webhook key {k!r}" for k in sorted(set(w) - AM_KEYS["webhook"])]
            if "url" in w and "url_file" in w:
                out.append("alertmanager.yml: a webhook has both url and url_file")
    return out


def alertmanager_problems(am: dict[str, Any], doc: dict[str, Any], root: Path) -> list[str]:
    out = []
    if not str(am.get("image", "")).startswith("prom/alertmanager"):
        out.append("alertmanager: not the prom/alertmanager image")
    storage = flags(am).get("storage.path")
    if not storage or not mounted_at(am, storage, ("volume",)):
        out.append("alertmanager: --storage.path is not on a named volume: silences are lost with the container")
    config_path = flags(am).get("config.file", "/etc/alertmanager/alertmanager.yml")
    m = mounted_at(am, config_path, ("bind",))
    if not m or not (root / m[1]).is_file():
        return [*out, f"alertmanager: {config_path} is not mounted from a file of the repository"]
    cfg = yaml.safe_load((root / m[1]).read_text())
    out += alertmanager_config_problems(cfg)
    names = {r["name"] for r in cfg.get("receivers") or []}
    route = cfg.get("route") or {}
    stack = [route]
    while stack:
        r = stack.pop()
        if "receiver" in r and r["receiver"] not in names:
            out.append(f"alertmanager: route to unknown receiver {r['receiver']!r}")
        stack += r.get("routes") or []
    if "receiver" not in route:
        out.append("alertmanager: the root route has no receiver")
    if not {"alertname", "severity"} <= set(route.get("group_by") or []):
        out.append("alertmanager: the root route does not group by alertname and severity")
    for r in cfg.get("receivers") or []:
        for w in r.get("webhook_configs") or []:
            path = w.get("url_file")
            if path and not mounted_at(am, path, ("config", "secret", "bind")):
                out.append(f"alertmanager: receiver {r['name']} reads its URL from {path}, which is not mounted")
            if not path and not w.get("url"):
                out.append(f"alertmanager: receiver {r['name']} has a webhook without a URL")
    severities = set(re.findall(r"severity:\s*([A-Za-z_]+)", (root / "deploy/prometheus/rules.yml").read_text()))
    routed = {m.split("=", 1)[1].strip("\"'") for r in route.get("routes") or [] for m in r.get("matchers") or []
              if m.replace(" ", "").startswith("severity=")}
    out += [f"alertmanager: no route for severity {s!r} of rules.yml" for s in sorted(severities - routed)]
    return out


# -- tests ---------------------------------------------------------------------------------------

def test_vendored_schema_is_the_compose_specification() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert json.loads(SCHEMA.read_text())["title"] == "Compose Specification"


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(load()) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["services"]["kafka"].update(volumes="kafka-data:/var/lib/kafka/data"),  # a string, not a list
        lambda d: d.update(servics={}),  # a misspelt top-level key
        lambda d: d["services"]["redis"].update(restart_policy="always"),  # no such service key
        lambda d: d["services"]["engine-1"]["depends_on"]["kafka"].update(condition="service_up"),
        lambda d: d["services"]["prometheus"].update(ports=[{"target": "9090", "publishd": 9090}]),
        lambda d: d["secrets"]["cx_api_key"].update(path="x"),
    ],
)
def test_the_schema_rejects_a_broken_file(break_it: Any) -> None:
    doc = load()
    break_it(doc)
    assert schema_errors(doc)


def test_compose_file_follows_the_project_rules() -> None:
    assert problems(load()) == []


def _drop(items: list[Any], pred: Any) -> list[Any]:
    return [i for i in items if not pred(i)]


BROKEN = {
    "undeclared volume": lambda d: d["volumes"].pop("redis-data"),
    "unmounted volume": lambda d: d["services"]["redis"].pop("volumes"),
    "kafka log dir not on the volume": lambda d: d["services"]["kafka"]["environment"].update(
        KAFKA_LOG_DIRS="/tmp/kraft-combined-logs"),
    "no KAFKA_LOG_DIRS": lambda d: d["services"]["kafka"]["environment"].pop("KAFKA_LOG_DIRS"),
    "volume at the Confluent path only": lambda d: d["services"]["kafka"].update(volumes=["kafka-data:/var/lib/kafka"])
    or d["services"]["kafka"]["environment"].update(KAFKA_LOG_DIRS="/opt/kafka/data"),
    "voters without this node": lambda d: d["services"]["kafka"]["environment"].update(
        KAFKA_CONTROLLER_QUORUM_VOTERS="2@kafka:9093"),
    "controller port mismatch": lambda d: d["services"]["kafka"]["environment"].update(
        KAFKA_CONTROLLER_QUORUM_VOTERS="1@kafka:9094"),
    "bad cluster id": lambda d: d["services"]["kafka"]["environment"].update(CLUSTER_ID="cxstream"),
    "prometheus without a volume": lambda d: d["services"]["prometheus"].update(
        volumes=_drop(d["services"]["prometheus"]["volumes"], lambda v: v.startswith("prometheus-data"))),
    "prometheus retention 15d": lambda d: d["services"]["prometheus"].update(command=[
        a.replace("retention.time=40d", "retention.time=15d") for a in d["services"]["prometheus"]["command"]]),
    "prometheus retention 30d": lambda d: d["services"]["prometheus"].update(command=[
        a.replace("retention.time=40d", "retention.time=30d") for a in d["services"]["prometheus"]["command"]]),
    "prometheus retention unset": lambda d: d["services"]["prometheus"].update(command=[
        a for a in d["services"]["prometheus"]["command"] if "retention" not in a]),
    "key not at the path prometheus.yml reads": lambda d: d["services"]["prometheus"].update(
        secrets=[{"source": "cx_api_key", "target": "/etc/prometheus/key"}]),
    "no key for prometheus": lambda d: d["services"]["prometheus"].pop("secrets"),
    "key in the engine's environment": lambda d: d["services"]["engine-1"]["environment"].update(
        CX_API_KEYS="change-me"),
    "engine without the secret": lambda d: d["services"]["engine-2"].pop("secrets"),
    "engine does not read the secret": lambda d: d["services"]["engine-2"]["environment"].pop("CX_API_KEYS_FILE"),
    "committed key file": lambda d: d["secrets"]["cx_api_key"].update(file="./deploy/alertmanager/alertmanager.yml"),
    "rocksdb table store": lambda d: d["services"]["engine-1"]["environment"].update(CX_TABLE_STORE="rocksdb://"),
    "unknown setting": lambda d: d["services"]["engine-1"]["environment"].update(CX_PARTITION="8"),
    "setting of the wrong type": lambda d: d["services"]["engine-1"]["environment"].update(CX_PARTITIONS="eight"),
    "no alertmanager": lambda d: d["services"].pop("alertmanager"),
    "alertmanager config missing": lambda d: d["services"]["alertmanager"].update(volumes=[
        "./deploy/alertmanager/missing.yml:/etc/alertmanager/alertmanager.yml:ro", "alertmanager-data:/alertmanager"]),
    "webhook URL file not mounted": lambda d: d["services"]["alertmanager"].pop("configs"),
    "alertmanager storage not on its volume": lambda d: d["services"]["alertmanager"].update(command=[
        "--storage.path=/tmp/am" if a.startswith("--storage.path") else a for a in d["services"]["alertmanager"]["command"]]),
    "healthy wait on a service without healthcheck": lambda d: d["services"]["redis"].pop("healthcheck"),
    "bind mount of a missing file": lambda d: d["services"]["prometheus"]["volumes"].append(
        "./deploy/prometheus/nope.yml:/etc/prometheus/nope.yml:ro"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_the_project_rules_catch_a_broken_file(name: str) -> None:
    doc = copy.deepcopy(load())
    BROKEN[name](doc)
    assert problems(doc), f"{name}: not caught"


def test_alertmanager_rules_catch_a_broken_config(tmp_path: Path) -> None:
    """The same rules on a copy of the repository's deploy/ with a broken alertmanager.yml."""
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy", ignore=shutil.ignore_patterns("secrets"))
    doc = load()
    am_file = tmp_path / "deploy/alertmanager/alertmanager.yml"
    good = yaml.safe_load(am_file.read_text())
    for break_it in (
        lambda c: c["route"].update(receiver="nobody"),
        lambda c: c["route"].update(group_by=["alertname"]),
        lambda c: c["route"]["routes"].pop(0),  # the "page" severity unrouted
        lambda c: c["receivers"][0]["webhook_configs"][0].update(url_file="/etc/alertmanager/url"),
        lambda c: c["route"].update(repeat_intervall="4h"),
        lambda c: c["route"].update(group_wait="30 seconds"),
        lambda c: c["route"]["routes"][0].update(matchers=["severity=page"]),
        lambda c: c["receivers"][0]["webhook_configs"][0].update(url="http://x"),
        lambda c: c["receivers"][0]["webhook_configs"][0].update(sendresolved=True),
        lambda c: c.update(recievers=[]),
    ):
        cfg = copy.deepcopy(good)
        break_it(cfg)
        am_file.write_text(yaml.safe_dump(cfg))
        assert alertmanager_problems(doc["services"]["alertmanager"], doc, tmp_path)
    am_file.write_text(yaml.safe_dump(good))
    assert alertmanager_problems(doc["services"]["alertmanager"], doc, tmp_path) == []


def test_prometheus_key_path_is_read_from_the_mounted_secret(tmp_path: Path) -> None:
    """A credentials_file in prometheus.yml that the compose file does not mount is caught."""
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy", ignore=shutil.ignore_patterns("secrets"))
    prom_yml = tmp_path / "deploy/prometheus/prometheus.yml"
    cfg = yaml.safe_load(prom_yml.read_text())
    doc = load()
    services = doc["services"]
    cfg["scrape_configs"][0]["authorization"] = {"type": "Bearer", "credentials_file": PROM_KEY_PATH}
    prom_yml.write_text(yaml.safe_dump(cfg))
    assert prometheus_problems(services["prometheus"], services, tmp_path) == []
    cfg["scrape_configs"][0]["authorization"]["credentials_file"] = "/etc/prometheus/other_key"
    prom_yml.write_text(yaml.safe_dump(cfg))
    assert prometheus_problems(services["prometheus"], services, tmp_path)
    cfg["scrape_configs"][0]["authorization"]["credentials_file"] = PROM_KEY_PATH
    cfg["scrape_configs"][0]["static_configs"] = [{"targets": ["engine-9:8080"]}]
    prom_yml.write_text(yaml.safe_dump(cfg))
    assert prometheus_problems(services["prometheus"], services, tmp_path)


def test_the_engine_reads_its_keys_from_the_secret_and_refuses_an_empty_one(tmp_path: Path) -> None:
    """The engines' environment, with the secret at a path of the test's: the key comes from the file;
    an empty or missing file is an error (no engine would generate a key Prometheus does not know)."""
    e = env(load()["services"]["engine-1"])
    key_file = tmp_path / "cx_api_key"
    key_file.write_text("k3y-from-the-file\n")
    assert Settings.from_env({**e, "CX_API_KEYS_FILE": str(key_file)}).api_key_set == {"k3y-from-the-file"}
    for content in ["", " \n", "# only a comment\n"]:
        key_file.write_text(content)
        with pytest.raises(SettingsError, match="no key in the file"):
            _ = Settings.from_env({**e, "CX_API_KEYS_FILE": str(key_file)}).api_key_set
    key_file.unlink()
    with pytest.raises(SettingsError, match="CX_API_KEYS_FILE"):
        _ = Settings.from_env({**e, "CX_API_KEYS_FILE": str(key_file)}).api_key_set


def test_durations() -> None:
    assert seconds("30d") == 30 * 86400
    assert rule_ranges("increase(x[30d]) / rate(y[5m]) + z[1h:30s]") == [30 * 86400, 300, 3600]
    with pytest.raises(ValueError):
        seconds("30 days")
