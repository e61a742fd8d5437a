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
from urllib.parse import urlsplit

from cxstream.streams.cpuslice import DEFAULT_LATENCY_SLICE_US

#: ``CX_EMBEDDED_BROKER_GC``'s values (:data:`cxstream.streams.embedded.BROKER_GCS` has their JVM options)
EMBEDDED_BROKER_GCS = ("g1", "shenandoah")
IDENTITY_FAST_PATHS = ("auto", "1", "0")  # CX_IDENTITY_FAST_PATH


class SettingsError(ValueError):
    """A setting has a value the engine cannot use; the message names the variable."""


def _setting(default: Any, help: str, *, secret: bool = False) -> Any:
    """A field with its help text; a *secret* one is left out of the settings' repr (so of any log or traceback)."""
    return field(default=default, metadata={"help": help}, repr=not secret)


@dataclass(frozen=True)
class Settings:
    """Engine configuration.  The environment name of field ``x`` is ``CX_X``."""

    broker_url: str = _setting("", "Kafka bootstrap servers, e.g. 'kafka:9092'. Empty: start the embedded broker.")
    redis_url: str = _setting(
        "", "Redis URL, e.g. 'redis://redis:6379/0', or 'rediss://redis:6380/0' for TLS (see CX_REDIS_SSL_*). "
        "Empty: start the embedded Redis."
    )
    data_dir: str = _setting(
        "var", "Folder for local state, kept across restarts: the embedded Kafka's and ZooKeeper's logs, the embedded "
        "Redis's append-only file, endpoints.json. 'make clean' deletes it (start from nothing)."
    )
    embedded_broker_heap_mb: int = _setting(512, "Java heap of the embedded Kafka broker, MB (its ZooKeeper gets 128).")
    embedded_broker_gc: str = _setting(
        "g1", "Garbage collector of the embedded Kafka broker's JVM: 'g1' (Kafka's own default: young collections stop "
        "it 10-20 ms every few seconds under load) or 'shenandoah' (1-5 ms a cycle, for 2-3 points more of a core; "
        "no lower e2e p99 measured, docs/PERFORMANCE.md). Its pauses are logged to broker/kafka/kafka-gc.log under CX_DATA_DIR."
    )
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
    http_lookup_front: int = _setting(
        1, "1: context lookups answered by the API's lookup front without aiohttp (cxstream.serve.front); 0: all by aiohttp."
    )
    lookup_cache_mb: float = _setting(
        64.0, "Each HTTP API process caches the contexts it looked up, up to this many MB, and answers a repeated "
        "lookup without Redis until Redis reports a change of the context (client-side caching: "
        "cxstream.serve.lookupcache). 0: every lookup goes to Redis."
    )
    lookup_cache_max_age_s: float = _setting(
        60.0, "A cached context older than this is not served (the bound on staleness, were an invalidation ever lost)."
    )
    latency_slice_us: int = _setting(
        DEFAULT_LATENCY_SLICE_US, "CPU time slice, microseconds, that the HTTP API processes and the embedded Redis ask Linux for "
        "(sched_setattr, Linux 6.12 or later): woken by a lookup they preempt a busy stream worker at once instead of "
        "waiting out its slice. 0: the kernel's default. Their share of the CPU is unchanged (cxstream.streams.cpuslice)."
    )
    max_event_bytes: int = _setting(65536, "Larger inputs go to the dead-letter topic as too_large.")
    max_future_skew_s: float = _setting(
        3600.0, "Inputs whose occurred_at is more than this many seconds after the engine's clock go to the "
        "dead-letter topic as future_dated (a producer clock or unit mistake); -1: no check."
    )
    dead_letter_max_raw_bytes: int = _setting(
        65536, "A dead letter keeps at most this many bytes of the payload (raw_truncated, raw_bytes say so); "
        "the whole payload stays at its coordinates in the source topic."
    )
    context_max_interactions: int = _setting(20, "Interactions kept per customer context (newest first).")
    dedupe_ids_per_customer: int = _setting(64, "Event ids remembered per customer to drop duplicates.")
    redis_ttl_s: int = _setting(7 * 24 * 3600, "TTL of the context copies in Redis, seconds.")
    redis_flush_ms: int = _setting(100, "Write-behind interval of context copies to Redis, milliseconds.")
    redis_pipelined_writes: int = _setting(
        1, "1: the write-behind to Redis goes on one pipelined hiredis connection (one write per flush); "
        "0: through redis-py pipelines. Both speak TLS (rediss://) and AUTH with the settings below."
    )
    # -- transport security (docs/SECURITY.md); every client takes them from cxstream/streams/security.py --
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", "How every Kafka client connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS). "
        "Anything but PLAINTEXT needs CX_BROKER_URL (the embedded broker listens in plaintext on loopback only)."
    )
    kafka_sasl_mechanism: str = _setting("PLAIN", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* protocols).")
    kafka_sasl_username: str = _setting("", "SASL user name (required by the SASL_* protocols).")
    kafka_sasl_password: str = _setting("", "SASL password; or give CX_KAFKA_SASL_PASSWORD_FILE (not both).", secret=True)
    kafka_sasl_password_file: str = _setting(
        "", "A file holding the SASL password (a mounted Kubernetes/compose secret; one trailing newline is dropped)."
    )
    kafka_ssl_ca_file: str = _setting(
        "", "PEM file of the CA(s) that sign the brokers' certificates (SSL, SASL_SSL); empty: the system's trust store."
    )
    kafka_ssl_cert_file: str = _setting("", "PEM client certificate (chain) for mutual TLS to Kafka; with CX_KAFKA_SSL_KEY_FILE.")
    kafka_ssl_key_file: str = _setting("", "PEM private key (unencrypted) of CX_KAFKA_SSL_CERT_FILE.")
    kafka_ssl_check_hostname: int = _setting(
        1, "1: a broker's certificate must name the host the client connects to; 0: any certificate the CA signed."
    )
    redis_username: str = _setting(
        "", "Redis ACL user (AUTH user password); or in CX_REDIS_URL (redis[s]://user:password@host...), not both."
    )
    redis_password: str = _setting("", "Redis password (of the ACL user, or requirepass); or CX_REDIS_PASSWORD_FILE.", secret=True)
    redis_password_file: str = _setting("", "A file holding the Redis password (a mounted secret; one trailing newline is dropped).")
    redis_ssl_ca_file: str = _setting(
        "", "PEM file of the CA(s) that sign Redis's certificate (needs a rediss:// URL); empty: the system's trust store."
    )
    redis_ssl_cert_file: str = _setting("", "PEM client certificate for mutual TLS to Redis (tls-auth-clients); with the key file.")
    redis_ssl_key_file: str = _setting("", "PEM private key (unencrypted) of CX_REDIS_SSL_CERT_FILE.")
    redis_ssl_check_hostname: int = _setting(1, "1: Redis's certificate must name the host in CX_REDIS_URL; 0: any the CA signed.")
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
        0, "How long the hot path's producer waits to fill a record batch, ms. A batch's outputs are sent together "
        "anyway (they are all added before the producer's task runs, and it keeps one request in flight): 0 took "
        "~1 ms off each hop at 50 records/s for the same drain rate (docs/PERFORMANCE.md; Kafka 4.0's client default is 5)."
    )
    local_delivery: int = _setting(
        1, "1: a record a stage sends to context (or, while this worker is the only one, the router) on a partition "
        "this worker owns is also handed to it in the same batch (still produced to its topic; skipped when fetched "
        "back); 0: every hop goes through the broker."
    )
    learner_process: int = _setting(
        1, "1: 'cxstream run' runs the learner (the models' single writer: every label learned, snapshots published) "
        "in a child process of its own ('cxstream learn'), off the stream worker's event loop and GIL, and restarts "
        "it if it dies; 0: in the stream worker's process."
    )
    learner_nice: int = _setting(
        0, "The learner's process's CPU niceness, 0-19 (nice(1)): above 0 it yields the core to the stream worker "
        "when both want it (its publications are bursts of compression), and learns in the gaps."
    )
    identity_fast_path: str = _setting(
        "auto", "The identity fast path (docs/IDENTITY.md, \"Past one core\"): ingest sends a customer event whose "
        "identifiers all already belong to one customer (in its replica of the identity table) straight to that "
        "customer's context, past the identity stage's one partition; everything else, and any event an earlier one "
        "of the same customer is still ahead of on the identity stage's road, goes through the identity stage. "
        "'auto': only while this worker is its group's only one, which then hands those events to its context stage "
        "itself (a shorter road: one broker hop fewer); with several workers every event goes through the identity "
        "stage, and it is off where it cannot run (another stage client, guarantee or runtime). '1': on every worker, "
        "the road past one core; the context stages of the whole group then read their input from the log while "
        "there are several workers (each worker tells the group its mode when it joins); needs "
        "aiokafka, at_least_once and the batch runtime. '0': every customer event goes through the identity stage. "
        "Either way the replica costs ~0.5 KB of memory per customer in each worker."
    )
    router_save_interval_ms: int = _setting(
        200, "While batches keep coming, a routing group's whole state (its advisors with what the router learned "
        "of them: ~95 KB of JSON for 200 advisors, a quarter of it compressed) is saved to its changelog at most this "
        "often, ms, and at once when the engine is idle; the router's input offsets are committed only as far as a "
        "save covers, so a crash replays at most this much routing input. 0: after every batch, as under exactly once."
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
    fetch_wait_busy_ms: int = _setting(
        2, "The same wait while the worker's CPU share is above CX_FETCH_PACE_FROM, ms: under load a partition whose "
        "records were being handed out waits for the fetch in flight to return, and a short wait brings it back "
        "sooner (1,129 records/s, medians of six runs: on-arrival p99 104 against 111 ms); idle, 10 ms saves empty "
        "fetches. 0: always "
        "CX_FETCH_WAIT_MS (aiokafka stages only; docs/PERFORMANCE.md)."
    )
    fetch_min_bytes: int = _setting(
        1, "The bytes a stage's fetch waits for (up to CX_FETCH_WAIT_MS) before the broker answers. 1: at once when "
        "any record arrives, which with librdkafka (CX_STAGE_CLIENT) means a fetch request per arrival under load."
    )
    fetch_sessions: int = _setting(
        1, "1: the stages' fetches are incremental fetch sessions (KIP-227): each names only the partitions whose "
        "offset changed, and the broker answers only for partitions with news, instead of all of them every round "
        "(cxstream/streams/fetchsession.py). 0: aiokafka's full fetches (aiokafka stages only; docs/PERFORMANCE.md)."
    )
    early_send_ms: float = _setting(
        0.0, "When a stage has buffered a record that another stage of this worker reads back through the broker "
        "(ingest's to cx.resolve.v1) and the stages after it have at least this much work left in the batch (their "
        "recent cost per record times the records they have), the batch's outputs so far are sent at once, so the "
        "next batch can hold that record: the hop can cost one loop round instead of two "
        "(cxstream/streams/earlysend.py). Measured: lower latency for a worker past its limit (on-arrival p99 "
        "medians 151 against 216 ms at 500/s with 1 ms), higher below it (84 against 56 ms at 300/s), so 0 (off) by "
        "default (docs/PERFORMANCE.md)."
    )
    fetch_pace_max_ms: int = _setting(
        0, "While the worker is busy, the broker may hold a stage's fetch up to this long for 16 KB of records: fewer, "
        "fuller loop rounds when rounds cost the most. The wait grows with the worker's CPU share, from 0 at "
        "CX_FETCH_PACE_FROM to this at CX_FETCH_PACE_FULL, ms; 0: off (aiokafka stages only; docs/PERFORMANCE.md)."
    )
    fetch_pace_from: float = _setting(
        0.5, "The worker's CPU share (of one core) above which it counts as busy: its fetch waits CX_FETCH_WAIT_BUSY_MS, "
        "or is held (CX_FETCH_PACE_MAX_MS)."
    )
    fetch_pace_full: float = _setting(0.9, "The CPU share at which the fetch may be held the longest (CX_FETCH_PACE_MAX_MS).")
    faust_fetch_wait_ms: int = _setting(
        200, "The same for the Faust consumer (the learner's labels, the demo desktops): not on the hot path, ms."
    )
    processing_guarantee: str = _setting(
        "at_least_once", "'at_least_once' (idempotent producers, deduplicating consumers), or 'exactly_once': each batch's "
        "outputs, table changes and input offsets in one Kafka transaction (one worker per app id; docs/ARCHITECTURE.md)."
    )
    stage_runtime: str = _setting(
        "batch", "'batch': the hot path's stages on the batch runtime (cxstream/streams/batch.py). 'faust': the same "
        "stages as plain Faust agents, one event at a time (cxstream/streams/faust_stages.py): the benchmark's "
        "reference, not for production (docs/PERFORMANCE.md)."
    )
    stage_client: str = _setting(
        "aiokafka", "The Kafka client of the batch stages' consumer and producer: 'aiokafka' (Python, on the event "
        "loop) or 'librdkafka' (confluent-kafka: the network I/O and the protocol in C threads; docs/PERFORMANCE.md)."
    )
    stage_producer: str = _setting(
        "aiokafka", "The batch stages' producer under CX_STAGE_CLIENT=aiokafka: 'aiokafka', or 'lean' (cxstream/streams/"
        "leanproducer.py: idempotent, one multi-partition request per broker per loop round, less CPU per record; at "
        "least once, PLAINTEXT only; its sends of a loop turn leave together, CX_PRODUCER_LINGER_MS does not apply; "
        "docs/ARCHITECTURE.md)."
    )
    event_loop: str = _setting(
        "uvloop", "The engine's event loop: 'uvloop' (libuv: less CPU per network round trip, docs/PERFORMANCE.md) or "
        "'asyncio' (the standard library's)."
    )
    rebalance_timeout_s: float = _setting(6.0, "Consumer group session and rebalance timeout, seconds.")
    languages: str = _setting(
        "en,fr,de,es,it,nl,pt", "Languages (ISO 639-1, comma-separated) the context stage detects in inbound text; "
        "fewer than two: detection off (the channel's language tag only). Sentiment is scored in English only."
    )
    language_detector: str = _setting(
        "py3langid", "The language detector: 'py3langid' (default), or 'lingua' (pip install 'cxstream[lingua]'); "
        "'cxstream eval language' measures both (docs/INTEL.md 'Languages')."
    )
    language_min_confidence: float = _setting(
        0.5, "A message whose detected language has a lower confidence (0-1) is 'unknown' (docs/INTEL.md 'Languages')."
    )
    language_low_accuracy: int = _setting(
        0, "With CX_LANGUAGE_DETECTOR=lingua: 1 for its low-accuracy mode (faster, weaker on short text), 0 high accuracy."
    )
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
    snapshot_min_interval_s: float = _setting(
        10.0, "...but after labels no sooner than this after the previous publication (or CX_SNAPSHOT_INTERVAL_S if "
        "shorter), seconds: each publication is a model every worker's scorer loads again, which stalls its stages for "
        "tens of ms; at hundreds of labels a second that was every second (docs/PERFORMANCE.md). At the defaults the "
        "models are published every 10 s while labels come in."
    )
    nba_epsilon: float = _setting(
        0.1, "Next-best action: exploration rate ε (0..0.5): the best-ranked action is chosen with probability 1-ε+ε/K, "
        "each other with ε/K, and that propensity is logged with the decision."
    )
    nba_alpha: float = _setting(0.0, "Next-best action: weight of the LinUCB confidence bonus in the ranking (0: by the estimate).")
    nba_min_pulls: int = _setting(5, "Next-best action: outcomes an intent's own arm needs before it answers instead of the shared one.")
    nba_window_days: float = _setting(
        7.0, "Next-best action: attribution window, days: an outcome later than this after the decision teaches nothing."
    )
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
    loop_stall_log_ms: int = _setting(
        0, "Log the event loop's stack when it has not come round for this long, ms (what held it up); 0: off. "
        "cx_event_loop_lag_seconds is measured either way (docs/MONITORING.md)."
    )

    def __post_init__(self) -> None:
        if self.language_detector not in ("py3langid", "lingua"):
            raise SettingsError(f"CX_LANGUAGE_DETECTOR={self.language_detector!r}: use 'py3langid' or 'lingua'")
        if not 0.0 <= self.language_min_confidence <= 1.0:
            raise SettingsError(f"CX_LANGUAGE_MIN_CONFIDENCE={self.language_min_confidence!r}: use a number in [0, 1]")
        if not 0.0 <= self.nba_epsilon <= 0.5:
            raise SettingsError(f"CX_NBA_EPSILON={self.nba_epsilon!r}: exploration is bounded to 0..0.5")
        if self.nba_alpha < 0 or self.nba_min_pulls < 0 or self.nba_window_days <= 0:
            raise SettingsError("CX_NBA_ALPHA and CX_NBA_MIN_PULLS must be >= 0 and CX_NBA_WINDOW_DAYS > 0")
        if self.stage_runtime not in ("batch", "faust"):
            raise SettingsError(f"CX_STAGE_RUNTIME={self.stage_runtime!r}: use 'batch' or 'faust'")
        if self.stage_client not in ("aiokafka", "librdkafka"):
            raise SettingsError(f"CX_STAGE_CLIENT={self.stage_client!r}: use 'aiokafka' or 'librdkafka'")
        if self.stage_producer not in ("aiokafka", "lean"):
            raise SettingsError(f"CX_STAGE_PRODUCER={self.stage_producer!r}: use 'aiokafka' or 'lean'")
        if self.stage_producer == "lean" and (self.stage_client, self.processing_guarantee, self.kafka_security_protocol) != (
                "aiokafka", "at_least_once", "PLAINTEXT"):
            raise SettingsError(
                "CX_STAGE_PRODUCER=lean needs CX_STAGE_CLIENT=aiokafka, CX_PROCESSING_GUARANTEE=at_least_once and a "
                f"PLAINTEXT broker (got {self.stage_client!r}, {self.processing_guarantee!r}, {self.kafka_security_protocol!r})"
            )
        if self.event_loop not in ("uvloop", "asyncio"):
            raise SettingsError(f"CX_EVENT_LOOP={self.event_loop!r}: use 'uvloop' or 'asyncio'")
        if self.embedded_broker_gc not in EMBEDDED_BROKER_GCS:
            raise SettingsError(f"CX_EMBEDDED_BROKER_GC={self.embedded_broker_gc!r}: use 'g1' or 'shenandoah'")
        if not 0 <= self.learner_nice <= 19:
            raise SettingsError(f"CX_LEARNER_NICE={self.learner_nice!r}: use a niceness from 0 to 19")
        if self.loop_stall_log_ms < 0:
            raise SettingsError(f"CX_LOOP_STALL_LOG_MS={self.loop_stall_log_ms!r}: use 0 (off) or a number of ms")
        if self.fetch_wait_busy_ms < 0:
            raise SettingsError(f"CX_FETCH_WAIT_BUSY_MS={self.fetch_wait_busy_ms!r}: use 0 (off) or a number of ms")
        if self.fetch_pace_max_ms < 0:
            raise SettingsError(f"CX_FETCH_PACE_MAX_MS={self.fetch_pace_max_ms!r}: use 0 (off) or a number of ms")
        if not 0.0 <= self.fetch_pace_from < self.fetch_pace_full:
            raise SettingsError(
                f"CX_FETCH_PACE_FROM={self.fetch_pace_from!r}, CX_FETCH_PACE_FULL={self.fetch_pace_full!r}: "
                "use CPU shares with 0 <= FROM < FULL"
            )
        if self.fetch_sessions not in (0, 1):
            raise SettingsError(f"CX_FETCH_SESSIONS={self.fetch_sessions!r}: use 0 or 1")
        if self.early_send_ms < 0:
            raise SettingsError(f"CX_EARLY_SEND_MS={self.early_send_ms!r}: use 0 (off) or more")
        if self.identity_fast_path not in IDENTITY_FAST_PATHS:
            raise SettingsError(f"CX_IDENTITY_FAST_PATH={self.identity_fast_path!r}: use 'auto', '1' or '0'")
        if self.identity_fast_path == "1" and not self._fast_path_runs:
            raise SettingsError(
                "CX_IDENTITY_FAST_PATH=1 needs CX_STAGE_CLIENT=aiokafka, CX_PROCESSING_GUARANTEE=at_least_once and "
                f"CX_STAGE_RUNTIME=batch (got {self.stage_client!r}, {self.processing_guarantee!r}, {self.stage_runtime!r})"
            )
        if self.processing_guarantee not in ("at_least_once", "exactly_once"):
            raise SettingsError(
                f"CX_PROCESSING_GUARANTEE={self.processing_guarantee!r}: use 'at_least_once' or 'exactly_once'"
            )
        self._check_kafka_security()
        self._check_redis_security()

    def _check_kafka_security(self) -> None:
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol not in KAFKA_PROTOCOLS:
            raise SettingsError(f"CX_KAFKA_SECURITY_PROTOCOL={protocol!r}: use one of {', '.join(KAFKA_PROTOCOLS)}")
        if mechanism not in SASL_MECHANISMS:
            raise SettingsError(f"CX_KAFKA_SASL_MECHANISM={mechanism!r}: use one of {', '.join(SASL_MECHANISMS)}")
        if protocol != "PLAINTEXT" and not self.broker_url:
            raise SettingsError(
                f"CX_KAFKA_SECURITY_PROTOCOL={protocol} needs CX_BROKER_URL: the embedded broker has one plaintext "
                "listener on loopback only (docs/SECURITY.md)"
            )
        sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
        if sasl:
            if not self.kafka_sasl_username:
                raise SettingsError(f"CX_KAFKA_SECURITY_PROTOCOL={protocol} needs CX_KAFKA_SASL_USERNAME")
            _one_secret("CX_KAFKA_SASL_PASSWORD", self.kafka_sasl_password, self.kafka_sasl_password_file, required=True)
        else:
            for name in ("kafka_sasl_username", "kafka_sasl_password", "kafka_sasl_password_file"):
                if getattr(self, name):
                    raise SettingsError(
                        f"CX_{name.upper()} is set but CX_KAFKA_SECURITY_PROTOCOL={protocol} uses no SASL "
                        "(SASL_PLAINTEXT or SASL_SSL do)"
                    )
        if not tls:
            for name in ("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file"):
                if getattr(self, name):
                    raise SettingsError(
                        f"CX_{name.upper()} is set but CX_KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS (SSL or SASL_SSL do)"
                    )
        _check_files(self, "kafka")

    def _check_redis_security(self) -> None:
        url = self.redis_url
        if not url:
            for name in _REDIS_SECURITY:
                if getattr(self, name):
                    raise SettingsError(
                        f"CX_{name.upper()} is set but CX_REDIS_URL is not: the embedded Redis listens in plaintext on "
                        "loopback only and has no users; set CX_REDIS_URL to the Redis these belong to"
                    )
            return
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise SettingsError(f"CX_REDIS_URL: scheme {parts.scheme!r} is not redis://, rediss:// (TLS) or unix://")
        if parts.username and self.redis_username:
            raise SettingsError("CX_REDIS_USERNAME is set and CX_REDIS_URL names a user too: give the user in one place")
        if parts.password and (self.redis_password or self.redis_password_file):
            raise SettingsError(
                "CX_REDIS_PASSWORD(_FILE) is set and CX_REDIS_URL holds a password too: give the password in one place"
            )
        _one_secret("CX_REDIS_PASSWORD", self.redis_password, self.redis_password_file, required=False)
        if self.redis_username and not (self.redis_password or self.redis_password_file or parts.password):
            raise SettingsError("CX_REDIS_USERNAME needs a password (CX_REDIS_PASSWORD or CX_REDIS_PASSWORD_FILE): AUTH takes both")
        if parts.scheme != "rediss":
            for name in ("redis_ssl_ca_file", "redis_ssl_cert_file", "redis_ssl_key_file"):
                if getattr(self, name):
                    raise SettingsError(
                        f"CX_{name.upper()} is set but CX_REDIS_URL is not a rediss:// (TLS) URL"
                    )
        _check_files(self, "redis")

    @property
    def kafka_sasl_secret(self) -> str:
        """The SASL password: ``CX_KAFKA_SASL_PASSWORD`` or the content of ``CX_KAFKA_SASL_PASSWORD_FILE`` (read now)."""
        return _read_secret("CX_KAFKA_SASL_PASSWORD_FILE", self.kafka_sasl_password_file) or self.kafka_sasl_password

    @property
    def redis_secret(self) -> str:
        """The Redis password of the settings (not the URL's): ``CX_REDIS_PASSWORD`` or its file's content (read now)."""
        return _read_secret("CX_REDIS_PASSWORD_FILE", self.redis_password_file) or self.redis_password

    def __repr__(self) -> str:
        """The settings but the secret ones, and ``CX_REDIS_URL`` without a password it may hold.

        >>> "pw" in repr(Settings(redis_url="rediss://cx:pw@r:6380/0", kafka_sasl_password="", api_keys="k1"))
        False
        """
        shown = []
        for f in dataclasses.fields(self):
            if f.repr:
                value = getattr(self, f.name)
                if f.name == "redis_url" and urlsplit(value).password:
                    value = value.replace(f":{urlsplit(value).password}@", ":***@", 1)
                shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

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
    def _fast_path_runs(self) -> bool:
        return (self.stage_client, self.processing_guarantee, self.stage_runtime) == ("aiokafka", "at_least_once", "batch")

    @property
    def identity_fast_path_mode(self) -> str:
        """How this worker runs the identity fast path: ``always`` ('1'), ``alone`` ('auto', where it can run) or ``off``.

        >>> Settings().identity_fast_path_mode, Settings(identity_fast_path="1").identity_fast_path_mode
        ('alone', 'always')
        >>> Settings(processing_guarantee="exactly_once").identity_fast_path_mode
        'off'
        """
        if self.identity_fast_path == "1":
            return "always"
        return "alone" if self.identity_fast_path == "auto" and self._fast_path_runs else "off"

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


#: The values of CX_KAFKA_SECURITY_PROTOCOL and CX_KAFKA_SASL_MECHANISM.
KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_REDIS_SECURITY = (
    "redis_username", "redis_password", "redis_password_file", "redis_ssl_ca_file", "redis_ssl_cert_file", "redis_ssl_key_file",
)


def _one_secret(name: str, value: str, file: str, *, required: bool) -> None:
    if value and file:
        raise SettingsError(f"{name} and {name}_FILE are both set: give the password one way")
    if required and not (value or file):
        raise SettingsError(f"{name} or {name}_FILE is needed by the SASL protocols")


def _check_files(settings: Settings, client: str) -> None:
    """The files a client's settings name exist and are readable (now, not at its first connection); cert and key in pairs."""
    for suffix in ("sasl_password_file", "password_file", "ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
        name = f"{client}_{suffix}"
        path = getattr(settings, name, "")
        if path and not os.access(path, os.R_OK):
            why = "does not exist" if not os.path.exists(path) else "is not readable by this user"
            raise SettingsError(f"CX_{name.upper()}={path}: the file {why}")
    cert, key = getattr(settings, f"{client}_ssl_cert_file"), getattr(settings, f"{client}_ssl_key_file")
    if bool(cert) != bool(key):
        have, missing = ("CERT", "KEY") if cert else ("KEY", "CERT")
        raise SettingsError(f"CX_{client.upper()}_SSL_{have}_FILE needs CX_{client.upper()}_SSL_{missing}_FILE (mutual TLS takes both)")


def _read_secret(name: str, path: str) -> str:
    if not path:
        return ""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{name}={path}: {exc.strerror or exc}") from exc
    secret = text[:-1] if text.endswith("\n") else text
    secret = secret[:-1] if secret.endswith("\r") else secret
    if not secret:
        raise SettingsError(f"{name}={path}: the file is empty")
    return secret


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
