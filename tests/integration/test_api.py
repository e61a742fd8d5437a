"""The HTTP API in processes of its own: queue statistics, the engine heartbeat, `cxstream serve`, supervision."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cxstream.schemas import AdvisorEvent, Identifiers, InteractionEvent
from cxstream.streams import topics as t
from cxstream.streams.cpuslice import slice_us
from cxstream.streams.embedded import free_port
from cxstream.streams.settings import Settings
from tests.integration.conftest import API_KEY, RunningEngine, start_engine, stop_engine
from tests.integration.helpers import produce, wait_for
from tests.unit.test_cpuslice import kernel_takes_slices

pytestmark = pytest.mark.integration


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def call(base: str, path: str, method: str = "GET", key: str | None = API_KEY) -> tuple[int, Any]:
    req = urllib.request.Request(base + path, method=method, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if resp.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def api_children(engine: RunningEngine) -> list[psutil.Process]:
    """The engine's live HTTP API processes (a killed one is a zombie until the engine reaps it)."""
    found = []
    for c in psutil.Process(engine.proc.pid).children():
        try:
            if c.cmdline()[1:4] == ["-m", "cxstream.cli", "serve"]:
                found.append(c)
        except psutil.ZombieProcess:
            pass
    return found


def test_queue_statistics_of_a_group_after_routing(engine: RunningEngine) -> None:
    group, advisor = uid("g"), uid("adv")
    now = time.time()
    login = AdvisorEvent(event_id=uid("login"), occurred_at=now, advisor_id=advisor, kind="login", routing_group=group,
                         presence="available", capacity={"voice": 1})
    asyncio.run(produce(engine.broker, engine.topic(t.ADVISOR_EVENTS.name), [(advisor.encode(), login)]))
    calls = [
        InteractionEvent(event_id=uid("open"), occurred_at=now + 0.1 * i, channel="voice", kind="contact_opened",
                         customer=Identifiers(customer_id=uid("C")), contact_id=uid("call"), needs_advisor=True, routing_group=group)
        for i in (1, 2, 3)
    ]
    asyncio.run(produce(engine.broker, engine.topic(t.INTERACTIONS.name), [(c.event_id.encode(), c) for c in calls]))

    # one voice slot: one call is offered, the other two are queued; the router's tick writes the figures to Redis
    last: list[Any] = [None]

    def all_routed() -> Any:
        last[0] = call(engine.http, f"/queues/{group}")
        ok = last[0][0] == 200 and last[0][1]["total"]["offered"] == 3
        # and a tick after the offer: at the offer's own instant no busy time has passed yet (occupancy 0)
        return last[0][1] if ok and (last[0][1]["total"]["occupancy"] or 0) > 0 else None

    try:
        stats = wait_for(all_routed, timeout=30)
    except TimeoutError as exc:
        raise AssertionError(f"last answer: {last[0]}") from exc
    assert stats["group"] == group
    assert stats["advisors"] == {"logged_in": 1, "available": 0, "busy": 1, "away": 0}, "its only slot is taken"
    total = stats["total"]
    assert total["offers"] == 1 and total["answered"] == 0
    assert total["waiting"] == 3, "waiting = not answered yet: the offered call (not accepted) and the two queued"
    assert stats["queues"]["voice"]["waiting"] == 3
    assert total["longest_wait_s"] >= 0
    # the offered call is held: its queue is busy for the whole of the group's busy time (it was 0 beside the total)
    assert stats["queues"]["voice"]["occupancy"] == total["occupancy"] > 0, stats

    status, listing = call(engine.http, "/queues")
    assert status == 200 and group in [g["group"] for g in listing["groups"]]
    assert call(engine.http, f"/queues/{group}", key="wrong")[0] == 401


def test_the_api_process_runs_with_the_latency_slice_and_the_engine_with_the_kernels(engine: RunningEngine) -> None:
    (child,) = api_children(engine)
    api, worker = slice_us(child.pid), slice_us(engine.proc.pid)
    if kernel_takes_slices():
        assert api == Settings().latency_slice_us == 100
        assert worker != api, "the stream worker keeps the kernel's default slice"
    else:
        assert api == worker


def test_unknown_routing_group_is_404_with_a_reason(engine: RunningEngine) -> None:
    status, body = call(engine.http, f"/queues/{uid('nobody')}")
    assert status == 404 and body["error"] == "unknown_routing_group"
    assert "no live statistics" in body["detail"]


def test_healthz_reads_the_engine_heartbeat(engine: RunningEngine) -> None:
    status, body = call(engine.http, "/healthz", key=None)
    assert status == 200 and body["status"] == "ok" and body["redis"] == "ok" and body["engine"] == "ok"
    assert body["engine_pid"] == engine.proc.pid, "the heartbeat is the engine's own, not the API process's"
    assert body["api_pid"] in [c.pid for c in api_children(engine)]
    assert body["engine_heartbeat_age_s"] < 3


@pytest.fixture()
def standalone(engine: RunningEngine, tmp_path: Path) -> Iterator[Any]:
    """``cxstream serve`` started by hand next to the engine (same Redis and broker); stopped by SIGTERM."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(app_id: str) -> str:
        port = free_port()
        env = {**os.environ, "CX_REDIS_URL": engine.redis_url, "CX_BROKER_URL": engine.broker, "CX_API_KEYS": API_KEY,
               "CX_HTTP_PORT": str(port), "CX_APP_ID": app_id, "CX_TOPIC_PREFIX": engine.prefix, "CX_DATA_DIR": str(tmp_path)}
        log = (tmp_path / f"serve-{port}.log").open("wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "cxstream.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert procs[-1].poll() is None, (tmp_path / f"serve-{port}.log").read_text()
            try:
                call(base, "/healthz", key=None)
            except OSError:
                return False
            return True

        wait_for(answers, timeout=30)
        return base

    yield start
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        assert p.wait(10) == 0, "cxstream serve stops cleanly on SIGTERM"


def test_cxstream_serve_alone_answers_from_redis_and_publishes_erasures(engine: RunningEngine, standalone: Any) -> None:
    crm = uid("C")
    ev = InteractionEvent(event_id=uid("pv"), occurred_at=time.time(), channel="web", kind="page_view", customer=Identifiers(customer_id=crm))
    asyncio.run(produce(engine.broker, engine.topic(t.INTERACTIONS.name), [(b"k", ev)]))
    base = standalone("cxtest-" + engine.prefix[1:-1])  # conftest: prefix t{tag}. and app id cxtest-{tag}
    status, health = call(base, "/healthz", key=None)
    assert status == 200 and health["engine"] == "ok" and health["engine_pid"] == engine.proc.pid
    ctx = wait_for(lambda: (lambda r: r[1] if r[0] == 200 else None)(call(base, f"/customers/{crm}/context")))
    assert ctx["customer_id"] == crm

    status, body = call(base, f"/customers/{crm}/erase", method="POST")
    assert status == 202
    done = wait_for(lambda: (lambda r: r[1] if r[0] == 200 and r[1]["status"] == "completed" else None)(
        call(base, f"/erasures/{body['request_id']}")), timeout=20)
    assert done["parts"] == 1
    assert call(base, f"/customers/{crm}/context")[0] == 404
    status, text = call(base, "/metrics")
    assert status == 200 and b"cx_http_request_seconds_bucket" in text and b"cx_events_in_total" not in text, (
        "alone, without --engine-metrics, /metrics has the API's own metrics only"
    )


def test_healthz_is_503_when_no_engine_beats(engine: RunningEngine, standalone: Any) -> None:
    base = standalone(uid("no-such-engine"))
    status, body = call(base, "/healthz", key=None)
    assert status == 503 and body["status"] == "unhealthy"
    assert body["redis"] == "ok" and body["engine"].startswith("down: no heartbeat")


def test_api_process_that_dies_is_restarted(engine: RunningEngine) -> None:
    (child,) = api_children(engine)
    child.kill()
    replacement = wait_for(lambda: [c for c in api_children(engine) if c.pid != child.pid], timeout=20)
    assert len(replacement) == 1
    assert f"HTTP API process {child.pid} exited with code -9; restarting it" in engine.output()

    def answers() -> Any:
        try:
            return call(engine.http, "/healthz", key=None)
        except OSError:  # with one API process, nothing listens until the replacement does
            return None

    status, body = wait_for(answers)
    assert status == 200 and body["api_pid"] == replacement[0].pid


def test_several_api_processes_share_the_port_and_leave_nothing_behind(servers: tuple[str, str], tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    e = start_engine(*servers, tmp_path, f"t{tag}.", f"cxtest-{tag}", CX_HTTP_WORKERS="2")
    try:
        children = api_children(e)
        assert len(children) == 2
        pids = {c.pid for c in children}
        # A new connection each.  A process started is not yet listening (it binds once it has imported and set
        # up), and the kernel spreads connections over the sockets listening at the time: ask until both answered.
        answered: set[int] = set()
        deadline = time.monotonic() + 30
        while answered != pids and time.monotonic() < deadline:
            answered.add(call(e.http, "/healthz", key=None)[1]["api_pid"])
        assert answered == pids, "the kernel spreads connections over both processes (SO_REUSEPORT)"
        # the engine says so once every API process reported ready, which can come after both answered
        assert wait_for(lambda: "HTTP API on http://127.0.0.1:" in e.output() and "2 processes" in e.output(), timeout=30)
    finally:
        assert stop_engine(e) == 0
    time.sleep(0.2)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running after the engine stopped: {alive}"
