"""``cxstream replay`` beside ``cxstream run``, as the README has it: no broker address to copy from the log.

The engine runs on its embedded Apache Kafka and Redis (random ports) and records them in
``CX_DATA_DIR/endpoints.json``; the README's example contact, copied as printed after an
advisor's login, is replayed without ``CX_BROKER_URL`` and assigned; after Ctrl-C the file is
gone and ``replay`` says no engine runs.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cxstream.streams.embedded import free_port
from cxstream.streams.logs import wait_worker_ready
from tests.unit.test_recording import readme_example

pytestmark = pytest.mark.e2e


def test_replay_finds_the_running_engine_and_the_readme_example_is_assigned(tmp_path: Path) -> None:
    data = tmp_path / "var"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CX_")},
           "CX_DATA_DIR": str(data), "CX_HTTP_PORT": str(free_port()), "CX_API_KEYS": "k"}
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        engine = subprocess.Popen([sys.executable, "-m", "cxstream.cli", "run"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_worker_ready(lambda: log.read_text(errors="replace"), engine, 120, poll_s=0.2)
        path = data / "endpoints.json"
        found = json.loads(path.read_text())
        assert found["pid"] == engine.pid and stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044
        assert found["http_url"] == f"http://127.0.0.1:{env['CX_HTTP_PORT']}"
        assert f"on {found['broker_url']}" in log.read_text() and f"on {found['redis_url']}" in log.read_text()

        recording = tmp_path / "recording.jsonl"
        login = {"event_id": "login-ann", "occurred_at": 1764151200.0, "advisor_id": "ann", "kind": "login", "presence": "available"}
        recording.write_text(json.dumps(login) + "\n" + readme_example())
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "cxstream.cli", "replay", str(recording), "--speed", "0", "--wait", "60",
                               "--no-progress"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr + done.stdout
        assert "1 assignments" in done.stdout and "(1 of the 1 replayed contacts that need an advisor assigned)" in done.stdout, done.stdout
        assert time.monotonic() - began < 30, "waited for --wait although the contact was assigned"
    finally:
        os.killpg(engine.pid, signal.SIGINT)
        engine.wait(90)
    assert not (data / "endpoints.json").exists()
    done = subprocess.run([sys.executable, "-m", "cxstream.cli", "replay", str(recording)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"no engine is running on the data folder {data.resolve()}" in done.stderr, done.stderr
