"""The README's run command, as a user runs it: demo assignments flow, Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from cxstream.streams.embedded import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_make_run_demo_assigns_then_ctrl_c_leaves_nothing_running(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run ARGS=--demo" in readme, "the README gives this command; the test runs exactly it"
    env = {**os.environ, "CX_DATA_DIR": str(tmp_path / "var"), "CX_HTTP_PORT": str(free_port())}
    for k in ("CX_BROKER_URL", "CX_REDIS_URL", "CX_TOPIC_PREFIX", "CX_APP_ID"):
        env.pop(k, None)
    log = tmp_path / "run.log"
    with log.open("w") as out:
        # A session of its own, like a terminal: Ctrl-C goes to the whole foreground group.
        proc = subprocess.Popen(
            ["make", "run", "ARGS=--demo"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    session = psutil.Process(proc.pid)
    try:
        deadline = time.monotonic() + 120
        while "cxstream: assignment " not in log.read_text():
            assert proc.poll() is None, f"make run exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no assignment within 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        text = log.read_text()
        pids = {int(p) for p in re.findall(r"(?:embedded broker \(Apache Kafka [\d.]+\)|its zookeeper|embedded redis) pid (\d+)", text)}
        assert len(pids) == 3, text[-2000:]  # kafka, zookeeper, redis
        started = {p.pid for p in session.children(recursive=True)} | pids
        assert all(psutil.pid_exists(p) for p in pids)

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = log.read_text()
    assert "cxstream: stopped" in text, text[-2000:]
    time.sleep(0.5)
    alive = [p for p in started if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running after Ctrl-C: {[(p, psutil.Process(p).cmdline()) for p in alive]}"
