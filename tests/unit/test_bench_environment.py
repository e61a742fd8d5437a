"""The commit a benchmark result names (``environment().git_head``), from a checkout or from a copy of the tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cxstream.bench import loadgen


def test_a_checkout_names_its_own_head(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CX_BENCH_COMMIT", "not-this-one")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=loadgen.REPO, check=True)
    env = loadgen.environment()
    assert env["git_head"] == head.stdout.strip()
    assert "git_head_from" not in env and isinstance(env["git_modified"], list)


def test_a_copy_of_the_tree_names_the_commit_it_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(loadgen, "REPO", tmp_path)  # a folder that is not a checkout
    monkeypatch.setenv("CX_BENCH_COMMIT", "a85a5af")
    env = loadgen.environment()
    assert (env["git_head"], env["git_head_from"]) == ("a85a5af", "CX_BENCH_COMMIT")
    assert "git_modified" not in env  # unknown in a copy: not reported as "nothing modified"


def test_a_copy_without_the_commit_names_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(loadgen, "REPO", tmp_path)
    monkeypatch.delenv("CX_BENCH_COMMIT", raising=False)
    env = loadgen.environment()
    assert not env.get("git_head") and "git_head_from" not in env and "git_modified" not in env
