"""Shared test configuration.

In CI (``CI`` set) a skipped test fails the run: integration tests must run there,
never silently skip.
"""

from __future__ import annotations

import os

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped and exitstatus == 0:
        if reporter:
            reporter.write_line(f"CI: {skipped} test(s) were skipped; in CI every test must run", red=True)
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """Say where the browser tests left their screenshots (tests/e2e/test_pages.py)."""
    from tests.e2e.test_pages import ARTIFACTS_KEY

    for path in sorted(set(config.stash.get(ARTIFACTS_KEY, []))):
        terminalreporter.write_line(f"browser test screenshots: {path}")
