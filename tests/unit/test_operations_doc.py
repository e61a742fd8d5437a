"""docs/OPERATIONS.md stays true to the deployment files and the engine's settings."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cxstream.streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs/OPERATIONS.md"
#: Named in the doc but deliberately absent from the repository: the operator's key file (git-ignored).
NOT_IN_REPO = {"deploy/secrets/cx_api_key"}
#: Variables of docker-compose.yml itself (interpolated by Compose), not engine settings.
COMPOSE_VARIABLES = {"CX_ALERT_WEBHOOK_URL"}


def paths_named(text: str) -> set[str]:
    """Repository paths the doc names in backticks or links.

    >>> sorted(paths_named("see `deploy/k8s/engine.yaml` and [x](ARCHITECTURE.md)"))
    ['deploy/k8s/engine.yaml', 'docs/ARCHITECTURE.md']
    """
    ticks = {m for m in re.findall(r"`((?:deploy|cxstream|tests|docs)/[^`\s]*)`", text)}
    links = {"docs/" + m for m in re.findall(r"\]\(([A-Z][A-Za-z_]*\.md)\)", text)}
    return ticks | links


def test_every_path_the_doc_names_exists() -> None:
    text = DOC.read_text()
    named = paths_named(text)
    assert len(named) >= 10
    missing = sorted(p for p in named - NOT_IN_REPO if not (ROOT / p).exists())
    assert missing == []
    assert "docs/MONITORING.md" in named, "the doc must link the alert runbook"


def test_every_setting_the_doc_names_is_one() -> None:
    names = set(re.findall(r"\bCX_[A-Z_]+[A-Z]", DOC.read_text()))
    known = {n for n, _, _ in Settings.documented()}
    assert names - known - COMPOSE_VARIABLES == set()
    compose_text = (ROOT / "docker-compose.yml").read_text()
    assert all(v in compose_text for v in COMPOSE_VARIABLES)


def test_the_doc_names_the_images_and_retention_compose_runs() -> None:
    text = DOC.read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    images = {s["image"] for s in compose["services"].values() if "image" in s}
    assert images and {i for i in images if f"`{i}" not in text} == set()
    retention = next(a for a in compose["services"]["prometheus"]["command"] if "retention.time=" in a)
    days = re.fullmatch(r"--storage\.tsdb\.retention\.time=(\d+)d", retention)
    assert days and f"{days.group(1)} days" in text
