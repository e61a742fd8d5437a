"""Learner: the single writer of the models; learns from every label and publishes snapshots.

Consumes ``cx.labels.v1`` (one partition, so exactly one worker runs it) in order,
test-then-train: each label is first scored (progressive accuracy / AUC / log loss,
exported as metrics) and then learned.  A drift detected by the model's ADWIN
monitor is a metric and a :class:`ModelEvent`.  Every ``CX_SNAPSHOT_EVERY``
labels (but not sooner than ``CX_SNAPSHOT_MIN_INTERVAL_S`` after the last time), and on a timer
when anything changed, the models are published to Redis
(:mod:`cxstream.streams.modelstore`), where every worker's scorer picks them up.

On start the learner continues from the newest snapshot in Redis, so a restart
loses at most the labels learned since the last publication.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust
import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from cxstream.agents.nba import config_from
from cxstream.intel.assist import KnowledgeModel
from cxstream.intel.churn import ChurnModel
from cxstream.intel.intent import IntentModel
from cxstream.intel.metrics import ProgressiveAccuracy, ProgressiveAUC, ProgressiveLogLoss
from cxstream.intel.nba import NBAPolicy
from cxstream.intel.snapshot import SnapshotError, dump_snapshot_async
from cxstream.schemas.learning import ChurnLabel, IntentLabel, KnowledgeLabel, Label, ModelEvent, NBALabel
from cxstream.streams import metrics
from cxstream.streams import topics as t
from cxstream.streams.app import Topics, bind_topic
from cxstream.streams.codecs import decode, encode
from cxstream.streams.deadletter import process_events
from cxstream.streams.logs import OutageLog
from cxstream.streams.modelstore import load_snapshot, save_snapshot
from cxstream.streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearningTopics:
    """The learning loop's topics, bound to one app."""

    labels: faust.TopicT
    model_events: faust.TopicT


_bound: dict[faust.App, LearningTopics] = {}


def learning_topics(app: faust.App, settings: Settings) -> LearningTopics:
    """Bind the learning loop's topics to *app* (once per app)."""
    if app not in _bound:
        _bound[app] = LearningTopics(
            labels=bind_topic(app, settings, t.LABELS), model_events=bind_topic(app, settings, t.MODEL_EVENTS)
        )
    return _bound[app]


@dataclass
class Learner:
    """The models being trained and their progressive metrics (pure apart from the clock)."""

    intent: IntentModel = field(default_factory=IntentModel)
    churn: ChurnModel = field(default_factory=ChurnModel)
    intent_accuracy: ProgressiveAccuracy = field(default_factory=ProgressiveAccuracy)
    churn_auc: ProgressiveAUC = field(default_factory=ProgressiveAUC)
    churn_log_loss: ProgressiveLogLoss = field(default_factory=ProgressiveLogLoss)
    assist: KnowledgeModel = field(default_factory=KnowledgeModel)
    assist_top3: ProgressiveAccuracy = field(default_factory=ProgressiveAccuracy)
    nba: NBAPolicy = field(default_factory=NBAPolicy)
    nba_reward_sum: float = 0.0  # rewards of the actions learned (the live policy's own outcomes)
    namespace: str = ""  # where its snapshots go in Redis: the engine's CX_TOPIC_PREFIX (cxstream/streams/modelstore.py)
    pending: dict[str, int] = field(default_factory=lambda: {"intent": 0, "churn": 0, "assist": 0, "nba": 0})
    seen: dict[str, int] = field(default_factory=lambda: {"intent": 0, "churn": 0, "assist": 0, "nba": 0})
    publishing: asyncio.Lock = field(default_factory=asyncio.Lock)  # one publication at a time, in version order
    published_at: float = 0.0  # time.monotonic() of the last publication that began

    def publication_due(self, every: int, min_gap_s: float) -> bool:
        """*every* labels or more learned since the last publication, and at least *min_gap_s* since it began."""
        return sum(self.pending.values()) >= every and time.monotonic() - self.published_at >= min_gap_s

    def learn(self, label: Label) -> list[ModelEvent]:
        """Test-then-train one label; returns the model events it caused (drift)."""
        model: IntentModel | ChurnModel | KnowledgeModel
        if isinstance(label, IntentLabel):
            # one pass: the pre-update prediction (progressive accuracy) and the update share
            # the features and scores; the prediction latency is the scorers' metric
            predicted = self.intent.test_then_learn(label.text, label.intent).label
            self.intent_accuracy.update(label.intent, predicted)
            name, model, drift = "intent", self.intent, self.intent.drift_detected
            metrics.MODEL_QUALITY.labels("intent", "accuracy").set(self.intent_accuracy.get())
        elif isinstance(label, KnowledgeLabel):
            # test-then-train: was the document among the 3 suggested before this contact was learned?
            ranked = self.assist.test_then_learn(label.text, label.document, label.intent, label.resolved)
            self.assist_top3.update(True, label.document in ranked)
            name, model, drift = "assist", self.assist, False
            metrics.MODEL_QUALITY.labels("assist", "top3").set(self.assist_top3.get())
        elif isinstance(label, NBALabel):
            try:
                self.nba.learn(label.features, label.intent, label.action, label.reward, label.document_id)
            except ValueError as exc:  # an action this policy does not know: not learnable, said loudly
                log.warning("nba label %s not learned: %s", label.event_id, exc)
                return []
            self.nba_reward_sum += label.reward
            self.pending["nba"] += 1
            self.seen["nba"] += 1
            metrics.LABELS.labels("nba").inc()
            metrics.MODEL_QUALITY.labels("nba", "mean_reward").set(self.nba_reward_sum / self.seen["nba"])
            return []
        else:
            assert isinstance(label, ChurnLabel)
            p = self.churn.predict_proba_one(label.features)
            self.churn_auc.update(label.churned, p)
            self.churn_log_loss.update(label.churned, p)
            self.churn.learn_one(label.features, label.churned)
            name, model, drift = "churn", self.churn, self.churn.drift_detected
            metrics.MODEL_QUALITY.labels("churn", "auc").set(self.churn_auc.get())
            metrics.MODEL_QUALITY.labels("churn", "log_loss").set(self.churn_log_loss.get())
        self.pending[name] += 1
        self.seen[name] += 1
        metrics.LABELS.labels(name).inc()
        if not drift:
            return []
        metrics.DRIFTS.labels(name).inc()
        return [self.event(name, "drift", model.version, label.at)]

    def event(self, name: str, kind: str, version: int, at: float) -> ModelEvent:
        return ModelEvent(
            event_id=f"{name}-{kind}-{version}-{uuid.uuid4().hex[:8]}",
            at=at,
            model=name,  # type: ignore[arg-type]
            kind=kind,  # type: ignore[arg-type]
            version=version,
            labels_seen=self.seen[name],
            progressive_accuracy=self.intent_accuracy.get() if name == "intent" and self.seen[name] else None,
            progressive_auc=self.churn_auc.get() if name == "churn" and self.seen[name] else None,
            progressive_top3=self.assist_top3.get() if name == "assist" and self.seen[name] else None,
        )


async def publish(learner: Learner, client: aioredis.Redis, topics: LearningTopics, *, force: bool = False) -> None:
    """Publish every model with labels learned since its last publication.

    The model's state is copied (~14 ms for an intent model trained on 8,000 Banking77 rows: its
    non-zero weights gathered, bench/results/intel-snapshot-load.json), then serialised
    in slices of about a millisecond (:func:`dump_snapshot_async`, zstd): in one go with zlib
    (~350 ms on a slow day) it stalled the batch stages that share this process's loop, and in
    zlib's 4 ms slices it still lengthened their tail (bench/results/pipeline-ab-snapshots-205.json).
    Labels learned meanwhile go into the next publication.
    """
    async with learner.publishing:
        learner.published_at = time.monotonic()
        models: tuple[tuple[str, Any], ...] = (
            ("intent", learner.intent), ("churn", learner.churn), ("assist", learner.assist), ("nba", learner.nba)
        )
        for name, model in models:
            taken = learner.pending[name]
            if not taken and not force:
                continue
            kind, version, meta, arrays = model.publish_parts()
            blob = await dump_snapshot_async(kind, version, meta, arrays)
            await save_snapshot(client, name, version, blob, learner.namespace)
            learner.pending[name] = max(0, learner.pending[name] - taken)
            metrics.MODEL_VERSION.labels(name).set(version)
            await topics.model_events.send(
                key=name.encode(), value=encode(learner.event(name, "published", version, time.time()))
            )
            log.info("published %s model version %d (%d bytes)", name, version, len(blob))


async def restore(learner: Learner, client: aioredis.Redis) -> None:
    """Continue from the newest snapshots in Redis, if any.

    A snapshot this version cannot read (written by an older model format) is not fatal:
    that model starts afresh, numbered after the refused snapshot so versions keep growing.
    """
    found = await load_snapshot(client, "intent", learner.namespace)
    if found:
        learner.intent = _restored("intent", found, IntentModel.from_bytes, learner.intent)
    found = await load_snapshot(client, "churn", learner.namespace)
    if found:
        learner.churn = _restored("churn", found, ChurnModel.from_bytes, learner.churn)
    found = await load_snapshot(client, "assist", learner.namespace)
    if found:
        learner.assist = _restored("assist", found, KnowledgeModel.from_bytes, learner.assist)
    found = await load_snapshot(client, "nba", learner.namespace)
    if found:
        config = learner.nba.config
        learner.nba = _restored("nba", found, lambda b: NBAPolicy.from_bytes(b, config), learner.nba)


def _restored(name: str, found: tuple[int, bytes], load: Callable[[bytes], Any], fresh: Any) -> Any:
    version, blob = found
    try:
        return load(blob)
    except SnapshotError as exc:
        log.warning("model %s: snapshot version %d cannot be read (%s); learning afresh from version %d", name, version, exc, version)
        fresh.version = version
        return fresh


def register(app: faust.App, topics: Topics, settings: Settings, client: aioredis.Redis) -> Learner:
    """Declare the learner agent and its publication timer on *app*."""
    lt = learning_topics(app, settings)
    learner = Learner(nba=NBAPolicy(config_from(settings)), namespace=settings.topic_prefix)
    for name in ("intent", "churn", "assist", "nba"):  # exported at 0 from the start: increase() and rate() need a series before the first
        metrics.DRIFTS.labels(name)
        metrics.LABELS.labels(name)
    restored = False

    async def restore_once() -> None:
        """Load the newest snapshots before the first label, waiting for Redis if it is down.

        The labels wait in Kafka meanwhile (the agent does not take the next one): learning on a
        fresh model, then publishing it, would replace what was learned before the outage."""
        nonlocal restored
        backoff = 0.5
        while not restored:
            try:
                await restore(learner, client)
            except RedisError as exc:
                log.warning("learner: cannot read the model snapshots from Redis (%r); retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(10.0, backoff * 2)
            else:
                restored = True

    unpublished = OutageLog(log, "learner: model publication", dependency="Redis or the broker")
    # labels publish at most this often: each publication is a model every worker's scorer loads again
    min_gap = min(settings.snapshot_min_interval_s, settings.snapshot_interval_s)

    async def publish_or_later() -> None:
        """Publish; if Redis or the broker is away, keep what is pending for the next timer (never crash the app)."""
        try:
            await publish(learner, client, lt)
        except (RedisError, KafkaError, OSError, TimeoutError) as exc:
            if isinstance(exc, RedisError):
                metrics.REDIS_ERRORS.inc()
            unpublished.failed(exc)
        else:
            unpublished.ok()

    async def handle(event: faust.EventT) -> None:
        await restore_once()
        label: Label = decode(event.value, Label)
        for ev in learner.learn(label):
            await lt.model_events.send(key=ev.model.encode(), value=encode(ev))
        if learner.publication_due(settings.snapshot_every, min_gap):
            await publish_or_later()

    async def learn(stream: faust.StreamT[bytes]) -> None:
        await process_events(stream, "learner", topics.dead_letter, handle)

    app.agent(lt.labels, name="cxstream.learner")(learn)

    @app.timer(settings.snapshot_interval_s, name="cxstream.learner.publish")
    async def publish_on_timer() -> None:
        if restored and any(learner.pending.values()):
            await publish_or_later()

    return learner
