"""deploy/prometheus and deploy/grafana checked with Prometheus' own promtool (Debian's, `make prometheus-deps`).

promtool is a requirement of ``make test``: without it these tests fail (never skip).
tests/integration/test_prometheus.py runs the same files against a real Prometheus scraping a real engine.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy/prometheus"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
KEY_FILE = "/etc/prometheus/cx_api_key"  # where docker-compose mounts the scrape key


def promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(found).is_file():
        pytest.fail("promtool is missing: `make prometheus-deps` installs Debian's prometheus (make test does it first)")
    return found


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd)


def alerts() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)", (PROMETHEUS_DIR / "rules.yml").read_text(), re.M)


def test_the_scrape_config_reads_the_key_from_a_file_and_is_valid(tmp_path: Path) -> None:
    """promtool check config, with the files the config names where the container has them (here: under tmp)."""
    text = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    assert re.search(r"^\s*credentials_file: " + re.escape(KEY_FILE) + r"\s*$", text, re.M), "the key comes from a file"
    assert not re.search(r"^\s*(credentials|bearer_token):", text, re.M), "no API key written in the config"
    assert re.search(r"^\s*type: Bearer\s*$", text, re.M)
    assert re.search(r"^alerting:\s*\n\s+alertmanagers:", text, re.M) and '"alertmanager:9093"' in text
    assert "rule_files: [/etc/prometheus/rules.yml]" in text
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/", f"{tmp_path}/"))
    shutil.copy(PROMETHEUS_DIR / "rules.yml", tmp_path / "rules.yml")
    missing = run("check", "config", config)
    assert missing.returncode != 0 and "cx_api_key" in missing.stdout + missing.stderr, "promtool checks the key file is there"
    (tmp_path / "cx_api_key").write_text("a-key\n")
    checked = run("check", "config", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout and "rules found" in checked.stdout, checked.stdout


def test_the_rules_are_valid() -> None:
    checked = run("check", "rules", PROMETHEUS_DIR / "rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    n = int(re.search(r"SUCCESS: (\d+) rules found", checked.stdout).group(1))  # type: ignore[union-attr]
    assert n == len(re.findall(r"^\s*- (?:alert|record): ", (PROMETHEUS_DIR / "rules.yml").read_text(), re.M))


def test_the_alerts_fire_and_stay_quiet_as_their_unit_tests_say() -> None:
    assert RULE_TESTS, "deploy/prometheus/tests/*.yml"
    tested = run("test", "rules", *[p.name for p in RULE_TESTS], cwd=PROMETHEUS_DIR / "tests")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(RULE_TESTS), tested.stdout


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        # each alert_rule_test item: "alertname: X" then its "exp_alerts:" ("[]" when it must not fire)
        for name, expected in re.findall(r"alertname: (\w+)[^\n]*\n\s+exp_alerts:(.*)", path.read_text()):
            (quiet if expected.strip() == "[]" else fires).add(name)
    names = set(alerts())
    assert {"CxRoutingSlow", "CxDeadLettersRising", "CxConsumerLagHigh", "CxEngineDown"} <= names
    assert names - fires == set(), f"alerts never tested firing: {sorted(names - fires)}"
    assert names - quiet == set(), f"alerts never tested staying quiet: {sorted(names - quiet)}"


def test_every_alert_has_a_runbook_entry() -> None:
    doc = (ROOT / "docs/MONITORING.md").read_text()
    for name in alerts():
        m = re.search(rf"^### {name}\b(.*?)(?=^#{{2,3}} |\Z)", doc, re.M | re.S)
        assert m, f"docs/MONITORING.md has no '### {name}' runbook entry"
        for part in ("Means", "Confirm", "Do"):
            assert re.search(rf"\*\*{part}", m.group(1)), f"the runbook entry of {name} has no **{part}** part"


def panel_queries(dashboard: dict[str, object]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]  # type: ignore[attr-defined,index]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_filters_every_query_by_instance(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    instance = variables["instance"]
    assert instance["query"]["query"] == 'label_values(up{job="cxstream"}, instance)'
    assert instance["multi"] and instance["includeAll"]
    queries = panel_queries(dashboard)
    assert queries
    for title, expr in queries:
        # every series selector (a metric name followed by its matchers) selects the chosen workers
        selectors = re.findall(r"\b((?:cx_[a-z_]+|up))(\{[^}]*\}|)", expr)
        assert selectors, (title, expr)
        for metric, matchers in selectors:
            assert 'instance=~"$instance"' in matchers, f"{path.name}: {title}: {metric} is not filtered by $instance in {expr}"


def test_dashboards_are_provisioned_with_distinct_uids_and_the_provisioned_datasource() -> None:
    names = {p.name for p in DASHBOARDS}
    assert {"sre-overview.json", "contact-centre.json", "models.json"} <= names
    provider = (ROOT / "deploy/grafana/provisioning/dashboards/cxstream.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provider
    datasource = re.search(r"uid: (\S+)", (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource
    uids = []
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        uids.append(d["uid"])
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": datasource.group(1)}, (path.name, p["title"])
            assert p["targets"] and {"x", "y", "w", "h"} <= set(p["gridPos"]), (path.name, p["title"])
    assert len(set(uids)) == len(uids), uids
