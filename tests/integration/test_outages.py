"""The engine rides out a 30 s Redis outage and a 30 s broker outage without a restart.

The module runs its own embedded Apache Kafka and Redis (the session's are shared by other
tests and must not go away), stops each of them for :data:`OUTAGE_S` seconds and starts it
again on the same port and data, while a channel system keeps publishing interactions to the
broker from a thread: a producer that buffers what it cannot deliver (as channel systems do),
so records are published before, during and after each outage.  One engine (``cxstream run``,
pointed at the servers with ``CX_BROKER_URL`` / ``CX_REDIS_URL``) runs throughout.

* Redis down: contacts opened meanwhile are still assigned; the context API answers 503
  ``redis_unavailable`` (and ``/healthz`` says Redis is unreachable) while the desk's actions,
  which need only the broker, still work; the metrics show the outage and the write-behind's
  backlog, which drains once Redis is back.
* Broker down: a desk action answers 503 ``broker_unavailable`` within its timeout (no hang, no
  500) while context lookups, which need only Redis, still answer; the engine does not exit;
  its stages, its learner's app and the API's producer reconnect by themselves.
* The broker runs Shenandoah (``CX_EMBEDDED_BROKER_GC``'s other collector), and its GC log
  has the restarted JVM's pauses.
* Afterwards nothing is lost or counted twice: each customer's context counts exactly the
  interactions published for it, every contact that needs an advisor was assigned exactly once,
  and every context copy in Redis equals the context table (its changelog).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis
from confluent_kafka import KafkaError, KafkaException, Producer

from cxstream.context.model import context_json
from cxstream.schemas import AdvisorEvent, Assignment, Identifiers, InteractionEvent, OutcomeEvent
from cxstream.streams import topics as t
from cxstream.streams.embedded import EmbeddedBroker, EmbeddedRedis
from cxstream.streams.keys import context_key
from tests.integration.conftest import API_KEY, RunningEngine, start_engine, stop_engine
from tests.integration.helpers import produce, read_to_end, wait_for

pytestmark = pytest.mark.integration

#: How long each server stays down (issue 18: 30 s).
OUTAGE_S = 30.0
GROUP = "default"
ADVISORS = [f"adv-{n}" for n in range(16)]  # 16 x 50 chats: room for every contact of the run (none is completed)
CUSTOMERS = [f"cust-{n}" for n in range(24)]
EVERY_S = 0.1  # the channel system publishes an interaction this often
ROUTED_EVERY = 10  # every 10th interaction opens a chat contact that needs an advisor
OUTCOME_EVERY = 4  # and every 4th is followed by a churn outcome (a label for the learner)


def http(engine: RunningEngine, method: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any, float]:
    """(status, JSON body or text, seconds it took)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        engine.http + path, data=data, method=method,
        headers={"X-API-Key": API_KEY, **({"Content-Type": "application/json"} if data else {})},
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status, kind = resp.read(), resp.status, resp.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        raw, status, kind = exc.read(), exc.code, exc.headers.get_content_type()
    took = time.monotonic() - started
    return status, json.loads(raw) if kind == "application/json" else raw.decode(errors="replace"), took


#: the learner's series (its own process: the engine's /metrics labels them process="learner")
LEARNER_CHURN_VERSION = 'cx_model_version{model="churn",process="learner"}'
LEARNER_CHURN_LABELS = 'cx_labels_total{model="churn",process="learner"}'


def metric(engine: RunningEngine, name: str) -> float | None:
    """The value of one series of the engine's /metrics (its name and labels exactly as exported), or None."""
    status, text, _ = http(engine, "GET", "/metrics")
    if status != 200:
        return None
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


class Channel(threading.Thread):
    """A channel system publishing interactions of :data:`CUSTOMERS` until stopped; buffers through outages."""

    def __init__(self, broker: str, topic: str, outcomes: str) -> None:
        super().__init__(name="channel", daemon=True)
        self.topic = topic
        self.outcomes = outcomes
        # A record the restarted broker refuses, or does not acknowledge within 60 s, comes back to
        # delivered() to be sent again (the engine drops the copies by event id, as it must for any
        # channel system that sends again).  Idempotent, with a 600 s timeout and UNKNOWN_TOPIC_OR_PART
        # not sent again, the records published after the broker came back never reached it (CI, December 3).
        self.producer = Producer({
            "bootstrap.servers": broker, "acks": "all", "linger.ms": 5,
            "message.timeout.ms": 60_000, "log_level": 0,
            "topic.metadata.refresh.interval.ms": 1000,  # a restarted broker's topics are asked for again soon
        })
        self.sent: list[InteractionEvent] = []
        self.failed: list[str] = []
        self.retry: list[tuple[str, bytes, bytes]] = []
        self.errors: Counter[str] = Counter()  # every delivery or produce error, by name: what a stuck finish() reports
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def event(self, n: int) -> InteractionEvent:
        cid = CUSTOMERS[n % len(CUSTOMERS)]
        routed = n % ROUTED_EVERY == 0
        return InteractionEvent(
            event_id=f"ev-{n}-{uuid.uuid4().hex[:6]}", occurred_at=time.time(), channel="chat",
            kind="contact_opened" if routed else "message", customer=Identifiers(customer_id=cid),
            contact_id=f"k-{n}", needs_advisor=routed, routing_group=GROUP,
            text=None if routed else f"message {n} about my bill", language="en",
        )

    def outcome(self, n: int) -> OutcomeEvent:
        """A business system's churn report: a label for the learner, whose publications need Redis."""
        cid = CUSTOMERS[n % len(CUSTOMERS)]
        return OutcomeEvent(
            event_id=f"out-{n}-{uuid.uuid4().hex[:6]}", occurred_at=time.time(), customer=Identifiers(customer_id=cid),
            kind="churned" if n % 2 else "retained",
        )

    def delivered(self, err: Any, msg: Any) -> None:
        """A channel system sends again what the broker did not take (the same record: the engine drops duplicates).

        A restarted broker answers its first metadata and produce requests before it has loaded
        every partition (``UNKNOWN_TOPIC_OR_PART``), and the client fails records of a partition it is
        told does not exist."""
        if err is None:
            return
        self.errors[err.name()] += 1
        if err.retriable() or err.code() in (
            KafkaError._UNKNOWN_PARTITION, KafkaError._MSG_TIMED_OUT, KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            self.retry.append((msg.topic(), msg.key(), msg.value()))
        else:
            self.failed.append(str(err))

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            ev = self.event(n)
            with self.lock:
                self.produce(self.topic, ev.customer.customer_id.encode(), msgspec.json.encode(ev))
                self.sent.append(ev)
                if n % OUTCOME_EVERY == OUTCOME_EVERY - 1:
                    out = self.outcome(n)
                    self.produce(self.outcomes, out.customer.customer_id.encode(), msgspec.json.encode(out))
            self.producer.poll(0)
            self.send_again()
            n += 1
            self.stopping.wait(EVERY_S)

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        try:
            self.producer.produce(topic, value, key=key, on_delivery=self.delivered)
        except KafkaException as exc:  # told by a restarting broker that the topic does not exist (yet)
            if exc.args[0].code() not in (KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION):
                raise
            self.errors[exc.args[0].name()] += 1
            self.retry.append((topic, key, value))

    def send_again(self) -> None:
        again, self.retry = self.retry, []
        for topic, key, value in again:
            self.produce(topic, key, value)

    def contacts_since(self, mark: int) -> list[str]:
        with self.lock:
            return [ev.contact_id for ev in self.sent[mark:] if ev.needs_advisor and ev.contact_id]

    def finish(self) -> None:
        self.stopping.set()
        self.join(10)
        deadline = time.monotonic() + 120
        while (left := self.producer.flush(1)) or self.retry:
            assert time.monotonic() < deadline, (
                f"{left + len(self.retry)} records were never delivered to the broker ({left} in the client, "
                f"{len(self.retry)} to send again: {Counter(topic for topic, _, _ in self.retry)}); errors seen: {dict(self.errors)}"
            )
            time.sleep(0.1)
            self.send_again()
        assert not self.failed, f"the channel's deliveries failed: {self.failed[:3]}"


@pytest.fixture(scope="module")
def servers_to_stop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedBroker, EmbeddedRedis]]:
    base = tmp_path_factory.mktemp("outage-servers")
    # the broker on the collector that is not the default (CX_EMBEDDED_BROKER_GC), through a stop and a start
    broker, rds = EmbeddedBroker(base / "broker", gc="shenandoah"), EmbeddedRedis(base / "redis")
    broker.start()
    try:
        rds.start()
        yield broker, rds
    finally:
        rds.stop()
        broker.stop()


@pytest.fixture(scope="module")
def engine(servers_to_stop: tuple[EmbeddedBroker, EmbeddedRedis], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    broker, rds = servers_to_stop
    data = tmp_path_factory.mktemp("outage-engine")
    # Offers wait for the advisor (a contact is offered once, however long it takes), and a contact
    # is not held for the customer's last advisor (when that one is full it would wait 30 s).
    routing = data / "routing.toml"
    routing.write_text(
        f"[{GROUP}]\noffer_timeout_s = 36000.0\ndefault_sla_s = 36000.0\n[{GROUP}.sla_s]\nchat = 36000.0\n"
        f"[{GROUP}.sticky_wait_s]\nchat = 0.0\n"
    )
    tag = uuid.uuid4().hex[:8]
    e = start_engine(
        broker.url, rds.url, data, f"o{tag}.", f"cxoutage-{tag}", ready_s=180, CX_ROUTING_CONFIG_FILE=str(routing), CX_PARTITIONS="2",
        CX_SNAPSHOT_INTERVAL_S="2",  # the learner publishes (to Redis) every 2 s while labels come in
    )
    yield e
    stop_engine(e)


def assignments(engine: RunningEngine) -> list[Assignment]:
    dec = msgspec.json.Decoder(Assignment).decode
    return [dec(v) for v in asyncio.run(read_to_end(engine.broker, engine.topic(t.ASSIGNMENTS.name)))]


def assigned(engine: RunningEngine, contacts: list[str], at_least: int) -> bool:
    got = {a.contact_id for a in assignments(engine)}
    return len(got & set(contacts)) >= at_least


def context_table(engine: RunningEngine, app_id: str) -> dict[str, bytes]:
    """The context stage's table as its compacted changelog holds it: customer id -> context JSON."""
    changelog = f"{app_id}-customer_context-changelog"
    consumer_values: dict[str, bytes | None] = {}

    async def read() -> None:
        from aiokafka import AIOKafkaConsumer

        from cxstream.streams.admin import partitions_of

        consumer = AIOKafkaConsumer(bootstrap_servers=engine.broker, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = await partitions_of(consumer, changelog)
            ends = await consumer.end_offsets(tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while any([await consumer.position(tp) < ends[tp] for tp in tps]):
                for tp, msgs in (await consumer.getmany(timeout_ms=200)).items():
                    for m in msgs:
                        if m.offset < ends[tp] and m.key is not None:
                            consumer_values[m.key.decode()] = m.value
        finally:
            await consumer.stop()

    asyncio.run(read())
    return {k: v for k, v in consumer_values.items() if v is not None and not k.startswith("~")}


def where_are(engine: RunningEngine, contacts: list[str]) -> str:
    """For contacts not assigned: which topics hold a record naming them (a failure's first clue)."""
    missing = set(contacts) - {a.contact_id for a in assignments(engine)}
    found: dict[str, list[str]] = {c: [] for c in sorted(missing)}
    for spec in (t.INTERACTIONS, t.RESOLVE, t.CUSTOMER_EVENTS, t.ROUTING, t.ROUTING_EVENTS, t.DEAD_LETTER):
        values = asyncio.run(read_to_end(engine.broker, engine.topic(spec.name)))
        for c in found:
            n = sum(f'"{c}"'.encode() in v for v in values if v)
            if n:
                found[c].append(f"{spec.name} x{n}")
    events = [msgspec.json.decode(v) for v in asyncio.run(read_to_end(engine.broker, engine.topic(t.ROUTING_EVENTS.name))) if v]
    kinds = [(e["contact_id"], e["kind"], e.get("detail"), round(e["at"] - time.time(), 1)) for e in events if e.get("contact_id") in missing]
    per_advisor = Counter(a.advisor_id for a in assignments(engine))
    _, queue, _ = http(engine, "GET", f"/queues/{GROUP}")
    found["routing events"] = [str(k) for k in kinds[:20]]
    found["assignments per advisor"] = [str(dict(per_advisor))]
    found["queue"] = [str(queue)[:1500]]
    _, text, _ = http(engine, "GET", "/metrics")
    lag = [line for line in str(text).splitlines() if line.startswith(("cx_consumer_lag_records", "cx_stages_partitions_owned", "cx_broker_up"))]
    return f"{len(missing)} of {len(contacts)} contacts not assigned; where their records are: {found}; engine: {lag}"


def copies_differ(client: redis.Redis, table: dict[str, bytes]) -> str:
    """Which Redis copies differ from the context table, and how (for a failure's message)."""
    lines = []
    for cid, value in table.items():
        copy = client.get(context_key(cid))
        if copy == value:
            continue
        want = msgspec.json.decode(context_json(value))
        line = f"{cid}: table has {want['interactions_total']} interactions, updated {want['updated_at']}; "
        if copy is None:
            lines.append(line + "no Redis copy")
            continue
        got = msgspec.json.decode(context_json(copy))
        differing = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        lines.append(line + f"Redis has {got['interactions_total']}, updated {got['updated_at']}; fields differing: {differing}")
    return f"{len(lines)} of {len(table)} Redis copies differ from the table:\n" + "\n".join(lines)


def test_redis_then_broker_outage(servers_to_stop: tuple[EmbeddedBroker, EmbeddedRedis], engine: RunningEngine) -> None:
    broker, rds = servers_to_stop
    app_id = "cxoutage-" + engine.prefix[1:-1]
    logins = [
        (a.encode(), AdvisorEvent(
            event_id=f"login-{a}", occurred_at=time.time(), advisor_id=a, kind="login", routing_group=GROUP,
            presence="available", capacity={"chat": 50}, languages=["en"],
        ))
        for a in ADVISORS
    ]
    asyncio.run(produce(engine.broker, engine.topic(t.ADVISOR_EVENTS.name), logins))
    channel = Channel(engine.broker, engine.topic(t.INTERACTIONS.name), engine.topic(t.OUTCOMES.name))
    channel.start()
    try:
        wait_for(lambda: assigned(engine, channel.contacts_since(0), 3), timeout=60)
        wait_for(lambda: http(engine, "GET", f"/customers/{CUSTOMERS[0]}/context")[0] == 200, timeout=30)

        # -- Redis down ---------------------------------------------------------------------
        mark = len(channel.sent)
        rds.stop()
        down = time.monotonic()
        churn_version = metric(engine, LEARNER_CHURN_VERSION) or 0.0
        status, body, took = http(engine, "GET", f"/customers/{CUSTOMERS[0]}/context")
        assert status == 503 and body["error"] == "redis_unavailable", (status, body)
        assert "routing goes on" in body["detail"] and "desk actions" in body["detail"], "the 503 says what still works"
        status, body, _ = http(engine, "GET", "/healthz")
        assert status == 503 and body["redis"].startswith("unreachable"), (status, body)
        status, body, _ = http(engine, "GET", "/livez")  # the liveness probe: no reason to restart the engine
        assert status == 200 and body["engine"] == "alive", (status, body)
        # routing goes on: contacts opened after Redis went away are assigned
        wait_for(lambda: assigned(engine, channel.contacts_since(mark), 3), timeout=OUTAGE_S)
        # what needs only the broker works: a desk action
        status, body, _ = http(engine, "POST", f"/advisors/{ADVISORS[0]}/presence", {"presence": "available"})
        assert status == 202, (status, body)
        presence_accepted = 1
        # the metrics say Redis is down and how many copies wait for it
        wait_for(lambda: metric(engine, "cx_redis_up") == 0.0, timeout=OUTAGE_S)
        pending = wait_for(lambda: metric(engine, "cx_redis_pending_writes"), timeout=OUTAGE_S)
        assert pending > 0
        assert engine.proc.poll() is None
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))  # the outage lasts as long as the issue says
        rds.start()
        # the write-behind drains without a restart
        wait_for(lambda: metric(engine, "cx_redis_pending_writes") == 0.0 and metric(engine, "cx_redis_up") == 1.0, timeout=60)
        wait_for(lambda: http(engine, "GET", "/healthz")[0] == 200, timeout=30)
        assert http(engine, "GET", f"/customers/{CUSTOMERS[0]}/context")[0] == 200
        # the learner, which kept learning, publishes again (it did not crash the engine's app meanwhile)
        wait_for(lambda: (metric(engine, LEARNER_CHURN_VERSION) or 0.0) > churn_version, timeout=60)

        # -- broker down --------------------------------------------------------------------
        mark = len(channel.sent)
        broker.stop_kafka()
        down = time.monotonic()
        status, body, took = http(engine, "POST", f"/advisors/{ADVISORS[0]}/presence", {"presence": "available"})
        assert status == 503 and body["error"] == "broker_unavailable", (status, body)
        assert took < 15, f"a desk action took {took:.1f} s to fail"
        status, body, _ = http(engine, "GET", f"/customers/{CUSTOMERS[1]}/context")
        assert status == 200, "context lookups need only Redis"
        wait_for(lambda: metric(engine, "cx_broker_up") == 0.0, timeout=OUTAGE_S)
        # /healthz says so (with the next heartbeat) and stays 200: lookups still work
        wait_for(lambda: (h := http(engine, "GET", "/healthz"))[0] == 200 and h[1]["broker"].startswith("unreachable"), timeout=15)
        labels = metric(engine, LEARNER_CHURN_LABELS) or 0.0
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
        assert engine.proc.poll() is None, "the engine exited during the broker outage"
        restarted = time.time()
        broker.start_kafka()
        # everything reconnects by itself: contacts published during the outage are assigned ...
        during = channel.contacts_since(mark)
        try:
            wait_for(lambda: assigned(engine, during, len(during)), timeout=120)
        except TimeoutError:
            raise AssertionError(where_are(engine, during)) from None
        # ... the API's producer publishes again, its offers feed answers, the learner's consumer learns again
        presence_accepted += wait_for(
            lambda: http(engine, "POST", f"/advisors/{ADVISORS[0]}/presence", {"presence": "available"})[0] == 202, timeout=60
        )
        wait_for(lambda: http(engine, "GET", f"/advisors/{ADVISORS[0]}/work")[0] == 200, timeout=60)
        wait_for(lambda: (metric(engine, LEARNER_CHURN_LABELS) or 0.0) > labels, timeout=60)
        wait_for(lambda: metric(engine, "cx_broker_up") == 1.0, timeout=30)
    finally:
        channel.finish()

    # -- nothing lost, nothing counted twice ----------------------------------------------------
    expected = Counter(ev.customer.customer_id for ev in channel.sent)
    contacts = [ev.contact_id for ev in channel.sent if ev.needs_advisor]

    def counted(table: dict[str, bytes]) -> dict[str, int]:
        """Interactions per customer id the channel knows (the table is keyed by canonical ids)."""
        out: dict[str, int] = {}
        for value in table.values():
            ctx = msgspec.json.decode(context_json(value))
            for cid in ctx["identifiers"].get("customer_id", []):
                out[cid] = out.get(cid, 0) + ctx["interactions_total"]
        return out

    def settled() -> dict[str, bytes] | None:
        table = context_table(engine, app_id)
        return table if counted(table) == dict(expected) else None

    try:
        table = wait_for(settled, timeout=90, interval=1.0)
    except TimeoutError:
        raise AssertionError(f"interactions counted: {counted(context_table(engine, app_id))}\nexpected: {dict(expected)}") from None
    assert len(table) == len(CUSTOMERS), "one context per customer"
    try:
        wait_for(lambda: assigned(engine, contacts, len(contacts)), timeout=60)
    except TimeoutError:
        raise AssertionError(where_are(engine, contacts)) from None
    got = assignments(engine)
    per_contact = Counter(a.contact_id for a in {a.assignment_id: a for a in got}.values())
    assert sorted(per_contact) == sorted(contacts), "every contact that needs an advisor is assigned, and no other"
    twice = {c: n for c, n in per_contact.items() if n > 1}
    assert not twice, f"contacts assigned more than once: {twice}"

    client = redis.Redis.from_url(rds.url)
    try:
        # the table read afresh each time: contexts still change after the counts settled (no offer
        # is accepted, so every contact's SLA breach reaches its context a minute after it opened);
        # compared with the table read once, a copy that followed such a change looked stale
        def copies_equal() -> bool:
            latest = context_table(engine, app_id)
            return all(client.get(context_key(cid)) == value for cid, value in latest.items())

        try:
            wait_for(copies_equal, timeout=90, interval=1.0)
        except TimeoutError:
            raise AssertionError(copies_differ(client, context_table(engine, app_id))) from None
    finally:
        client.close()
    # a desk action refused during the outage was not published once the broker came back
    advisor_events = [msgspec.json.decode(v) for v in asyncio.run(read_to_end(engine.broker, engine.topic(t.ADVISOR_EVENTS.name)))]
    presences = [e for e in advisor_events if e["advisor_id"] == ADVISORS[0] and e["kind"] == "presence"]
    assert len(presences) == presence_accepted, f"{len(presences)} presence events published, {presence_accepted} accepted"
    # the broker's JVM ran the collector it was given and logged its pauses, the restarted one's too
    assert "Using Shenandoah" in (broker.data_dir / "kafka" / "kafka-gc.log").read_text()
    pauses = broker.gc_pauses(since=restarted)
    assert pauses and all(restarted <= end <= time.time() and 0 <= ms < 1000 for end, ms in pauses), pauses

    assert engine.proc.poll() is None
    log_lines = engine.output().splitlines()
    assert len(log_lines) < 400, f"the engine's log has {len(log_lines)} lines: reconnect loops flood it"
