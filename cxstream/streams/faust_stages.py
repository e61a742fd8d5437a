"""The hot path's stages on Faust, one event at a time: the benchmark's "naive Faust, same pipeline".

``CX_STAGE_RUNTIME=faust`` runs the engine's own stages (ingest, identity, context, router:
the same handlers, models, Redis write-behind and timers) the way a Faust application written
plainly would, instead of on :class:`~cxstream.streams.batch.BatchRuntime`:

- each stage is a Faust agent over its input topics, on the engine's Faust app (consumer
  group ``CX_APP_ID``), and its handler runs once per event (``stream.events()``);
- each table is a Faust table (memory store, raw bytes): every write sends its changelog
  record at once, from the event being processed;
- each output is an ``await topic.send(...)`` per record;
- no local delivery: every hop goes through the broker;
- a stage's per-batch hook (the router saves the routing groups it changed) runs after each
  event, since a Faust agent has no batch; a table write the hook would defer (the router's,
  ``CX_ROUTER_SAVE_INTERVAL_MS``) is done at once, since Faust commits offsets regardless.

It is what issue 17 measures the batch runtime against ("engine drain >= 3x naive Faust, the
same pipeline"): ``cxstream bench pipeline`` drains it beside the engine (``--faust-pipeline-rounds``,
and among the full run's references; docs/PERFORMANCE.md).  It is not meant for production: it does not restore the Redis copies
after a restart (``on_restored``), report the consumer lag, or detect a broker outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

import faust
from faust.exceptions import ConsumerNotStarted

from cxstream.streams import metrics
from cxstream.streams.batch import Record
from cxstream.streams.codecs import InvalidInput, encode
from cxstream.streams.deadletter import count_dead_letter, dead_letter_for
from cxstream.streams.settings import Settings
from cxstream.streams.topics import DEAD_LETTER, TopicSpec

log = logging.getLogger(__name__)


class FaustTable(faust.Table):  # type: ignore[misc]
    """A Faust table with the few extras the stages' code uses on a batch table."""

    partition = 0  # the batch runtime's current partition; Faust takes it from the event being processed
    on_restored: Callable[[int, Mapping[bytes, bytes]], None] | None = None
    on_dropped: Callable[[int, Mapping[bytes, bytes]], None] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "partition":  # the router sets it before saving a group: Faust knows the event's partition
            return
        super().__setattr__(name, value)

    def held(self) -> list[tuple[int, Mapping[bytes, bytes]]]:
        return [(0, dict(self.data))]


class FaustOutput:
    """A topic a stage writes to: one ``send`` per record, awaited (Faust buffers it in its producer)."""

    __slots__ = ("_topic", "name")

    def __init__(self, name: str, topic: faust.TopicT) -> None:
        self.name = name
        self._topic = topic

    async def send(self, key: bytes | None = None, value: bytes | None = None) -> None:
        await self._topic.send(key=key, value=value)

    def get_topic_name(self) -> str:
        return self.name


class FaustStage:
    """One stage as a Faust agent (the interface of :class:`~cxstream.streams.batch.BatchStage` the stages use)."""

    def __init__(self, runtime: FaustStageRuntime, name: str, inputs: Sequence[str], tables: Sequence[FaustTable]) -> None:
        self.runtime = runtime
        self.name = name
        self.inputs = list(inputs)
        self.tables = list(tables)
        self.handler: Callable[[Record], Awaitable[None]] | None = None
        self.on_batch: Callable[[], Awaitable[None]] | None = None
        self.on_idle: Callable[[], Awaitable[None]] | None = None  # a deferred table write is done at once here
        self.unsaved = False
        self.dead_letters = runtime.output(runtime.topic(DEAD_LETTER))
        app = runtime.app
        source = app.topic(*self.inputs, key_type=bytes, value_type=bytes)
        app.agent(source, name=f"cxstream.stage.{name}")(self._run)

    def output(self, name: str) -> FaustOutput:
        return self.runtime.output(name)

    async def _run(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            m = event.message
            rec = Record(m.topic, m.partition, m.offset, m.key, m.value)
            assert self.handler is not None, f"stage {self.name} has no handler"
            try:
                await self.handler(rec)
            except InvalidInput as exc:
                await self._dead_letter(rec, exc)
            except Exception as exc:
                log.exception("%s failed on a record; sending it to the dead-letter topic", self.name)
                await self._dead_letter(rec, InvalidInput("processing_error", f"{type(exc).__name__}: {exc}"))
            if self.on_batch is not None:
                await self.on_batch()
            if self.unsaved and self.on_idle is not None:  # Faust commits regardless: nothing may stay unwritten
                await self.on_idle()
                self.unsaved = False

    async def _dead_letter(self, rec: Record, exc: InvalidInput) -> None:
        letter = dead_letter_for(
            exc, topic=rec.topic, partition=rec.partition, offset=rec.offset, agent=self.name, raw=rec.value, key=rec.key,
            max_raw=self.runtime.settings.dead_letter_max_raw_bytes,
        )
        count_dead_letter(letter)
        await self.dead_letters.send(letter.source_topic.encode(), encode(letter))


class FaustStageRuntime:
    """Declares the stages as agents and tables of *app* (the engine's Faust app); the Faust worker runs them."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.stages: list[FaustStage] = []
        self.ready = asyncio.Event()
        self.broker_down_since: float | None = None  # not measured on this runtime
        self._outputs: dict[str, FaustOutput] = {}
        self._task: asyncio.Task[None] | None = None

    def topic(self, spec: TopicSpec) -> str:
        return self.settings.topic_prefix + spec.name

    def output(self, name: str) -> FaustOutput:
        out = self._outputs.get(name)
        if out is None:
            out = self._outputs[name] = FaustOutput(name, self.app.topic(name, key_type=bytes, value_type=bytes))
        return out

    def table(self, name: str, partitions: int) -> FaustTable:
        """A Faust table; its changelog is ``{app_id}-{name}-changelog``, as on the batch runtime."""
        table = FaustTable(
            self.app, name=name, default=None, beacon=self.app.tables.beacon, partitions=partitions,
            key_type=bytes, value_type=bytes,
        )
        return cast(FaustTable, self.app.tables.add(table))

    def stage(
        self, name: str, inputs: Sequence[TopicSpec], *, tables: Sequence[FaustTable] = (), local: bool = False,
        local_when_alone: bool = False, fast_path_input: bool = False,
    ) -> FaustStage:
        """A stage consuming *inputs*; *local*, *local_when_alone* and *fast_path_input* mean nothing here (every hop is a fetch)."""
        st = FaustStage(self, name, [self.topic(s) for s in inputs], tables)
        self.stages.append(st)
        return st

    async def send_now(self, topic: str, value: bytes, key: bytes) -> None:
        fut = await self.app.topic(topic, key_type=bytes, value_type=bytes).send(key=key, value=value)
        await fut

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def start(self) -> None:
        """Set :attr:`ready` at once (the Faust worker starts its consumer after the engine's services have
        started) and keep ``cx_stages_partitions_owned`` / ``_restoring`` up to date, as the batch runtime
        does: the benchmark waits on them before it produces."""
        self.ready.set()
        self._task = asyncio.create_task(self._watch_assignment(), name="cxstream.faust-stages.assignment")

    async def _watch_assignment(self) -> None:
        inputs = {topic for st in self.stages for topic in st.inputs}
        owned, restoring = metrics.PARTITIONS_OWNED, metrics.PARTITIONS_RESTORING
        restoring.set(1)
        while True:  # (the engine stops when this task ends: it is the runtime's task)
            try:
                held = [tp for tp in self.app.consumer.assignment() if tp.topic in inputs]
            except ConsumerNotStarted:
                pass
            except Exception as exc:  # a gauge is not worth stopping the engine for
                log.warning("cannot read the Faust consumer's assignment: %r", exc)
            else:
                owned.set(len(held))
                restoring.set(1 if self.app.rebalancing or not held else 0)
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
