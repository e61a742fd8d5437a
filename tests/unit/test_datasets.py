"""One place decides where the shared datasets are: CX_SHARED_DATA_DIR, never the engine's CX_DATA_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxstream.datasets import shared_data_dir
from cxstream.intel import evaluate
from cxstream.outreach.bench import default_data_path
from cxstream.replay import bank_log


def test_the_setting_wins_and_the_engine_data_dir_is_not_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CX_DATA_DIR", str(tmp_path / "engine-state"))
    monkeypatch.delenv("CX_SHARED_DATA_DIR", raising=False)
    beside = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    assert shared_data_dir() == evaluate.data_dir() == bank_log.data_dir() == beside
    monkeypatch.setenv("CX_SHARED_DATA_DIR", str(tmp_path / "datasets"))
    assert evaluate.data_dir() == bank_log.data_dir() == tmp_path / "datasets"
    assert default_data_path().parent.parent == tmp_path / "datasets"
