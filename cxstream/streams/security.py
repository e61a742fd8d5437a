"""Transport security: the one place every Kafka and Redis client of the engine gets its connection options.

The settings (``CX_KAFKA_SECURITY_PROTOCOL``, ``CX_KAFKA_SASL_*``, ``CX_KAFKA_SSL_*``,
``CX_REDIS_USERNAME``, ``CX_REDIS_PASSWORD(_FILE)``, ``CX_REDIS_SSL_*``; docs/SECURITY.md) are
turned into each client library's options here, and nowhere else:

* :func:`kafka_client_kwargs`: aiokafka producers, consumers and admin clients (the batch
  stages, the API's publishers and live feed, erasure, topic creation, ``cxstream replay``);
* :func:`faust_broker_credentials`: the Faust app (the learner, the timers);
* :func:`librdkafka_config`: confluent-kafka (librdkafka) clients;
* :func:`redis_connection_kwargs` / :func:`redis_pool`: redis-py, and :func:`pipelined_redis`:
  the pipelined hiredis connection (the API's lookups, the engine's write-behind).

A unit test (tests/unit/test_security.py) scans the package for client constructors that do not
take their options from here.  :func:`check_kafka` and :func:`check_redis` connect once at start
and turn a refused certificate or password into a :class:`TransportError` that says which
setting to look at, instead of a client that retries forever.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from urllib.parse import urlsplit

from cxstream.streams.settings import Settings, SettingsError


class TransportError(ConnectionError):
    """A server refused the engine's connection (TLS or authentication); the message names the settings involved."""


def _ssl_context(ca: str, cert: str, key: str, check_hostname: int, prefix: str) -> ssl.SSLContext:
    """A client TLS context that verifies the server (against *ca*, else the system's trust store)."""
    try:
        context = ssl.create_default_context(cafile=ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"{prefix}_SSL_CA_FILE={ca}: not a PEM file of CA certificates ({exc})") from exc
    context.check_hostname = bool(check_hostname)
    context.verify_mode = ssl.CERT_REQUIRED
    if cert:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(
                f"{prefix}_SSL_CERT_FILE={cert} / {prefix}_SSL_KEY_FILE={key}: not a PEM certificate and its unencrypted key ({exc})"
            ) from exc
    return context


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the Kafka clients (None for PLAINTEXT and SASL_PLAINTEXT); built anew, so rotated files are read."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    return _ssl_context(
        settings.kafka_ssl_ca_file, settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file,
        settings.kafka_ssl_check_hostname, "CX_KAFKA",
    )


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of every aiokafka client (``AIOKafkaProducer(**kafka_client_kwargs(s), ...)``).

    Empty for PLAINTEXT, so a plaintext client is built exactly as before.

    >>> kafka_client_kwargs(Settings())
    {}
    >>> kw = kafka_client_kwargs(Settings(broker_url="k:9093", kafka_security_protocol="SASL_PLAINTEXT",
    ...                                   kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="cx", kafka_sasl_password="pw"))
    >>> kw["security_protocol"], kw["sasl_mechanism"], kw["sasl_plain_username"], kw["ssl_context"]
    ('SASL_PLAINTEXT', 'SCRAM-SHA-512', 'cx', None)
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {"security_protocol": protocol, "ssl_context": kafka_ssl_context(settings)}
    if protocol.startswith("SASL_"):
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_secret,
        )
    return kwargs


def faust_broker_credentials(settings: Settings) -> Any:
    """``faust.App(broker_credentials=...)``: the same protocol, mechanism, user and TLS context; None for PLAINTEXT."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    # SASLCredentials speaks SASL_SSL when it has a context, SASL_PLAINTEXT without
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username, password=settings.kafka_sasl_secret, ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


def librdkafka_config(settings: Settings) -> dict[str, Any]:
    """The same settings for a confluent-kafka (librdkafka) client's configuration dict.

    >>> librdkafka_config(Settings(broker_url="k:9093", kafka_security_protocol="SSL", kafka_ssl_check_hostname=0))
    {'security.protocol': 'SSL', 'ssl.endpoint.identification.algorithm': 'none'}
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security.protocol": protocol}
    if protocol.endswith("SSL"):
        if settings.kafka_ssl_ca_file:
            config["ssl.ca.location"] = settings.kafka_ssl_ca_file
        if settings.kafka_ssl_cert_file:
            config["ssl.certificate.location"] = settings.kafka_ssl_cert_file
            config["ssl.key.location"] = settings.kafka_ssl_key_file
        config["ssl.endpoint.identification.algorithm"] = "https" if settings.kafka_ssl_check_hostname else "none"
    if protocol.startswith("SASL_"):
        config.update({
            "sasl.mechanisms": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": settings.kafka_sasl_secret,
        })
    return config


def redis_connection_kwargs(settings: Settings, url: str | None = None) -> dict[str, Any]:
    """The keyword arguments of redis-py's ``from_url`` for *url* (default ``CX_REDIS_URL``): ACL user, password, TLS files.

    The TLS options go only with a ``rediss://`` URL (redis-py's plain connections take none).

    >>> redis_connection_kwargs(Settings())
    {}
    >>> s = Settings(redis_url="rediss://r:6380/0", redis_username="cx", redis_password="pw", redis_ssl_check_hostname=0)
    >>> sorted(redis_connection_kwargs(s).items())  # doctest: +NORMALIZE_WHITESPACE
    [('password', 'pw'), ('ssl_cert_reqs', 'required'), ('ssl_check_hostname', False), ('username', 'cx')]
    """
    url = settings.redis_url if url is None else url
    kwargs: dict[str, Any] = {}
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    secret = settings.redis_secret
    if secret:
        kwargs["password"] = secret
    if urlsplit(url).scheme == "rediss":
        kwargs.update(ssl_cert_reqs="required", ssl_check_hostname=bool(settings.redis_ssl_check_hostname))
        if settings.redis_ssl_ca_file:
            kwargs["ssl_ca_certs"] = settings.redis_ssl_ca_file
        if settings.redis_ssl_cert_file:
            kwargs.update(ssl_certfile=settings.redis_ssl_cert_file, ssl_keyfile=settings.redis_ssl_key_file)
    return kwargs


def redis_ssl_context(settings: Settings, url: str | None = None) -> ssl.SSLContext | None:
    """The TLS context of the pipelined connection for *url*: None unless it is ``rediss://``."""
    url = settings.redis_url if url is None else url
    if urlsplit(url).scheme != "rediss":
        return None
    return _ssl_context(
        settings.redis_ssl_ca_file, settings.redis_ssl_cert_file, settings.redis_ssl_key_file,
        settings.redis_ssl_check_hostname, "CX_REDIS",
    )


def redis_pool(settings: Settings, url: str | None = None, *, max_connections: int, timeout: float = 5.0, **socket: float) -> Any:
    """An asyncio redis-py client on a blocking pool of at most *max_connections* (a burst waits for a connection);
    *socket*: redis-py's socket options (``socket_timeout``, ``socket_connect_timeout``)."""
    import redis.asyncio as aioredis

    url = settings.redis_url if url is None else url
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, **redis_connection_kwargs(settings, url), **socket
    )
    return aioredis.Redis.from_pool(pool)


def pipelined_redis(settings: Settings, url: str | None = None, **options: Any) -> Any:
    """The pipelined hiredis connection (:class:`cxstream.serve.pipelined.PipelinedRedis`) with the same AUTH and TLS."""
    from cxstream.serve.pipelined import PipelinedRedis

    url = settings.redis_url if url is None else url
    return PipelinedRedis(
        url, username=settings.redis_username or None, password=settings.redis_secret or None,
        ssl=redis_ssl_context(settings, url), **options,
    )


# -- checks at start: a clear error, not a client that retries forever ------------------------------


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for entry in bootstrap.split(","):
        entry = entry.strip().removeprefix("kafka://")
        if entry:
            host, _, port = entry.rpartition(":")
            out.append((host.strip("[]") or entry, int(port) if port.isdigit() else 9092))
    return out


def _kafka_reason(exc: BaseException, settings: Settings) -> str:
    from aiokafka import errors

    if isinstance(exc, ssl.SSLCertVerificationError):
        hint = (f"CX_KAFKA_SSL_CA_FILE={settings.kafka_ssl_ca_file}" if settings.kafka_ssl_ca_file
                else "CX_KAFKA_SSL_CA_FILE is empty: the system's trust store was used")
        return f"the broker's TLS certificate was refused: {exc.verify_message} (check {hint}; CX_KAFKA_SSL_CHECK_HOSTNAME)"
    if isinstance(exc, errors.SaslAuthenticationFailed):
        return (f"SASL authentication failed for user {settings.kafka_sasl_username!r} with {settings.kafka_sasl_mechanism} "
                "(check CX_KAFKA_SASL_USERNAME, CX_KAFKA_SASL_PASSWORD(_FILE), CX_KAFKA_SASL_MECHANISM)")
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return f"the broker does not offer SASL mechanism {settings.kafka_sasl_mechanism} (CX_KAFKA_SASL_MECHANISM)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc} (CX_KAFKA_SECURITY_PROTOCOL, CX_KAFKA_SSL_CERT_FILE / _KEY_FILE for mutual TLS)"
    return f"{type(exc).__name__}: {exc}"


async def check_kafka(bootstrap: str, settings: Settings, timeout: float = 30.0) -> None:
    """Connect (TLS handshake, SASL authentication, one metadata request) to the first answering bootstrap server.

    A refused certificate or password raises :class:`TransportError` at once; an unreachable
    broker is retried until *timeout* (it may be starting).  PLAINTEXT checks nothing: the
    clients' own retries and errors are as before.
    """
    if settings.kafka_security_protocol == "PLAINTEXT":
        return
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaConnectionError
    from aiokafka.protocol.metadata import MetadataRequest

    kwargs = kafka_client_kwargs(settings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    where = f"Kafka at {bootstrap} over {settings.kafka_security_protocol}"
    last = "no bootstrap server"
    while True:
        for host, port in _hosts(bootstrap):
            try:
                conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=10000, **kwargs), 15)
            except ssl.SSLError as exc:  # refused certificate, or TLS against a plaintext listener: no retry helps
                raise TransportError(f"cannot connect to {where}: {_kafka_reason(exc, settings)}") from exc
            except (OSError, TimeoutError, KafkaConnectionError) as exc:  # not up (yet), or closed on us: retried
                last = _kafka_reason(exc, settings)
                continue
            except Exception as exc:  # a broker's answer during SASL (wrong password, unknown mechanism)
                raise TransportError(f"cannot connect to {where}: {_kafka_reason(exc, settings)}") from exc
            try:
                await asyncio.wait_for(conn.send(MetadataRequest([])), 15)
                return
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
            finally:
                conn.close()
        if loop.time() > deadline:
            raise TransportError(f"cannot connect to {where} within {timeout:.0f} s: {last}")
        await asyncio.sleep(0.5)


async def check_redis(settings: Settings, url: str | None = None, timeout: float = 30.0) -> None:
    """``PING`` *url* (default ``CX_REDIS_URL``) as the engine's clients connect; a refused certificate or AUTH raises at once."""
    import redis.asyncio as aioredis
    from redis import exceptions

    url = settings.redis_url if url is None else url
    parts = urlsplit(url)
    where = f"Redis at {parts.hostname or parts.path}:{parts.port or ''} ({parts.scheme})"
    client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10, **redis_connection_kwargs(settings, url))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            try:
                await client.ping()
                return
            except (exceptions.AuthenticationError, exceptions.AuthorizationError, exceptions.ResponseError) as exc:
                user = settings.redis_username or parts.username or "default"
                raise TransportError(
                    f"cannot connect to {where}: AUTH as user {user!r} was refused: {exc} "
                    "(check CX_REDIS_USERNAME, CX_REDIS_PASSWORD(_FILE) or the user in CX_REDIS_URL, and the user's ACL)"
                ) from exc
            except exceptions.ConnectionError as exc:
                cause = exc.__cause__ or exc.__context__
                if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    hint = settings.redis_ssl_ca_file or "(empty: the system's trust store)"
                    raise TransportError(
                        f"cannot connect to {where}: Redis's TLS certificate was refused: {exc} "
                        f"(check CX_REDIS_SSL_CA_FILE={hint}; CX_REDIS_SSL_CHECK_HOSTNAME)"
                    ) from exc
                if loop.time() > deadline:
                    raise TransportError(f"cannot connect to {where} within {timeout:.0f} s: {exc}") from exc
                await asyncio.sleep(0.5)
    finally:
        await client.aclose()
