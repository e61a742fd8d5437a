"""Integration fixtures: the embedded broker and Redis, started by the engine's own code.

One broker and one Redis serve the session; each engine (one per test module)
gets its own topic prefix and consumer group, so tests never see each other's
records.  The engine runs as a subprocess, pointed at these servers through
``CX_BROKER_URL`` / ``CX_REDIS_URL``, exactly as it would be at a real Kafka and Redis.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from cxstream.bench.engineproc import engine_env
from cxstream.streams.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from cxstream.streams.logs import EngineNotReady, wait_worker_ready

API_KEY = "integration-test-key"


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    base = tmp_path_factory.mktemp("servers")
    with EmbeddedBroker(base / "broker") as broker, EmbeddedRedis(base / "redis") as rds:
        yield broker.url, rds.url


@dataclass
class RunningEngine:
    broker: str
    redis_url: str
    prefix: str
    http: str
    proc: subprocess.Popen[str]
    log: Path

    def topic(self, name: str) -> str:
        return self.prefix + name

    def output(self) -> str:
        return self.log.read_text()


def start_engine(
    broker: str, redis_url: str, data_dir: Path, prefix: str, app_id: str, *, ready_s: float = 60.0, **env: str
) -> RunningEngine:
    port = free_port()
    log = data_dir / "engine.log"
    environ = engine_env(
        broker, redis_url, data_dir, prefix=prefix, app_id=app_id, http_port=port, api_key=API_KEY,
        extra={
            "CX_TICK_INTERVAL_S": "0.5",
            # no quiet hours: outreach tests must not depend on the hour CI runs at
            "CX_OUTREACH_QUIET_START": "00:00",
            "CX_OUTREACH_QUIET_END": "00:00",
            **env,
        },
    )
    with log.open("w") as f:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "cxstream.cli", "run"], env=environ, stdout=f, stderr=subprocess.STDOUT, text=True
        )
    engine = RunningEngine(broker, redis_url, prefix, f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_worker_ready(engine.output, proc, ready_s)
    except EngineNotReady:
        stop_engine(engine)
        raise
    return engine


def stop_engine(engine: RunningEngine) -> int:
    if engine.proc.poll() is None:
        engine.proc.send_signal(2)
        try:
            engine.proc.wait(30)
        except subprocess.TimeoutExpired:
            engine.proc.kill()
            engine.proc.wait(10)
    return engine.proc.returncode


@pytest.fixture(scope="module")
def engine(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    broker, redis_url = servers
    tag = uuid.uuid4().hex[:8]
    e = start_engine(broker, redis_url, tmp_path_factory.mktemp("engine"), f"t{tag}.", f"cxtest-{tag}")
    yield e
    stop_engine(e)


@pytest.fixture()
def redis_client(servers: tuple[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(servers[1])
    yield client
    client.close()

