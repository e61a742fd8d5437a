"""Records a worker will read back, put on the wire in the middle of its batch (``CX_EARLY_SEND_MS``, off by default).

A contact's event crosses one broker hop inside the worker: ingest sends it to ``cx.resolve.v1``,
and identity reads it from there, in log order (the module docstring of
:mod:`cxstream.streams.batch` says why identity is never handed it in process).  The batch's
outputs are produced when the batch is done, after the context stage's models have run on
everything else in it; fetched back a broker round trip later, they have usually missed the fetch
that the next batch is made of, and wait for the one after.  So the hop cost a contact two of the
worker's rounds.

With early sending, as soon as a stage has buffered a record for the input of a stage of this
worker that is not handed it locally, and the stages after it have at least ``CX_EARLY_SEND_MS``
of work left in the batch (:meth:`cxstream.streams.batch.BatchRuntime._work_left`), the batch's
outputs buffered so far (a prefix of its
outputs, so every partition keeps their order) are sent, and the loop is let go round a few times
so that the producer puts them in a request and the consumer sends the fetch that will bring them
back.  The broker has them while the worker runs the rest of its batch.  aiokafka's ``getmany``
hands out what its fetcher has already read and does not let the loop read the socket first, so
before the next batch is taken :func:`read_back` lets the loop go round until the fetcher has read
records of those partitions (at most :data:`MAX_YIELDS` times): the next batch then holds them, one
round instead of two.  Measured, that shortens the hop for a worker past its latency limit and
lengthens it below (the batch's other outputs wait for the early request's acknowledgement), so
it is off by default (docs/PERFORMANCE.md, "Levers measured").

aiokafka's producer holds a record for ``linger_ms`` (1 ms) before a request takes it, and its
sender task only runs when the loop does.  :func:`ship` asks it to take the given partitions'
pending records now: it ends their linger and wakes the sender, as aiokafka's own
``flush_for_commit`` does, then yields to the loop until the sender has taken them (at most
:data:`MAX_YIELDS` times: with a request to the broker still unanswered, aiokafka sends the next one
only after it, and the records leave when the batch's own sends are done, as without early
sending).  It relies on aiokafka 0.14's accumulator (``_message_accumulator``, its ``_batches``,
``_waiter_future``, a batch's ``_linger_time`` and ``_drain_waiter``); pyproject pins aiokafka.
librdkafka's producer (``CX_STAGE_CLIENT=librdkafka``) sends from its own thread once the linger
has passed: the records are handed to it early and nothing more is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition

#: Times :func:`ship` lets the loop go round waiting for the sender to take the records.  The
#: sender's wake-up takes two or three (its ``asyncio.wait`` on the accumulator's waiter), and an
#: acknowledgement read meanwhile a few more before it looks at the accumulator again.
MAX_YIELDS = 8


async def ship(producer: Any, tps: Iterable[TopicPartition]) -> str:
    """Have aiokafka's *producer* send the records pending for *tps* now.

    Returns ``"taken"`` once a request took them all (or none was pending), ``"behind"`` if after
    :data:`MAX_YIELDS` turns of the loop some were still waiting (for a request to the broker still
    unanswered: they leave with the batch's other outputs), and ``"handed"`` at once for a producer
    without aiokafka's accumulator (librdkafka's, which sends them from its own thread).
    """
    acc = getattr(producer, "_message_accumulator", None)
    if acc is None:
        return "handed"
    pending = [batch for tp in tps for batch in acc._batches.get(tp, ())]
    if not pending:
        return "taken"
    for batch in pending:
        batch._linger_time = 0.0  # ready at once (aiokafka's remaining_linger() is None)
    if not acc._waiter_future.done():
        acc._waiter_future.set_result(None)  # wake the sender, as flush_for_commit does
    for _ in range(MAX_YIELDS):
        await asyncio.sleep(0)
        if all(batch._drain_waiter.done() for batch in pending):  # set when the sender takes a batch
            await asyncio.sleep(0)  # the task the sender made for the request writes it
            return "taken"
    return "behind"


async def read_back(consumer: Any, tps: Iterable[TopicPartition]) -> bool | None:
    """Let the loop go round (at most :data:`MAX_YIELDS` times) until aiokafka's *consumer* has fetched records of *tps*.

    True if it has, so that the next ``getmany`` holds them; False if they had not come back by then
    (they come with a later batch); None at once for a consumer without aiokafka's fetcher.
    """
    fetched = getattr(getattr(consumer, "_fetcher", None), "_records", None)
    if fetched is None:
        return None
    wanted = set(tps)
    for _ in range(MAX_YIELDS):
        if not wanted.isdisjoint(fetched):
            return True
        await asyncio.sleep(0)
    return not wanted.isdisjoint(fetched)
