"""A restart keeps everything: contexts, identity links, the advisor roster, queue statistics, the models.

The engine runs as ``make run`` runs it (``cxstream run`` on its embedded Apache Kafka and
Redis, data under ``CX_DATA_DIR``), traffic comes through ``cxstream replay`` (which finds the
broker in ``CX_DATA_DIR/endpoints.json``), and the state is read through the HTTP API.

* Ctrl-C, then run again: every customer's context, every identifier's link, the roster and
  the queue counters are what they were, and the churn model the learner published from the
  recordings' outcomes (retained/churned) is the one the engine scores with again.
* ``kill -9`` of the engine while it is still working through a replay whose records the
  broker acknowledged, then run again (with local delivery, the default, and with
  ``CX_LOCAL_DELIVERY=0``): nothing is lost and nothing counted twice -- each
  customer's interaction, channel and contact counts are exactly what the recordings hold,
  every contact that needs an advisor was offered once, and the state before the kill survives.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cxstream.streams.embedded import free_port
from cxstream.streams.logs import wait_worker_ready

pytestmark = pytest.mark.e2e

KEY = "restart-test-key"
CHANNELS = ("chat", "voice", "web")
ADVISORS = ("ann", "bob", "chloe", "dev")
ROUTED_PER_RECORDING = 5  # chat contacts needing an advisor; the roster has room for all of them (4 x 3)


def customer(i: int) -> dict[str, str]:
    """Customer *i*'s identifiers (0-19 and 1000-1059; phones in Ofcom's range for fiction)."""
    return {"email": f"restart-{i}@example.org", "phone": f"+447700900{i % 1000 + 100 * (i // 1000):03d}"}


def recording(path: Path, first: int, count: int, tag: str, *, advisors: bool) -> Path:
    """Per customer: a chat message (email only), a voice call (email and phone: links them), a page view (phone only).

    The first ``ROUTED_PER_RECORDING`` customers also open a chat that needs an advisor.
    """
    lines: list[dict[str, Any]] = []
    t0 = 1_700_000_000.0
    if advisors:
        for n, a in enumerate(ADVISORS):
            lines.append({
                "type": "cx.AdvisorEvent.v1", "event_id": f"{tag}-login-{a}", "occurred_at": t0 + n * 0.01,
                "advisor_id": a, "kind": "login", "presence": "available", "skills": {"billing": 3},
                "languages": ["en"], "capacity": {"chat": 3, "voice": 1},
            })
    for i in range(first, first + count):
        at = t0 + 1 + (i - first) * 0.05
        ids = customer(i)
        events = [
            ("message", "chat", {"email": ids["email"]}, {"text": "my card payment was declined twice"}),
            ("contact_opened", "voice", ids, {}),
            ("page_view", "web", {"phone": ids["phone"]}, {}),
        ]
        if i - first < ROUTED_PER_RECORDING:
            events.append(("contact_opened", "chat", {"email": ids["email"]}, {"needs_advisor": True, "routing_group": "default"}))
        for n, (kind, channel, who, extra) in enumerate(events):
            lines.append({
                "type": "cx.InteractionEvent.v1", "event_id": f"{tag}-{i}-{n}", "occurred_at": at + n * 0.01,
                "channel": channel, "kind": kind, "customer": who, "contact_id": f"{tag}-{channel}-{i}-{n}",
                "language": "en", **extra,
            })
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def outcomes(path: Path, customers: range, tag: str) -> Path:
    """A business system's report per customer: the even ones stayed, the odd ones left (churn labels)."""
    lines = [
        {"type": "cx.OutcomeEvent.v1", "event_id": f"{tag}-{i}", "occurred_at": 1_700_000_100.0 + n * 0.01,
         "customer": {"email": customer(i)["email"]}, "kind": "churned" if i % 2 else "retained"}
        for n, i in enumerate(customers)
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Engine:
    """``cxstream run`` on a data folder, in a session of its own (like a terminal)."""

    def __init__(self, data_dir: Path, routing: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CX_")},
            "CX_DATA_DIR": str(data_dir), "CX_HTTP_PORT": str(self.port), "CX_API_KEYS": KEY,
            "CX_ROUTING_CONFIG_FILE": str(routing), "CX_TICK_INTERVAL_S": "0.5", "CX_SNAPSHOT_INTERVAL_S": "0.5",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"engine-{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cxstream.cli", "run"], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_worker_ready(lambda: self.log.read_text(errors="replace"), self.proc, 120, poll_s=0.2)

    def ctrl_c(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(90)
        assert "cxstream: stopped" in self.log.read_text(errors="replace")

    def kill_9(self) -> None:
        """SIGKILL to the engine alone; its servers and API processes must die with it (PR_SET_PDEATHSIG)."""
        assert self.proc is not None
        text = self.log.read_text(errors="replace")
        children = {int(p) for p in re.findall(r"(?:embedded broker \(Apache Kafka [\d.]+\)|its zookeeper|embedded redis) pid (\d+)", text)}
        children |= {int(p) for p in re.findall(r"HTTP API on .*pid ([\d, ]+)\)", text)[0].split(", ")}
        assert len(children) == 4, text[-2000:]
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while alive := [p for p in children if _running(p)]:
            assert time.monotonic() < deadline, f"left running after kill -9 of the engine: {alive}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def replay(self, path: Path) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "cxstream.cli", "replay", str(path), "--speed", "0", "--wait", "0", "--no-progress"],
            env=self.env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr + done.stdout

    def metrics(self) -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics", headers={"X-API-Key": KEY})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read().decode()

    def model_version(self, model: str, *, at_least: float = 1, timeout: float = 60.0) -> float:
        """``cx_model_version{model=...}`` once it reaches *at_least* (the learner published, or the scorer loaded it)."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(rf'^cx_model_version{{model="{model}"}} ([\d.e+]+)$', self.metrics(), re.M)
            if found and float(found.group(1)) >= at_least:
                return float(found.group(1))
            assert time.monotonic() < deadline, f"cx_model_version of {model}: {found and found.group(1)} after {timeout:.0f} s"
            time.sleep(0.25)

    def settled_model_version(self, model: str, *, labels: int, timeout: float = 60.0) -> float:
        """The model's version once the learner has learned *labels* labels and published them.

        The learner publishes every ``CX_SNAPSHOT_INTERVAL_S`` (0.5 s here) while labels arrive, so the
        first version seen may be of part of them; after the last one, one more publication follows."""
        deadline = time.monotonic() + timeout
        while True:
            # the learner's own process exports it (labelled process="learner" in the engine's /metrics)
            found = re.search(rf'^cx_labels_total{{model="{model}",process="learner"}} ([\d.e+]+)$', self.metrics(), re.M)
            if found and float(found.group(1)) >= labels:
                break
            assert time.monotonic() < deadline, f"the learner learned {found and found.group(1)} of {labels} {model} labels"
            time.sleep(0.25)
        time.sleep(2.0)  # the publication that follows the last label (every 0.5 s while anything is pending)
        return self.model_version(model, at_least=labels + 1)

    def ticks_default_group(self, timeout: float = 30.0) -> None:
        """This run of the engine itself ticks the restored routing group: its gauges exist (the
        ``cx:queues`` copy in Redis outlives a restart by up to a minute, so the API alone cannot tell)."""
        deadline = time.monotonic() + timeout
        while 'cx_advisors_available{routing_group="default"}' not in (text := self.metrics()):
            shown = [line for line in text.splitlines() if "advisors_available" in line or "queue_waiting" in line]
            assert time.monotonic() < deadline, f"the restarted engine does not tick the restored routing group: {shown}"
            time.sleep(0.25)

    def accepted_inputs(self) -> float:
        """Input records this run of the engine accepted (its ``cx_events_in_total`` counters start at 0)."""
        text = self.metrics()
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("cx_events_in_total{") and 'outcome="accepted"' in line and "interactions" in line
        )

    def get(self, route: str) -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{route}", headers={"X-API-Key": KEY})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def state(engine: Engine, customers: range) -> dict[str, Any]:
    """What the API shows: each customer's context (by email), the id its phone links to, the roster and queue counters."""
    out: dict[str, Any] = {"contexts": {}, "links": {}}
    for i in customers:
        ids = customer(i)
        code, ctx = engine.get(f"/customers/context?email={urllib.request.quote(ids['email'])}")
        out["contexts"][i] = ctx if code == 200 else code
        code, by_phone = engine.get(f"/customers/context?phone={urllib.request.quote(ids['phone'])}")
        out["links"][i] = by_phone.get("customer_id") if code == 200 else code
    code, group = engine.get("/queues/default")
    out["queues"] = group if code == 200 else code
    return out


def counters(group: Any) -> Any:
    """The queue statistics that do not move with the clock while nothing happens, and the roster."""
    if not isinstance(group, dict):
        return group
    keep = ("waiting", "offered", "answered", "abandoned", "completed", "offers", "offers_rejected", "offer_timeouts", "transfers", "escalations")
    queues = {ch: {k: q.get(k) for k in keep} for ch, q in group.get("queues", {}).items()}
    return {"queues": queues, "advisors": group.get("advisors")}


def settled(engine: Engine, customers: range, routed: int, timeout: float = 90.0) -> dict[str, Any]:
    """Wait until every customer's context holds its 3 (or 4) interactions and every routed contact was offered."""
    deadline = time.monotonic() + timeout
    while True:
        s = state(engine, customers)
        complete = all(
            isinstance(c, dict) and c.get("interactions_total", 0) >= 3 and s["links"][i] == c.get("customer_id")
            for i, c in s["contexts"].items()
        )
        chat = (s["queues"].get("queues", {}).get("chat", {}) if isinstance(s["queues"], dict) else {})
        if complete and chat.get("offered", 0) >= routed:
            time.sleep(1.5)  # a last flush of the write-behind and a router tick
            return state(engine, customers)
        if time.monotonic() > deadline:
            missing = {i: c for i, c in s["contexts"].items() if not isinstance(c, dict)}
            pytest.fail(f"not settled in {timeout:.0f} s: missing contexts {missing}, queues {counters(s['queues'])}")
        time.sleep(0.5)


def assert_exact(s: dict[str, Any], customers: range, routed_first: int) -> None:
    """Nothing lost, nothing counted twice: each context holds exactly the recordings' events."""
    for i in customers:
        ctx = s["contexts"][i]
        assert isinstance(ctx, dict), (i, ctx)
        routed = (i - routed_first) % 1000 < ROUTED_PER_RECORDING
        assert ctx["interactions_total"] == 3 + routed, (i, ctx["interactions_total"], ctx.get("recent_event_ids"), ctx.get("recent"))
        assert ctx["channel_counts"] == {"chat": 1 + routed, "voice": 1, "web": 1}, (i, ctx["channel_counts"])
        assert s["links"][i] == ctx["customer_id"], (i, s["links"][i], ctx["customer_id"])


def new_engine(tmp_path: Path, **env: str) -> Engine:
    """An engine (not started) in *tmp_path*, with *env* settings beside the test's own."""
    routing = tmp_path / "routing.toml"
    # offers stay open and no SLA timer fires: the queue counters stay still once the traffic is in
    routing.write_text("[default]\noffer_timeout_s = 36000.0\ndefault_sla_s = 36000.0\n[default.sla_s]\nchat = 36000.0\n")
    e = Engine(tmp_path / "var", routing)
    e.env.update(env)
    return e


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = new_engine(tmp_path)
    yield e
    e.stop()


def test_ctrl_c_then_run_again_keeps_contexts_links_roster_and_queues(engine: Engine, tmp_path: Path) -> None:
    first = range(0, 20)
    engine.start()
    engine.replay(recording(tmp_path / "r1.jsonl", 0, len(first), "r1", advisors=True))
    assert_exact(settled(engine, first, ROUTED_PER_RECORDING), first, 0)
    engine.replay(outcomes(tmp_path / "o1.jsonl", first, "o1"))  # 20 churn labels for the learner
    churn_model = engine.settled_model_version("churn", labels=len(first))
    before = settled(engine, first, ROUTED_PER_RECORDING)
    assert_exact(before, first, 0)
    assert before["queues"]["advisors"]["logged_in"] == len(ADVISORS), before["queues"]["advisors"]
    engine.ctrl_c()

    engine.start()
    after = settled(engine, first, ROUTED_PER_RECORDING)
    engine.ticks_default_group()  # no routing record comes after the restart
    assert "restored 0 table records" not in engine.log.read_text()
    assert after["contexts"] == before["contexts"]
    assert after["links"] == before["links"]
    assert counters(after["queues"]) == counters(before["queues"])
    # the scorer loads the published churn model from the persisted Redis (no label came since)
    assert engine.model_version("churn", at_least=churn_model) == churn_model


@pytest.mark.parametrize("delivery", ["local", "through_the_broker"])
def test_kill_9_mid_replay_loses_nothing_acknowledged_and_counts_nothing_twice(engine: Engine, tmp_path: Path, delivery: str) -> None:
    if delivery == "through_the_broker":
        engine.env["CX_LOCAL_DELIVERY"] = "0"  # every stage reads its input from the log, in log order
    # r2 spans many batches, so the kill comes while some of it is still uncommitted
    first, second = range(0, 20), range(1000, 1200)
    engine.start()
    engine.replay(recording(tmp_path / "r1.jsonl", first.start, len(first), "k1", advisors=True))
    before = settled(engine, first, ROUTED_PER_RECORDING)
    accepted = engine.accepted_inputs()
    # r2 is produced while the engine's own process is stopped (its broker, Redis and API processes run on), so the
    # whole of r2 is a backlog when it goes on: otherwise it could take and commit all of r2 while the replay ran
    assert engine.proc is not None
    os.kill(engine.proc.pid, signal.SIGSTOP)
    try:
        engine.replay(recording(tmp_path / "r2.jsonl", second.start, len(second), "k2", advisors=False))
    finally:
        os.kill(engine.proc.pid, signal.SIGCONT)
    # the broker acknowledged every record of r2: kill the engine as soon as it has taken some of them
    deadline = time.monotonic() + 30
    while engine.accepted_inputs() <= accepted:
        assert time.monotonic() < deadline, "the engine took nothing of r2"
        time.sleep(0.005)
    engine.kill_9()

    engine.start()
    after = settled(engine, first, ROUTED_PER_RECORDING)
    engine.ticks_default_group()
    assert after["contexts"] == before["contexts"], "the state before the kill did not survive it"
    assert after["links"] == before["links"]
    whole = settled(engine, second, 2 * ROUTED_PER_RECORDING)
    redone = engine.accepted_inputs()
    print(f"after the restart the engine took {redone:.0f} of r2's {len(second) * 3 + ROUTED_PER_RECORDING} interactions again")
    assert redone > 0, "the kill came after the engine had committed all of r2: this run tested nothing"
    assert_exact(whole, second, second.start)
    chat = whole["queues"]["queues"]["chat"]
    assert chat["offered"] == 2 * ROUTED_PER_RECORDING, chat  # each routed contact offered once: none twice
    assert chat["offers"] == 2 * ROUTED_PER_RECORDING, chat
    assert whole["queues"]["advisors"]["logged_in"] == len(ADVISORS)
