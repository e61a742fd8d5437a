"""Every Prometheus metric of the engine, declared once (prometheus-client).

Labels come from bounded sets only (topic names, channels, error types, stages,
routing groups from configuration), never a customer or advisor id.  Latency
metrics are our own, in seconds: Faust's built-in histograms were mis-scaled.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_RECORD_COUNT_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)

EVENTS_IN = Counter("cx_events_in_total", "Input records read, by topic and what became of them.", ["topic", "outcome"])
DEAD_LETTERS = Counter(
    "cx_dead_letters_total", "Records sent to the dead-letter topic, by input topic, reason and the stage that gave up.",
    ["topic", "error_type", "stage"],
)
CONTEXT_UPDATES = Counter("cx_context_updates_total", "Customer contexts updated, by record type.", ["record"])
DUPLICATES = Counter("cx_duplicates_total", "Inputs dropped as duplicates of an event already applied.", ["stage"])
REDIS_FLUSH_SECONDS = Histogram(
    "cx_redis_flush_seconds", "Time to write one batch of contexts to Redis.", buckets=_LATENCY_BUCKETS
)
REDIS_FLUSHED = Counter("cx_redis_contexts_written_total", "Context copies written to Redis.")
REDIS_ERRORS = Counter("cx_redis_errors_total", "Failed Redis writes (retried on the next flush).")
REDIS_UP = Gauge("cx_redis_up", "1 while the engine's last Redis write succeeded, 0 since one failed (Redis unreachable).")
REDIS_PENDING = Gauge(
    "cx_redis_pending_writes", "Copies (contexts, identifier index) the write-behind holds for Redis, not yet written."
)
REDIS_DROPPED = Counter(
    "cx_redis_writes_dropped_total",
    "Pending copies let go past CX_REDIS_MAX_PENDING during a Redis outage (rewritten from the tables once Redis is back).",
)
BROKER_UP = Gauge("cx_broker_up", "1 while the stages' consumer reaches the broker (checked every few seconds), else 0.")
ASSIGNMENTS = Counter("cx_assignments_total", "Assignments (offers) emitted.", ["channel"])
ROUTING_EVENTS = Counter("cx_routing_events_total", "Routing events emitted.", ["kind"])
ROUTE_LATENCY = Histogram(
    "cx_route_latency_seconds",
    "Wall time from the triggering input's event time to the assignment being sent.",
    buckets=_LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "cx_stage_seconds", "Processing time of one record in a stage.", ["stage"], buckets=_LATENCY_BUCKETS
)
STAGE_WAIT = Histogram(
    "cx_stage_wait_seconds",
    "Time from a record being produced (its Kafka timestamp) to a stage taking it up, sampled once per partition per batch.",
    ["stage"], buckets=_LATENCY_BUCKETS,
)
LOOP_SECONDS = Histogram(
    "cx_stages_loop_seconds",
    "Time the batch stages' loop spends per iteration in each phase: fetch (waiting for records), process (handlers), flush (send the outputs; wait for acks only when too many batches are unacknowledged), commit.",
    ["phase"], buckets=_LATENCY_BUCKETS,
)
EVENT_LOOP_LAG = Histogram(
    "cx_event_loop_lag_seconds",
    "How much later than asked a 100 ms sleep on the worker's event loop wakes up: how long a record arriving at a "
    "random moment waits for whatever holds the loop (a batch, a timer, a publication) before anything can start on it.",
    buckets=_LATENCY_BUCKETS,
)
GC_PAUSE = Histogram(
    "cx_gc_pause_seconds",
    "How long each pass of Python's cyclic garbage collector held this process, by generation (0, 1, 2: "
    "2 is a full pass).  Every thread, the event loop included, stands still for it.",
    ["generation"], buckets=_LATENCY_BUCKETS,
)
FETCH_WAIT_MS = Gauge(
    "cx_stage_fetch_wait_ms",
    "Longest the broker may wait for records before it answers the batch stages' fetch, ms: CX_FETCH_WAIT_MS, "
    "CX_FETCH_WAIT_BUSY_MS while the worker's CPU share is above CX_FETCH_PACE_FROM, or the held fetch's wait.",
)
FETCH_HOLD_MS = Gauge(
    "cx_stage_fetch_hold_ms",
    "Longest the broker may hold the batch stages' fetch for more records (16 KB), ms: 0 while the worker's CPU "
    "share is below CX_FETCH_PACE_FROM (answered at once), up to CX_FETCH_PACE_MAX_MS as it nears CX_FETCH_PACE_FULL.",
)
FETCH_REQUESTS = Counter(
    "cx_stage_fetch_requests",
    "Fetch requests the batch stages' consumer had answered, by kind: 'full' (every partition, as when a fetch "
    "session opens) or 'incremental' (a session's: only the partitions that changed; CX_FETCH_SESSIONS).",
    ["kind"],
)
FETCH_SESSIONS_LOST = Counter(
    "cx_stage_fetch_sessions_lost",
    "Fetch sessions the batch stages' consumer lost and opened again with a full request, by reason: 'broker' "
    "(the broker evicted it or lost count of its epochs), 'request' (a fetch failed or was cancelled), "
    "'unsupported' (a broker older than fetch v7).",
    ["reason"],
)
CONSUMER_LAG = Gauge(
    "cx_consumer_lag_records",
    "Records in an input partition this worker owns that it has not finished: the partition's end offset (the last "
    "stable offset with exactly-once) minus the offset the worker commits next (its acknowledged position), measured "
    "every few seconds.",
    ["stage", "topic", "partition"],
)
PARTITIONS_OWNED = Gauge(
    "cx_stages_partitions_owned", "Input partitions of the batch stages this worker owns (its share of the group's work)."
)
PARTITIONS_RESTORING = Gauge(
    "cx_stages_partitions_restoring",
    "Input partitions assigned to this worker whose tables are being restored from their changelogs (paused until done).",
)
RESTORE_SECONDS = Histogram(
    "cx_stages_restore_seconds", "Time to restore the tables of newly assigned partitions from their changelogs, per assignment.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300),
)
REBALANCES = Counter(
    "cx_stages_rebalances_total",
    "Partition assignments this worker's stages received: one per rebalance of the stages' group it took part in "
    "(a worker joining or leaving, a missed heartbeat).  Steadily more than one a minute: the group keeps rebalancing.",
)
ALONE = Gauge(
    "cx_stages_alone", "1 while this worker owns every input partition of the stages (the group's only member), else 0."
)
FAST_ELSEWHERE = Gauge(
    "cx_stages_fast_elsewhere",
    "1 while a member of the group may send identity fast events that must be read from the log (one runs "
    "CX_IDENTITY_FAST_PATH=1, or did not say: an engine from before), so the context stage takes records locally "
    "only while this worker is alone; else 0.",
)
LOCAL_RECORDS = Counter(
    "cx_stage_local_records_total",
    "Records this worker sent to one of its own stages: 'delivered' locally in the same batch, "
    "'via_broker' (not caught up on the partition, or not its owner), 'skipped' when fetched back.",
    ["stage", "outcome"],
)
LOCAL_ECHO_PUSHED = Histogram(
    "cx_stage_local_echo_records",
    "Locally delivered records produced to their topics together, after waiting up to CX_LOCAL_ECHO_LINGER_MS.",
    buckets=_RECORD_COUNT_BUCKETS,
)
EARLY_SENDS = Counter(
    "cx_stage_early_sends",
    "Times a batch's outputs buffered so far were sent before the batch was done, because one is read back by a "
    "stage of this worker (CX_EARLY_SEND), by outcome: 'taken' (on the wire at once), 'behind' (a produce request "
    "still unanswered held them until the batch's other sends), 'handed' (librdkafka's thread sends them).",
    ["outcome"],
)
EARLY_READ_BACK = Counter(
    "cx_stage_early_read_back",
    "Batches after one with an early send (CX_EARLY_SEND_MS), by whether the records sent early came back in time to "
    "be in them: 'next_batch', or 'later' (the broker had not answered yet).",
    ["outcome"],
)
TRACKED_WAITS = Counter(
    "cx_stage_ordered_send_waits_total",
    "Times a batch waited for an earlier record's acknowledgement before producing one that must follow it "
    "(the identity fast path: an event for the identity stage behind a fast event of the same customer).",
)
IDENTITY_ROAD = Counter(
    "cx_identity_road_total",
    "Customer events by the road ingest sent them (CX_IDENTITY_FAST_PATH): 'fast' straight to the customer's "
    "context partition, 'slow' through the identity stage, with why: 'unsettled' (a new identifier or several "
    "owners), 'refused', 'erased', 'pending' (an earlier event of the customer is still on the slow road), "
    "'moved' (the input partition was newly taken), 'not_ready' (the replica is still catching up), 'erasure', "
    "and 'bounced' (a fast event that found its customer erased, sent to the identity stage by the context stage).",
    ["road", "reason"],
)
IDENTITY_REPLICA = Gauge(
    "cx_identity_replica_records", "Records of the identity table in this worker's replica (CX_IDENTITY_FAST_PATH)."
)
BATCH_RECORDS = Histogram(
    "cx_stage_batch_records", "Records per batch a stage processed.", ["stage"],
    buckets=_RECORD_COUNT_BUCKETS,
)
QUEUE_WAITING = Gauge("cx_queue_waiting", "Contacts waiting for an advisor.", ["routing_group"])
ADVISORS_AVAILABLE = Gauge("cx_advisors_available", "Advisors logged in and available.", ["routing_group"])
LONGEST_WAIT = Gauge("cx_queue_longest_wait_seconds", "Longest current wait in the group.", ["routing_group"])
SERVICE_LEVEL = Gauge(
    "cx_service_level", "Answered within target / (answered + abandoned - short abandons), since start.", ["routing_group"]
)
ASA = Gauge("cx_asa_seconds", "Average speed of answer, since start.", ["routing_group"])
ABANDON_RATE = Gauge("cx_abandon_rate", "Abandoned / (answered + abandoned), since start.", ["routing_group"])
OCCUPANCY = Gauge("cx_advisor_occupancy", "Seconds advisors held contacts / staffed seconds.", ["routing_group"])
HTTP_REQUESTS = Histogram(
    "cx_http_request_seconds", "HTTP API latency by route and status.", ["route", "status"], buckets=_LATENCY_BUCKETS
)
LOOKUP_CACHE = Counter(
    "cx_lookup_cache_total", "Context lookups by how the API process's cache took them: hit (answered from it), miss "
    "(asked Redis), bypass (asked Redis: the cache is off or not subscribed to Redis' invalidations).", ["outcome"],
)
LOOKUP_CACHE_BYTES = Gauge("cx_lookup_cache_bytes", "Bytes the API process's context lookup cache holds (values and per-entry overhead).")
LOOKUP_CACHE_INVALIDATED = Counter(
    "cx_lookup_cache_invalidated_total", "Cached context lookups dropped because Redis reported one of their keys changed."
)
LOOKUP_CACHE_LIVE = Gauge(
    "cx_lookup_cache_live", "1 while the API process's context lookup cache is subscribed to Redis' invalidations (and caches), else 0."
)

LABELS = Counter("cx_labels_total", "Labels learned, by model.", ["model"])
DRIFTS = Counter("cx_model_drift_total", "Drifts detected by ADWIN on a model's progressive error.", ["model"])
MODEL_QUALITY = Gauge(
    "cx_model_progressive", "Progressive (test-then-train) quality of a model.", ["model", "metric"]
)
MODEL_VERSION = Gauge("cx_model_version", "Version of the newest published snapshot (learner) or the one in use (scorer).", ["model"])
MODEL_PREDICT_SECONDS = Histogram(
    "cx_model_predict_seconds", "Time of one prediction.", ["model"], buckets=_LATENCY_BUCKETS
)
CUSTOMER_HEALTH = Histogram(
    "cx_customer_health",
    "Health score (0-100, docs/INTEL.md 'Customer health') of each customer who opens a contact that needs an advisor, "
    "by the contact's routing group.",
    ["routing_group"], buckets=(10, 20, 30, 40, 50, 60, 70, 80, 90, 100),
)
MESSAGE_LANGUAGES = Counter(
    "cx_message_languages_total", "Inbound texts by detected language (the configured ones, or 'unknown').", ["language"]
)
OUTREACH = Counter("cx_outreach_total", "Outreach events sent, by trigger.", ["reason"])
OUTREACH_SUPPRESSED = Counter(
    "cx_outreach_suppressed_total", "Outreach recommendations held or dropped, by trigger and guardrail.", ["trigger", "guardrail"]
)
OUTREACH_OUTCOMES = Counter(
    "cx_outreach_outcomes_total", "Outcomes attributed to an outreach, by trigger and outcome kind.", ["trigger", "kind"]
)
