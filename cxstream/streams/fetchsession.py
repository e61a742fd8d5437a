"""Incremental fetch sessions (KIP-227) for the batch stages' aiokafka consumer (``CX_FETCH_SESSIONS``).

aiokafka 0.14 sends every fetch as a full request: every partition it fetches, with its offset and
byte limit, under session id 0 and epoch -1 (no session), and the broker answers for every one of
them, records or not.  The engine's worker fetches 21 partitions several hundred times a second at
low rates, one loop round each; building, encoding and sending those requests and parsing their
answers was 14 % of its samples at 208/s (``bench/results/pipeline-profile-208-dec6-fourth.json``),
and the broker, on the other core, reads all 21 each time.

With a fetch session the broker keeps the list.  After a first, full request, each request names
only the partitions whose offset or limit changed since the one before (those whose records were
handed out) and the partitions to forget, and the answer holds only the partitions with records, a
changed high watermark, log start or stable offset, or an error.  What the Java consumer does
(``FetchSessionHandler``) is done here for aiokafka's fetcher:

* :class:`FetchSession` is one broker's session as this consumer knows it: its id, the epoch of the
  next request, and the partitions and offsets the broker holds for it.
* :class:`SessionRequest` is aiokafka's ``FetchRequest`` built against a session.  Its ``topics``
  stay every partition fetched, with its offset, so that aiokafka's own handling of the answer (which
  reads each answered partition's offset from there) is unchanged.
* :class:`SessionFetcher` is aiokafka's ``Fetcher`` with each request made a session request, and its
  client's ``send`` wrapped so that the session follows every answer: a new session's id, the next
  epoch, or a session lost.  One fetch per broker is in flight at a time (aiokafka's rule), so a
  session's epochs go in order.
* A request that fails, is cancelled, or is answered with a session error (the broker evicted the
  session, or lost count of its epochs) loses the session: an answer with a session error is asked
  again at once as a full request that closes the old session and opens a new one; otherwise the
  next round's request does it.  A broker with no room for a session answers with id 0, and the
  fetches stay full.  A broker older than fetch v7 gets aiokafka's own requests.
* :func:`close_fetch_sessions`, when the consumer stops, ends its fetches and closes its sessions
  on their brokers (a request with epoch -1, as the Java consumer's ``close`` sends), so that a
  broker frees their slots at once instead of keeping them until it needs the room.

:func:`use_fetch_sessions` turns an aiokafka consumer's fetcher, once started, into a
:class:`SessionFetcher`.  It leans on aiokafka 0.14's fetcher internals (``_get_actions_per_node``'s
result, ``_client``, ``FetchRequest``'s fields), which pyproject.toml pins to 0.14;
tests/integration/test_fetch_sessions.py runs it against the real broker.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from aiokafka.protocol.fetch import FetchRequest

from cxstream.streams import metrics

log = logging.getLogger(__name__)

#: The top-level errors of a fetch answer that say the session is gone or out of step (KIP-227).
SESSION_ERRORS = {70: "FETCH_SESSION_ID_NOT_FOUND", 71: "INVALID_FETCH_SESSION_EPOCH"}
MAX_EPOCH = 2**31 - 1  # after it, epochs start again at 1 (as the Java client's do)
FINAL_EPOCH = -1  # a request with it closes the session it names (and is answered as a sessionless one)
NO_SESSION = 0

_FULL, _INCREMENTAL = metrics.FETCH_REQUESTS.labels("full"), metrics.FETCH_REQUESTS.labels("incremental")

Partition = tuple[str, int]  # (topic, partition)
Topics = list[tuple[str, list[tuple[int, int, int]]]]  # aiokafka's fetch list: (topic, [(partition, offset, max bytes)])


class FetchSession:
    """One broker's fetch session, from this consumer's side.

    ``session_id`` is the broker's id for it (0: none yet); ``epoch`` the next request's (0: the next
    request is a full one, which opens a session, closing ``session_id`` if it is set); ``known`` the
    partitions the broker holds for the session, with the offset and byte limit it holds for each.
    """

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.session_id = NO_SESSION
        self.epoch = 0
        self.known: dict[Partition, tuple[int, int]] = {}
        self.supported = True  # False once a broker answers a fetch older than v7 (no sessions)
        self.requests = 0  # answered, in this session or the ones before it
        self.partitions_sent = 0  # the partitions those requests named
        self.partitions_answered = 0  # the partitions their answers held

    def request(self, fetch: FetchRequest) -> FetchRequest:
        """The session request for aiokafka's full request *fetch*; *fetch* itself if the broker has no sessions."""
        return SessionRequest(self, fetch) if self.supported else fetch

    def answered(self, request: SessionRequest, response: Any) -> None:
        """Follow the broker's *response* to *request*: the session it opened, the next epoch, or the session lost."""
        if response.API_VERSION < 7:
            self.supported = False
            metrics.FETCH_SESSIONS_LOST.labels("unsupported").inc()
            self.epoch, self.known = 0, {}
            return
        if response.error_code:
            self.lost("broker")
            return
        self.requests += 1
        self.partitions_sent += sum(len(partitions) for _, partitions in request.sent)
        self.partitions_answered += sum(len(partitions) for _, partitions in response.topics)
        if request.epoch == 0:
            self.session_id = response.session_id
            self.epoch = 1 if self.session_id != NO_SESSION else 0
        else:
            self.epoch = request.epoch + 1 if request.epoch < MAX_EPOCH else 1
        self.known = request.wanted
        stray = [
            (topic, partition) for topic, partitions in response.topics for partition, *_ in partitions
            if (topic, partition) not in request.wanted
        ]
        if stray:  # not asked for: aiokafka has no offset to check them against, so they are left out
            log.warning("fetch session %s on broker %s answered for partitions it was not asked for: %s; starting a new one",
                        self.session_id, self.node_id, sorted(stray))
            response.topics = [
                (topic, [p for p in partitions if (topic, p[0]) in request.wanted]) for topic, partitions in response.topics
            ]
            self.lost("broker")

    def lost(self, reason: str) -> None:
        """The broker's state of the session is unknown: the next request is a full one, closing it and opening another."""
        if self.epoch or self.known:
            metrics.FETCH_SESSIONS_LOST.labels(reason).inc()
        self.epoch = 0
        self.known = {}


class SessionRequest(FetchRequest):
    """aiokafka's fetch request *fetch*, built against *session*: in full if its epoch is 0 (or *full*), else only what changed.

    >>> session = FetchSession(1)
    >>> fetch = FetchRequest(10, 1, 52428800, 0, [("a", [(0, 5, 1024), (1, 7, 1024)])])
    >>> first = SessionRequest(session, fetch)
    >>> first.epoch, first.sent, first.forgotten
    (0, [('a', [(0, 5, 1024), (1, 7, 1024)])], [])
    >>> session.session_id, session.epoch, session.known = 42, 1, first.wanted
    >>> later = SessionRequest(session, FetchRequest(10, 1, 52428800, 0, [("a", [(1, 9, 1024)]), ("b", [(0, 0, 1024)])]))
    >>> later.session_id, later.epoch, later.sent, later.forgotten
    (42, 1, [('a', [(1, 9, 1024)]), ('b', [(0, 0, 1024)])], [('a', [0])])
    >>> later.topics == [("a", [(1, 9, 1024)]), ("b", [(0, 0, 1024)])]
    True
    """

    def __init__(self, session: FetchSession, fetch: FetchRequest, *, full: bool = False, final: bool = False) -> None:
        super().__init__(
            fetch._max_wait_ms, fetch._min_bytes, fetch._max_bytes, fetch._isolation_level, fetch.topics,
            rack_id=fetch._rack_id,
        )
        self.session = session
        self.session_id = session.session_id
        self.epoch = FINAL_EPOCH if final else 0 if full else session.epoch
        self.wanted = {(topic, p): (offset, limit) for topic, partitions in fetch.topics for p, offset, limit in partitions}
        if self.epoch in (0, FINAL_EPOCH):
            self.sent: Topics = fetch.topics
            self.forgotten: list[tuple[str, list[int]]] = []
            return
        known = session.known
        changed: dict[str, list[tuple[int, int, int]]] = collections.defaultdict(list)
        for (topic, p), (offset, limit) in self.wanted.items():
            if known.get((topic, p)) != (offset, limit):
                changed[topic].append((p, offset, limit))
        forgotten: dict[str, list[int]] = collections.defaultdict(list)
        for topic, p in known:
            if (topic, p) not in self.wanted:
                forgotten[topic].append(p)
        self.sent = list(changed.items())
        self.forgotten = list(forgotten.items())

    def build(self, request_struct_class: Any) -> Any:
        """The request at the version agreed with the broker: with the session from v7, aiokafka's own below it."""
        version = request_struct_class.API_VERSION
        if version < 7:
            return super().build(request_struct_class)
        topics: list[tuple[str, list[tuple[int, ...]]]]
        if version >= 9:  # with current_leader_epoch (unknown: -1); log_start_offset is the consumer's -1
            topics = [(t, [(p, -1, offset, -1, limit) for p, offset, limit in ps]) for t, ps in self.sent]
        else:
            topics = [(t, [(p, offset, -1, limit) for p, offset, limit in ps]) for t, ps in self.sent]
        args: list[object] = [
            -1, self._max_wait_ms, self._min_bytes, self._max_bytes, self._isolation_level, self.session_id, self.epoch,
            topics, self.forgotten,
        ]
        if version >= 11:
            args.append(self._rack_id)
        return request_struct_class(*args)


class _SessionClient:
    """The fetcher's client, whose ``send`` keeps each fetch session in step with its answers; the rest is the client's."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        if not isinstance(request, SessionRequest):
            return await self._client.send(node_id, request, **kwargs)
        session = request.session
        try:
            response = await self._client.send(node_id, request, **kwargs)
            error = SESSION_ERRORS.get(getattr(response, "error_code", 0))
            if error is not None:  # evicted, or out of step: ask again at once, in full, under a new session
                log.info("fetch session %s on broker %s: %s; opening a new one", request.session_id, node_id, error)
                session.lost("broker")
                request = SessionRequest(session, request, full=True)
                response = await self._client.send(node_id, request, **kwargs)
        except BaseException:  # failed or cancelled: whether the broker saw this epoch is unknown
            session.lost("request")
            raise
        (_INCREMENTAL if request.epoch else _FULL).inc()
        session.answered(request, response)
        return response


class SessionFetcher(Fetcher):  # type: ignore[misc]
    """aiokafka's fetcher, its fetches made in sessions (:func:`use_fetch_sessions` makes one of a running fetcher)."""

    _sessions: dict[int, FetchSession]
    _leader_for: Any  # the cluster metadata's leader_for_partition

    def _select_read_replica(self, tp: Any) -> Any:
        """The partition's leader, unless the broker named a preferred replica (KIP-392: only for a consumer with a rack).

        aiokafka's own also reads the clock, and the cluster through the wrapped client, for each
        partition of each round: 1.2 % of the worker's samples at 208/s.
        """
        if self._preferred_read_replica:
            return super()._select_read_replica(tp)
        return self._leader_for(tp)

    def _get_actions_per_node(self, assignment: Any) -> Any:
        fetch_requests, *rest = super()._get_actions_per_node(assignment)
        sessions = self._sessions
        requests = []
        for node_id, fetch in fetch_requests:
            session = sessions.get(node_id)
            if session is None:
                session = sessions[node_id] = FetchSession(node_id)
            requests.append((node_id, session.request(fetch)))
        return (requests, *rest)


def use_fetch_sessions(consumer: Any) -> None:
    """Make the started aiokafka *consumer*'s fetches incremental fetch sessions from its next round on."""
    fetcher = consumer._fetcher
    if type(fetcher) is not Fetcher:
        raise RuntimeError(f"use_fetch_sessions needs a started consumer with aiokafka's Fetcher, found {type(fetcher).__name__}")
    fetcher._sessions = {}
    fetcher._leader_for = fetcher._client.cluster.leader_for_partition
    fetcher._client = _SessionClient(fetcher._client)
    fetcher.__class__ = SessionFetcher


async def close_fetch_sessions(consumer: Any, timeout_s: float = 1.0) -> int:
    """End the started *consumer*'s fetches and close its fetch sessions on their brokers; returns how many were closed.

    For a consumer about to stop: its fetcher is closed first (a request of a closed session
    would open a new one), then each broker holding one of its sessions is sent a request
    naming no partition with epoch -1, waiting up to *timeout_s* for each answer.  A broker that
    does not answer (an outage) keeps the session until it needs the slot, as before.  A
    consumer whose fetcher is not a :class:`SessionFetcher` is left alone (0).
    """
    fetcher = consumer._fetcher
    if not isinstance(fetcher, SessionFetcher):
        return 0
    try:
        await fetcher.close()
    except asyncio.CancelledError:  # a fetch task cancelled before it ran (aiokafka awaits them); not this one
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    fetcher._pending_tasks.clear()  # all done: the consumer's stop closes the fetcher again
    client = fetcher._client._client  # (the client _SessionClient wraps: these answers are not a session's)
    closed = 0
    for session in fetcher._sessions.values():
        if session.session_id == NO_SESSION or not session.supported:
            continue
        request = SessionRequest(session, FetchRequest(0, 1, 1, 0, []), final=True)
        try:
            response = await asyncio.wait_for(client.send(session.node_id, request), timeout_s)
        except Exception as exc:  # stopping: the broker evicts it in time
            log.info("fetch session %s on broker %s not closed: %r", session.session_id, session.node_id, exc)
        else:
            if response.error_code:
                log.info("fetch session %s on broker %s not closed: error %s", session.session_id, session.node_id,
                         response.error_code)
            else:
                closed += 1
        session.session_id, session.epoch, session.known = NO_SESSION, 0, {}
    return closed
