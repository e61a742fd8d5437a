"""The fetch session's bookkeeping (cxstream/streams/fetchsession.py): what each request names, how answers move it.

The broker's side is exercised in tests/integration/test_fetch_sessions.py.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.protocol.fetch import FetchRequest, FetchRequest_v4, FetchRequest_v8, FetchRequest_v11

from cxstream.streams import metrics
from cxstream.streams.fetchsession import MAX_EPOCH, FetchSession, SessionRequest, _SessionClient, use_fetch_sessions


def fetch(*partitions: tuple[str, int, int]) -> FetchRequest:
    """aiokafka's full request for (topic, partition, offset), 1 MB each."""
    by_topic: dict[str, list[tuple[int, int, int]]] = {}
    for topic, p, offset in partitions:
        by_topic.setdefault(topic, []).append((p, offset, 1 << 20))
    return FetchRequest(10, 1, 50 << 20, 0, list(by_topic.items()), rack_id="r1")


def answer(session_id: int = 9, *partitions: tuple[str, int], error: int = 0, version: int = 11) -> Any:
    """A fetch answer holding *partitions* (empty records)."""
    by_topic: dict[str, list[tuple[Any, ...]]] = {}
    for topic, p in partitions:
        by_topic.setdefault(topic, []).append((p, 0, 100, 100, 0, [], -1, b""))
    return SimpleNamespace(API_VERSION=version, error_code=error, session_id=session_id, topics=list(by_topic.items()))


def lost(reason: str) -> float:
    return float(metrics.FETCH_SESSIONS_LOST.labels(reason)._value.get())


def opened(session: FetchSession, *partitions: tuple[str, int, int]) -> SessionRequest:
    request = SessionRequest(session, fetch(*partitions))
    session.answered(request, answer(9))
    return request


def test_the_first_request_is_full_and_the_answer_opens_the_session() -> None:
    session = FetchSession(1)
    request = SessionRequest(session, fetch(("a", 0, 5), ("a", 1, 7), ("b", 0, 0)))
    assert (request.session_id, request.epoch, request.forgotten) == (0, 0, [])
    assert request.sent == request.topics
    session.answered(request, answer(9, ("a", 0)))
    assert (session.session_id, session.epoch) == (9, 1)
    assert session.known == {("a", 0): (5, 1 << 20), ("a", 1): (7, 1 << 20), ("b", 0): (0, 1 << 20)}
    assert (session.requests, session.partitions_sent, session.partitions_answered) == (1, 3, 1)


def test_later_requests_name_only_changed_offsets_forget_what_is_no_longer_fetched_and_count_epochs() -> None:
    session = FetchSession(1)
    opened(session, ("a", 0, 5), ("a", 1, 7), ("b", 0, 0))
    same = SessionRequest(session, fetch(("a", 0, 5), ("a", 1, 7), ("b", 0, 0)))
    assert (same.session_id, same.epoch, same.sent, same.forgotten) == (9, 1, [], [])
    session.answered(same, answer(9))
    moved = SessionRequest(session, fetch(("a", 1, 12), ("b", 0, 0), ("c", 3, 0)))  # a-0 held back: its records are out
    assert moved.epoch == 2
    assert moved.sent == [("a", [(1, 12, 1 << 20)]), ("c", [(3, 0, 1 << 20)])]
    assert moved.forgotten == [("a", [0])]
    session.answered(moved, answer(9, ("a", 1)))
    assert session.epoch == 3 and set(session.known) == {("a", 1), ("b", 0), ("c", 3)}


def test_the_epoch_starts_again_at_one_after_the_largest() -> None:
    session = FetchSession(1)
    opened(session, ("a", 0, 0))
    session.epoch = MAX_EPOCH
    last = SessionRequest(session, fetch(("a", 0, 0)))
    session.answered(last, answer(9))
    assert session.epoch == 1


def test_a_session_error_loses_the_session_and_the_next_request_closes_it_and_opens_another() -> None:
    session = FetchSession(1)
    opened(session, ("a", 0, 0))
    before = lost("broker")
    request = SessionRequest(session, fetch(("a", 0, 3)))
    session.answered(request, answer(0, error=71))  # INVALID_FETCH_SESSION_EPOCH
    assert (session.epoch, session.known) == (0, {}) and lost("broker") == before + 1
    again = SessionRequest(session, fetch(("a", 0, 3)))
    assert (again.session_id, again.epoch, again.sent) == (9, 0, again.topics)  # session 9 closed, a new one opened


def test_a_broker_with_no_room_for_a_session_keeps_getting_full_requests() -> None:
    session = FetchSession(1)
    request = SessionRequest(session, fetch(("a", 0, 0), ("a", 1, 0)))
    session.answered(request, answer(0))
    assert (session.session_id, session.epoch) == (0, 0)
    assert SessionRequest(session, fetch(("a", 0, 0), ("a", 1, 0))).sent == request.topics


def test_partitions_answered_but_not_asked_for_are_left_out_and_the_session_is_started_again() -> None:
    session = FetchSession(1)
    opened(session, ("a", 0, 0))
    request = SessionRequest(session, fetch(("a", 0, 0)))
    response = answer(9, ("a", 0), ("a", 5))
    session.answered(request, response)
    assert [(t, [p[0] for p in ps]) for t, ps in response.topics] == [("a", [0])]
    assert session.epoch == 0


def test_a_broker_older_than_fetch_v7_gets_aiokafkas_own_requests_from_then_on() -> None:
    session = FetchSession(1)
    request = session.request(fetch(("a", 0, 0)))
    assert isinstance(request, SessionRequest)
    built = request.build(FetchRequest_v4)
    assert built.API_VERSION == 4 and not hasattr(built, "session_id")
    before = lost("unsupported")
    session.answered(request, answer(0, ("a", 0), version=4))
    assert lost("unsupported") == before + 1
    plain = fetch(("a", 0, 0))
    assert session.request(plain) is plain


def test_the_request_built_carries_the_session_the_changed_partitions_and_the_forgotten_ones() -> None:
    session = FetchSession(1)
    opened(session, ("a", 0, 5), ("a", 1, 7))
    request = SessionRequest(session, fetch(("a", 1, 8)))
    v11 = request.build(FetchRequest_v11)
    assert (v11.session_id, v11.session_epoch, v11.rack_id) == (9, 1, "r1")
    assert v11.topics == [("a", [(1, -1, 8, -1, 1 << 20)])]
    assert v11.forgotten_topics_data == [("a", [0])]
    v8 = request.build(FetchRequest_v8)
    assert v8.topics == [("a", [(1, 8, -1, 1 << 20)])]
    assert isinstance(v11.encode(), bytes) and isinstance(v8.encode(), bytes)


def test_the_closing_request_names_the_session_at_epoch_minus_one_and_no_partition() -> None:
    session = FetchSession(1)
    opened(session, ("a", 0, 5), ("a", 1, 7))
    request = SessionRequest(session, FetchRequest(0, 1, 1, 0, []), final=True)
    v11 = request.build(FetchRequest_v11)
    assert (v11.session_id, v11.session_epoch, v11.topics, v11.forgotten_topics_data) == (9, -1, [], [])
    assert isinstance(v11.encode(), bytes)


class FakeClient:
    """Answers with the given answers in turn (an exception is raised), recording what it was sent."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.sent: list[Any] = []
        self.cluster = "the cluster"

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        self.sent.append(request)
        got = self.answers.pop(0)
        if isinstance(got, BaseException):
            raise got
        return got


def test_the_client_asks_again_in_full_at_once_when_the_broker_lost_the_session() -> None:
    session = FetchSession(1)
    opened(session, ("a", 0, 0), ("a", 1, 0))
    client = FakeClient(answer(0, error=70), answer(12, ("a", 1)))  # FETCH_SESSION_ID_NOT_FOUND, then a new session
    wrapped = _SessionClient(client)
    assert wrapped.cluster == "the cluster"  # everything else is the client's
    response = asyncio.run(wrapped.send(1, SessionRequest(session, fetch(("a", 0, 0), ("a", 1, 4)))))
    assert response.session_id == 12
    first, second = client.sent
    assert (first.epoch, second.session_id, second.epoch, second.sent) == (1, 9, 0, second.topics)
    assert (session.session_id, session.epoch) == (12, 1)


def test_a_failed_or_cancelled_request_loses_the_session() -> None:
    session = FetchSession(1)
    opened(session, ("a", 0, 0))
    before = lost("request")
    wrapped = _SessionClient(FakeClient(ConnectionError("gone")))
    with pytest.raises(ConnectionError):
        asyncio.run(wrapped.send(1, SessionRequest(session, fetch(("a", 0, 1)))))
    assert session.epoch == 0 and lost("request") == before + 1


def test_only_a_started_consumer_with_aiokafkas_fetcher_can_use_sessions() -> None:
    with pytest.raises(RuntimeError, match="started consumer"):
        use_fetch_sessions(SimpleNamespace(_fetcher=None))
