"""Transport security settings: validated with errors that name the variable, secrets kept out of reprs, and every
Kafka and Redis client of the package built with the options of cxstream/streams/security.py (a source scan).

The servers' side (a SASL_SSL Kafka, a TLS Redis with an ACL user) is tests/integration/test_transport_security.py.
"""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

import pytest

from cxstream.cli import main
from cxstream.serve.pipelined import PipelinedRedis
from cxstream.streams.security import (
    faust_broker_credentials,
    kafka_client_kwargs,
    librdkafka_config,
    pipelined_redis,
    redis_connection_kwargs,
)
from cxstream.streams.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
SASL = {"CX_BROKER_URL": "kafka:9093", "CX_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "CX_KAFKA_SASL_USERNAME": "cx"}


@pytest.fixture()
def pem(tmp_path: Path) -> Path:
    """A readable file (its content does not matter to the settings' checks)."""
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CX_BROKER_URL": "k:1", "CX_KAFKA_SECURITY_PROTOCOL": "TLS"}, "CX_KAFKA_SECURITY_PROTOCOL='TLS': use one of PLAINTEXT"),
        ({**SASL, "CX_KAFKA_SASL_PASSWORD": "pw", "CX_KAFKA_SASL_MECHANISM": "GSSAPI"}, "CX_KAFKA_SASL_MECHANISM='GSSAPI'"),
        ({"CX_KAFKA_SECURITY_PROTOCOL": "SSL"}, "CX_KAFKA_SECURITY_PROTOCOL=SSL needs CX_BROKER_URL"),
        ({**SASL, "CX_KAFKA_SASL_USERNAME": "", "CX_KAFKA_SASL_PASSWORD": "pw"}, "needs CX_KAFKA_SASL_USERNAME"),
        (SASL, "CX_KAFKA_SASL_PASSWORD or CX_KAFKA_SASL_PASSWORD_FILE is needed"),
        ({**SASL, "CX_KAFKA_SASL_PASSWORD": "pw", "CX_KAFKA_SASL_PASSWORD_FILE": "/etc/hostname"}, "both set"),
        ({**SASL, "CX_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"}, "CX_KAFKA_SASL_PASSWORD_FILE=/nonexistent/pw: the file does not exist"),
        ({"CX_BROKER_URL": "k:1", "CX_KAFKA_SASL_USERNAME": "cx"}, "CX_KAFKA_SASL_USERNAME is set but CX_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"CX_BROKER_URL": "k:1", "CX_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CX_KAFKA_SASL_USERNAME": "u",
          "CX_KAFKA_SASL_PASSWORD": "p", "CX_KAFKA_SSL_CA_FILE": "/etc/hostname"}, "CX_KAFKA_SSL_CA_FILE is set but .* uses no TLS"),
        ({"CX_BROKER_URL": "k:1", "CX_KAFKA_SECURITY_PROTOCOL": "SSL", "CX_KAFKA_SSL_CERT_FILE": "/etc/hostname"},
         "CX_KAFKA_SSL_CERT_FILE needs CX_KAFKA_SSL_KEY_FILE"),
        ({"CX_REDIS_PASSWORD": "pw"}, "CX_REDIS_PASSWORD is set but CX_REDIS_URL is not"),
        ({"CX_REDIS_URL": "http://r:1"}, "CX_REDIS_URL: scheme 'http'"),
        ({"CX_REDIS_URL": "redis://u:pw@r:1/0", "CX_REDIS_PASSWORD": "pw2"}, "CX_REDIS_URL holds a password too"),
        ({"CX_REDIS_URL": "redis://u@r:1/0", "CX_REDIS_USERNAME": "v"}, "CX_REDIS_URL names a user too"),
        ({"CX_REDIS_URL": "rediss://r:1/0", "CX_REDIS_USERNAME": "cx"}, "CX_REDIS_USERNAME needs a password"),
        ({"CX_REDIS_URL": "redis://r:1/0", "CX_REDIS_SSL_CA_FILE": "/etc/hostname"}, "CX_REDIS_SSL_CA_FILE is set but CX_REDIS_URL is not a rediss://"),
        ({"CX_REDIS_URL": "rediss://r:1/0", "CX_REDIS_SSL_KEY_FILE": "/etc/hostname"}, "CX_REDIS_SSL_KEY_FILE needs CX_REDIS_SSL_CERT_FILE"),
        ({"CX_REDIS_URL": "rediss://r:1/0", "CX_REDIS_SSL_CA_FILE": "/nonexistent/ca.pem"}, "CX_REDIS_SSL_CA_FILE=/nonexistent/ca.pem"),
    ],
)
def test_bad_transport_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_passwords_come_from_files_and_never_reach_a_repr(tmp_path: Path) -> None:
    kafka, redis = tmp_path / "kafka-pw", tmp_path / "redis-pw"
    kafka.write_text("k-secret-1\n")
    redis.write_text("r-secret-2\r\n")
    s = Settings.from_env({**SASL, "CX_KAFKA_SASL_PASSWORD_FILE": str(kafka), "CX_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                           "CX_REDIS_URL": "rediss://r:6380/0", "CX_REDIS_USERNAME": "cx", "CX_REDIS_PASSWORD_FILE": str(redis)})
    assert (s.kafka_sasl_secret, s.redis_secret) == ("k-secret-1", "r-secret-2")
    with_value = s.replace(kafka_sasl_password_file="", kafka_sasl_password="k-secret-3", redis_password_file="", redis_password="r-4")
    for text in (repr(s), repr(with_value), repr(faust_broker_credentials(s))):
        assert not any(secret in text for secret in ("k-secret", "r-secret", "r-4")), text
    kafka.write_text("rotated\n")  # read at each use: a rotated secret is picked up by the next client
    assert kafka_client_kwargs(s)["sasl_plain_password"] == "rotated"
    kafka.write_text("")
    with pytest.raises(SettingsError, match=f"CX_KAFKA_SASL_PASSWORD_FILE={kafka}: the file is empty"):
        kafka_client_kwargs(s)


def test_one_set_of_settings_gives_every_client_library_the_same_connection(tmp_path: Path) -> None:
    s = Settings.from_env({**SASL, "CX_KAFKA_SASL_PASSWORD": "pw", "CX_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                           "CX_KAFKA_SSL_CHECK_HOSTNAME": "0"})
    kw = kafka_client_kwargs(s)
    assert (kw["security_protocol"], kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]) == (
        "SASL_SSL", "SCRAM-SHA-512", "cx", "pw")
    context = kw["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname
    creds = faust_broker_credentials(s)
    assert (creds.protocol.value, creds.mechanism.value, creds.username, creds.password) == ("SASL_SSL", "SCRAM-SHA-512", "cx", "pw")
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert librdkafka_config(s) == {"security.protocol": "SASL_SSL", "ssl.endpoint.identification.algorithm": "none",
                                    "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "cx", "sasl.password": "pw"}
    sasl_plaintext = s.replace(kafka_security_protocol="SASL_PLAINTEXT")
    assert faust_broker_credentials(sasl_plaintext).protocol.value == "SASL_PLAINTEXT"
    assert kafka_client_kwargs(sasl_plaintext)["ssl_context"] is None
    assert faust_broker_credentials(Settings()) is None and kafka_client_kwargs(Settings()) == {}


def test_a_certificate_file_that_is_not_one_is_a_settings_error(pem: Path) -> None:
    s = Settings.from_env({"CX_BROKER_URL": "k:1", "CX_KAFKA_SECURITY_PROTOCOL": "SSL", "CX_KAFKA_SSL_CA_FILE": str(pem)})
    with pytest.raises(SettingsError, match=f"CX_KAFKA_SSL_CA_FILE={pem}: not a PEM file"):
        kafka_client_kwargs(s)


def test_redis_tls_options_go_only_with_a_rediss_url_and_the_pipelined_client_takes_them(pem: Path) -> None:
    s = Settings(redis_url="rediss://cache:6380/2", redis_username="cx", redis_password="pw", redis_ssl_ca_file=str(pem),
                 redis_ssl_cert_file=str(pem), redis_ssl_key_file=str(pem))
    kw = redis_connection_kwargs(s)
    assert kw["ssl_ca_certs"] == kw["ssl_certfile"] == kw["ssl_keyfile"] == str(pem)
    assert (kw["username"], kw["password"], kw["ssl_check_hostname"], kw["ssl_cert_reqs"]) == ("cx", "pw", True, "required")
    assert redis_connection_kwargs(s, "redis://127.0.0.1:6379/0") == {"username": "cx", "password": "pw"}
    plain = pipelined_redis(Settings(redis_url="redis://cache:6379/0", redis_username="cx", redis_password="pw"))
    assert (plain._username, plain._password, plain._ssl) == ("cx", "pw", None)
    with pytest.raises(ValueError, match="needs a TLS context"):
        PipelinedRedis("rediss://cache:6380/0")
    assert PipelinedRedis.supports("rediss://cache:6380/0")


def test_cxstream_settings_describes_every_transport_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    for name in ("PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD", "SASL_PASSWORD_FILE", "SSL_CA_FILE",
                 "SSL_CERT_FILE", "SSL_KEY_FILE", "SSL_CHECK_HOSTNAME"):
        assert f"CX_KAFKA_{name if name != 'PROTOCOL' else 'SECURITY_PROTOCOL'}" in out
    for name in ("USERNAME", "PASSWORD", "PASSWORD_FILE", "SSL_CA_FILE", "SSL_CERT_FILE", "SSL_KEY_FILE", "SSL_CHECK_HOSTNAME"):
        assert f"CX_REDIS_{name}" in out
    assert "TLS uses redis-py" not in out and "always uses redis-py" not in out  # the pipelined path speaks TLS now


# -- no client bypasses cxstream/streams/security.py ---------------------------------------------------------------

#: Constructors of Kafka clients and the ``**`` builder each must take its options from.
KAFKA_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
REDIS_CLIENTS = {"Redis", "StrictRedis", "from_url", "ConnectionPool", "BlockingConnectionPool", "SSLConnection", "Connection"}
#: Files that make clients for servers they start themselves (plaintext, loopback), never for the engine's configured ones.
OWN_SERVERS = {
    "cxstream/streams/embedded.py": "the readiness check of a server it starts, with the client config its owner gives",
    "cxstream/bench/loadgen.py": "a benchmark on the embedded broker and Redis it starts itself",
    "cxstream/bench/context_bench.py": "a benchmark on the embedded broker and Redis it starts itself",
    "cxstream/bench/chaos.py": "the chaos harness (make chaos) on the embedded broker and Redis it starts itself",
}


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _spreads(call: ast.Call, builder: str) -> bool:
    return any(k.arg is None and isinstance(k.value, ast.Call) and _name(k.value.func) == builder for k in call.keywords)


def bypasses(source: str) -> list[str]:
    """The client constructions in *source* that do not take their options from cxstream.streams.security.

    >>> bypasses("p = AIOKafkaProducer(bootstrap_servers=b)\\nq = AIOKafkaProducer(bootstrap_servers=b, **kafka_client_kwargs(s))")
    ['line 1: AIOKafkaProducer without **kafka_client_kwargs(settings)']
    >>> bypasses("r = aioredis.from_url(u)\\napp = faust.App('x', broker=b)\\nc = PipelinedRedis(u)")  # doctest: +NORMALIZE_WHITESPACE
    ['line 1: from_url without **redis_connection_kwargs(settings)', 'line 2: faust.App without broker_credentials=faust_broker_credentials(settings)',
     'line 3: PipelinedRedis: use cxstream.streams.security.pipelined_redis(settings)']
    >>> bypasses("from redis import Redis\\nr = Redis(host='h')\\nclass ConnectionPool: ...\\np = ConnectionPool(u)")
    ['line 2: Redis without **redis_connection_kwargs(settings)']
    """
    found = []
    tree = ast.parse(source)
    # a bare name is redis-py's only if imported from it (cxstream.bench.lookups has an HTTP ConnectionPool of its own)
    from_redis = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("redis")
                  for a in n.names}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        redis_call = name in REDIS_CLIENTS and (isinstance(node.func, ast.Attribute) or name in from_redis)
        if name in KAFKA_CLIENTS and not _spreads(node, "kafka_client_kwargs"):
            found.append(f"line {node.lineno}: {name} without **kafka_client_kwargs(settings)")
        elif redis_call and not _spreads(node, "redis_connection_kwargs"):
            found.append(f"line {node.lineno}: {name} without **redis_connection_kwargs(settings)")
        elif name == "App" and not any(
            k.arg == "broker_credentials" and isinstance(k.value, ast.Call) and _name(k.value.func) == "faust_broker_credentials"
            for k in node.keywords
        ):
            found.append(f"line {node.lineno}: faust.App without broker_credentials=faust_broker_credentials(settings)")
        elif name in {"AdminClient", "Producer", "Consumer"} and isinstance(node.func, ast.Name | ast.Attribute) and node.args:
            config = node.args[0]
            if not (isinstance(config, ast.Dict) and any(k is None and isinstance(v, ast.Call) and _name(v.func) == "librdkafka_config"
                                                         for k, v in zip(config.keys, config.values, strict=True))):
                found.append(f"line {node.lineno}: confluent {name} without **librdkafka_config(settings)")
        elif name == "PipelinedRedis":
            found.append(f"line {node.lineno}: PipelinedRedis: use cxstream.streams.security.pipelined_redis(settings)")
    return found


def test_every_kafka_and_redis_client_of_the_package_takes_the_transport_settings() -> None:
    exempt = {"cxstream/streams/security.py", "cxstream/serve/pipelined.py", *OWN_SERVERS}
    files = sorted(p for p in (ROOT / "cxstream").rglob("*.py"))
    assert len(files) > 50
    found = {}
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel not in exempt and (problems := bypasses(path.read_text())):
            found[rel] = problems
    assert found == {}, "build these clients with cxstream/streams/security.py (docs/SECURITY.md)"


def test_the_exemptions_are_still_needed() -> None:
    """Each exempt file still makes its own clients (else drop it from the list, so it is scanned again)."""
    for rel in OWN_SERVERS:
        assert bypasses((ROOT / rel).read_text()), f"{rel} builds no client of its own any more: scan it"


def test_the_scan_sees_the_clients_the_engine_really_builds() -> None:
    """The scan is not vacuous: the engine's own client modules are found by it, with the builder they use."""
    for rel, builder in [("cxstream/streams/batch.py", "kafka_client_kwargs"), ("cxstream/serve/feed.py", "kafka_client_kwargs"),
                         ("cxstream/replay/publish.py", "kafka_client_kwargs"), ("cxstream/streams/admin.py", "kafka_client_kwargs"),
                         ("cxstream/streams/security.py", "redis_connection_kwargs")]:
        tree = ast.parse((ROOT / rel).read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _name(n.func) in KAFKA_CLIENTS | REDIS_CLIENTS]
        assert calls and all(_spreads(c, builder) for c in calls if _name(c.func) != "from_pool"), rel
