"""Packaging papercuts: the licence metadata setuptools accepts without deprecation, and artefacts git ignores."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_license_is_an_spdx_expression_with_a_setuptools_that_reads_it() -> None:
    """``project.license`` as a TOML table makes setuptools >= 77 warn three times per install (deprecated, PEP 639)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"
    [setuptools] = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    least = re.fullmatch(r"setuptools>=(\d+).*", setuptools)
    assert least is not None and int(least.group(1)) >= 77, setuptools  # the first to read an SPDX string


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a checkout")
@pytest.mark.parametrize("path", ["catboost_info/learn_error.tsv", "bench/intel/catboost_info/time_left.tsv"])
def test_catboost_training_logs_are_ignored(path: str) -> None:
    """CatBoost writes ``catboost_info/`` into the working directory of whoever trains: never to be committed."""
    done = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, check=False)
    assert done.returncode == 0, f"{path} is not ignored by .gitignore"
