"""``{CX_DATA_DIR}/endpoints.json``: where the running engine's broker, Redis and API are, for the commands beside it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cxstream import cli
from cxstream.streams import endpoints
from cxstream.streams.endpoints import (
    NoRunningEngine,
    engine_endpoints,
    remove_endpoints,
    running_endpoints,
    update_endpoints,
    write_endpoints,
)
from cxstream.streams.settings import Settings


def test_written_readable_by_others_completed_with_the_api_and_removed_on_stop(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path / "var"))
    old = os.umask(0o077)  # a private umask must not make the file unreadable to the other users of the data folder
    try:
        path = write_endpoints(s, "127.0.0.1:9092", "redis://127.0.0.1:6379/0")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    update_endpoints(s, http_url="http://127.0.0.1:8080")
    found = engine_endpoints(s)
    assert (found["broker_url"], found["redis_url"], found["http_url"]) == ("127.0.0.1:9092", "redis://127.0.0.1:6379/0", "http://127.0.0.1:8080")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    remove_endpoints(s)
    assert not path.exists() and running_endpoints(s) is None


def test_no_file_says_which_data_folder_was_looked_at(tmp_path: Path) -> None:
    with pytest.raises(NoRunningEngine, match=f"no engine is running on the data folder {tmp_path}.*CX_DATA_DIR"):
        engine_endpoints(Settings(data_dir=str(tmp_path)))


def test_a_file_left_by_a_killed_engine_is_stale(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path))
    path = write_endpoints(s, "127.0.0.1:9092", "redis://127.0.0.1:6379/0")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    path.write_text(json.dumps({**json.loads(path.read_text()), "pid": int(gone.stdout)}))
    with pytest.raises(NoRunningEngine, match=rf"pid {int(gone.stdout)}\) is not running any more"):
        engine_endpoints(s)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_pid_reused_by_another_process_is_stale(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path))
    path = write_endpoints(s, "127.0.0.1:9092", "redis://127.0.0.1:6379/0")
    path.write_text(json.dumps({**json.loads(path.read_text()), "started": 1}))  # our pid, but not our start
    assert running_endpoints(s) is None


def test_an_engine_of_another_user_counts_as_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(data_dir=str(tmp_path))
    write_endpoints(s, "127.0.0.1:9092", "redis://127.0.0.1:6379/0")

    def not_yours(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(endpoints.os, "kill", not_yours)
    assert engine_endpoints(s)["broker_url"] == "127.0.0.1:9092"


@pytest.fixture()
def no_servers_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("CX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CX_DATA_DIR", str(tmp_path / "var"))
    return tmp_path / "var"


@pytest.mark.parametrize("argv", [["replay", "recording.jsonl"], ["serve"]])
def test_commands_that_need_the_engine_say_none_runs(argv: list[str], no_servers_set: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"no engine is running on the data folder {no_servers_set.resolve()}" in err, err


def test_replay_takes_the_broker_of_the_running_engine(no_servers_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_endpoints(Settings(data_dir=str(no_servers_set)), "127.0.0.1:19092", "redis://127.0.0.1:16379/0")
    seen: dict[str, str] = {}

    def main_replay(file: str, bootstrap: str, **kw: object) -> int:
        seen["broker"] = bootstrap
        return 0

    monkeypatch.setattr("cxstream.replay.publish.main_replay", main_replay)
    assert cli.main(["replay", "recording.jsonl"]) == 0 and seen == {"broker": "127.0.0.1:19092"}
    monkeypatch.setenv("CX_BROKER_URL", "kafka1:9092")  # set: it wins
    assert cli.main(["replay", "recording.jsonl"]) == 0 and seen == {"broker": "kafka1:9092"}
