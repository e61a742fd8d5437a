"""``POST /customers/{id}/erase`` records when the request was made and when it was accepted, in that order."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from cxstream.schemas import Identifiers
from cxstream.serve import erasure
from cxstream.serve.erasure import ErasureRequests, erasure_status


class FakeRedis:
    """The few hash commands the API's erasure side uses, in memory."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, float]] = {}

    def pipeline(self, transaction: bool = True) -> FakeRedis:
        return self

    async def __aenter__(self) -> FakeRedis:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def hset(self, key: str, mapping: dict[str, float]) -> None:
        self.hashes.setdefault(key, {}).update(mapping)

    def expire(self, key: str, seconds: int) -> None:
        pass

    async def execute(self) -> list[Any]:
        return []

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return {k.encode(): repr(v).encode() for k, v in self.hashes.get(key, {}).items()}


async def test_accepted_is_never_before_requested_even_when_the_wall_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = itertools.count(1000.0, -0.25)  # every reading earlier than the one before (an NTP step back)
    monkeypatch.setattr(erasure.time, "time", lambda: next(clock))
    client = FakeRedis()
    published: list[bytes] = []

    async def publish(key: bytes, value: bytes) -> None:
        published.append(key)

    request = await ErasureRequests(publish, client).submit(Identifiers(email="jane@example.com"))  # type: ignore[arg-type]
    assert published == [request.event_id.encode()]
    status = await erasure_status(client, request.event_id)  # type: ignore[arg-type]
    assert status is not None
    assert status["requested_at"] == request.occurred_at
    assert status["accepted_at"] >= status["requested_at"]  # type: ignore[operator]
