"""The deployment files stay true to the code: every metric they query is one the engine declares."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from cxstream.streams import metrics

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\bcx_[a-z_]+")


SERIES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def declared() -> set[str]:
    """Every series name the engine's metrics module can export."""
    return {
        m._name + suffix
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
        for suffix in SERIES[m._type]
    }


def queried() -> set[str]:
    texts = [(ROOT / "deploy/prometheus/rules.yml").read_text()]
    for path in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        texts += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return {m for text in texts for m in METRIC.findall(text)}


#: Written by the HTTP API's /metrics handler itself (cxstream/serve/http.py), not declared in the metrics module.
API_WRITTEN = {"cx_engine_metrics_up"}


def test_dashboard_and_rules_query_only_declared_metrics() -> None:
    names = queried()
    assert len(names) >= 8
    for name in API_WRITTEN:
        assert name in (ROOT / "cxstream/serve/http.py").read_text()
    missing = {n for n in names if n not in declared() | API_WRITTEN and not n.startswith("cx:")}
    assert not missing, f"queried but never declared: {sorted(missing)}"
