"""Settings: one frozen object, read once from ``CX_*`` environment variables or one TOML file.

Every setting is declared here with its environment name and its meaning; nothing
else in the engine reads the environment.  ``CX_SETTINGS_FILE`` names an optional
TOML file whose keys are the field names below; environment variables win over it.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting has a value the engine cannot use; the message names the variable."""


def _setting(default: Any, help: str, *, secret: bool = False) -> Any:
    """A field with its help text; a *secret* one is left out of the settings' repr (so of any log or traceback)."""
    return field(default=default, metadata={"help": help}, repr=not secret)


@dataclass(frozen=True)
class Settings:
    """Engine configuration.  The environment name of field ``x`` is ``CX_X``."""

    broker_url: str = _setting("", "Kafka bootstrap servers, e.g. 'kafka:9092'. Empty: start the embedded broker.")
    redis_url: str = _setting("", "Redis URL, e.g. 'redis://redis:6379/0'. Empty: start the embedded Redis.")
    data_dir: str = _setting(
        "var", "Folder for local state, kept across restarts: the embedded Kafka's and ZooKeeper's logs, the embedded "
        "Redis's append-only file, endpoints.json. 'make clean' deletes it (start from nothing)."
    )
    embedded_broker_heap_mb: int = _setting(512, "Java heap of the embedded Kafka broker, MB (its ZooKeeper gets 128).")
    app_id: str = _setting("cxstream", "Kafka consumer group / Faust app id.")
    topic_prefix: str = _setting("", "Prefix of every topic name (several engines or test runs on one cluster).")
    partitions: int = _setting(4, "Partitions of every customer-keyed topic (all the same).")
    replication: int = _setting(1, "Replication factor of created topics.")
    topic_retention_hours: float = _setting(
        168.0, "Event topics the engine creates keep records this long, hours (changelogs are compacted instead)."
    )
    topic_retention_mb: int = _setting(
        1024, "...and at most this much per partition, MB (-1: no size limit). Applied when a topic is created."
    )
    http_host: str = _setting("127.0.0.1", "Address the HTTP API listens on.")
    http_port: int = _setting(8080, "Port of the HTTP API; 0 picks a free port.")
    http_workers: int = _setting(1, "HTTP API processes 'cxstream run' starts; they share the port (SO_REUSEPORT).")
    http_redis_connections: int = _setting(32, "Most Redis connections per HTTP API process (one pool each).")
    http_pipelined_lookups: int = _setting(
        1, "1: context lookups on one pipelined hiredis connection per API process; 0: through the redis-py pool."
    )
    max_event_bytes: int = _setting(65536, "Larger inputs go to the dead-letter topic as too_large.")
    context_max_interactions: int = _setting(20, "Interactions kept per customer context (newest first).")
    dedupe_ids_per_customer: int = _setting(64, "Event ids remembered per customer to drop duplicates.")
    redis_ttl_s: int = _setting(7 * 24 * 3600, "TTL of the context copies in Redis, seconds.")
    redis_flush_ms: int = _setting(100, "Write-behind interval of context copies to Redis, milliseconds.")
    redis_pipelined_writes: int = _setting(
        1, "1: the write-behind to Redis goes on one pipelined hiredis connection (one write per flush); "
        "0: through redis-py pipelines. TLS (rediss://) always uses redis-py."
    )
    redis_max_pending: int = _setting(
        500_000, "Most copies the write-behind holds while Redis is unreachable; past it the writes are let go "
        "and rewritten from the tables once Redis is back (deletes are always kept)."
    )
    broker_outage_max_s: float = _setting(
        300.0, "How long the stages' outputs wait for an unreachable broker; past it the engine exits (code 1) "
        "for its supervisor to restart it (inputs are not committed past what was delivered: nothing is lost)."
    )
    tick_interval_s: float = _setting(1.0, "How often the router clock ticks (SLA and offer timers), seconds.")
    producer_linger_ms: int = _setting(
        1, "How long the hot path's producer waits to fill a record batch, ms (Kafka 4.0's client default is 5)."
    )
    local_delivery: int = _setting(
        1, "1: a record a stage sends to identity or context on a partition this worker owns is also handed to it "
        "in the same batch (still produced to its topic; skipped when fetched back); 0: every hop goes through the broker."
    )
    local_echo_linger_ms: int = _setting(
        50, "How long the records a stage handed over locally may wait before they are produced to their topics "
        "(already processed, so nothing waits for them; fewer, larger record batches for the broker to store and "
        "serve), ms; 0: produced with their batch."
    )
    fetch_wait_ms: int = _setting(
        10, "Longest a stage's fetch waits for new records, ms. Kafka answers at once when records arrive, but the "
        "client keeps one fetch in flight per broker, and a partition left out of it (its records were being handed "
        "over) waits for it to return: at 400 records/s two hops had p99 9 ms with 10, 23 ms with 500 (docs/PERFORMANCE.md)."
    )
    faust_fetch_wait_ms: int = _setting(
        200, "The same for the Faust consumer (the learner's labels, the demo desktops): not on the hot path, ms."
    )
    processing_guarantee: str = _setting(
        "at_least_once", "'at_least_once' (idempotent producers, deduplicating consumers), or 'exactly_once': each batch's "
        "outputs, table changes and input offsets in one Kafka transaction (one worker per app id; docs/ARCHITECTURE.md)."
    )
    rebalance_timeout_s: float = _setting(6.0, "Consumer group session and rebalance timeout, seconds.")
    routing_config_file: str = _setting("", "TOML/JSON routing configuration per routing group (see docs/ROUTING.md).")
    outreach_churn_threshold: float = _setting(0.6, "Churn risk at which the churn outreach trigger fires.")
    outreach_quiet_start: str = _setting("21:00", "Start of quiet hours (customer's local time, HH:MM).")
    outreach_quiet_end: str = _setting("08:00", "End of quiet hours; equal to the start: no quiet hours.")
    outreach_cap_days: float = _setting(7.0, "At most one outreach per customer in this many days.")
    outreach_holdout: float = _setting(0.0, "Share of customers kept as an outreach control group (measures lift).")
    outreach_config_file: str = _setting("", "TOML/JSON outreach configuration per routing group (see docs/OUTREACH.md).")
    model_refresh_s: float = _setting(1.0, "How often each worker checks Redis for a newer model snapshot, seconds.")
    snapshot_every: int = _setting(200, "The learner publishes model snapshots after this many labels...")
    snapshot_interval_s: float = _setting(10.0, "...or this often when anything was learned, seconds.")
    table_store: str = _setting(
        "memory://", "Passed to faust.App(store=...); no effect today: the stages' tables are restored from changelogs."
    )
    api_keys: str = _setting(
        "",
        "Comma-separated API keys of the HTTP API: 'KEY' opens every route, 'SCOPES:KEY' only those of its scopes "
        "(read, advisor, admin, joined by '+'). Empty, with no CX_API_KEYS_FILE: one key is generated into "
        "DATA_DIR/api-key (mode 600); the check is never off.",
        secret=True,
    )
    api_keys_file: str = _setting("", "A file of API key entries, one per line ('#' comments), added to CX_API_KEYS.")
    advisor_key_secret: str = _setting(
        "", "Secret from which each advisor's desk key is derived (HMAC); empty: derived from the API keys.", secret=True
    )
    shared_data_dir: str = _setting("../shared/data", "Where the public datasets are read from (benchmarks, evals).")
    log_level: str = _setting("info", "Log level: debug, info, warning, error.")

    def __post_init__(self) -> None:
        if self.processing_guarantee not in ("at_least_once", "exactly_once"):
            raise SettingsError(
                f"CX_PROCESSING_GUARANTEE={self.processing_guarantee!r}: use 'at_least_once' or 'exactly_once'"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``CX_SETTINGS_FILE`` (if set) and then ``CX_*`` variables.

        >>> Settings.from_env({"CX_PARTITIONS": "8"}).partitions
        8
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        file = env.get("CX_SETTINGS_FILE")
        if file:
            try:
                values.update(tomllib.loads(Path(file).read_text()))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise SettingsError(f"CX_SETTINGS_FILE={file}: {exc}") from exc
        for f in dataclasses.fields(cls):
            name = f"CX_{f.name.upper()}"
            if name in env:
                values[f.name] = env[name]
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SettingsError(f"unknown settings in CX_SETTINGS_FILE: {sorted(unknown)}")
        return cls(**{k: _coerce(cls, k, v) for k, v in values.items()})

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url

    @property
    def api_key_set(self) -> frozenset[str]:
        """The API key entries of ``CX_API_KEYS`` and ``CX_API_KEYS_FILE`` (a missing or empty file is a SettingsError)."""
        entries = [k.strip() for k in self.api_keys.split(",")]
        if self.api_keys_file:
            try:
                lines = Path(self.api_keys_file).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise SettingsError(f"CX_API_KEYS_FILE={self.api_keys_file}: {exc.strerror or exc}") from exc
            in_file = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
            if not in_file:
                raise SettingsError(f"CX_API_KEYS_FILE={self.api_keys_file}: no key in the file")
            entries += in_file
        return frozenset(k for k in entries if k)

    def path(self, *parts: str) -> Path:
        """A path under ``data_dir``, created if missing."""
        p = Path(self.data_dir, *parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    @staticmethod
    def documented() -> list[tuple[str, str, str]]:
        """(environment name, default, meaning) for every setting, for docs and ``--help``."""
        return [
            (f"CX_{f.name.upper()}", repr(f.default), f.metadata["help"]) for f in dataclasses.fields(Settings)
        ]


def _coerce(cls: type[Settings], name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in dataclasses.fields(cls)}[name]
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"CX_{name.upper()}={value!r} is not a valid {kind}") from exc
