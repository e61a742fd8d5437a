"""Snapshots in Redis of an older model format: the learner starts that model afresh, scorers keep theirs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from cxstream.agents.learner import Learner, restore
from cxstream.intel.churn import ChurnModel
from cxstream.intel.snapshot import dump_snapshot
from cxstream.streams.embedded import EmbeddedRedis
from cxstream.streams.modelstore import ModelCache, save_snapshot

pytestmark = pytest.mark.integration

OLD_FORMAT = dump_snapshot("cxstream.intel.ChurnModel", 41, {"names": ["contract=two_year"]}, {})


@pytest.fixture()
async def client(tmp_path: Path) -> AsyncIterator[aioredis.Redis]:
    with EmbeddedRedis(tmp_path / "redis") as server:
        c = aioredis.Redis.from_url(server.url)
        yield c
        await c.aclose()


async def test_learner_starts_a_model_afresh_after_the_refused_snapshot(client: aioredis.Redis) -> None:
    await save_snapshot(client, "churn", 41, OLD_FORMAT)
    learner = Learner()
    await restore(learner, client)
    assert learner.churn.n_learned == 0
    assert learner.churn.version == 41
    learner.churn.learn_one({"contract": "two_year"}, False)
    assert learner.churn.publish() and learner.churn.version > 41  # the next snapshot supersedes the refused one


async def test_scorer_keeps_its_model_and_does_not_retry_a_refused_snapshot(client: aioredis.Redis) -> None:
    cache = ModelCache("churn", ChurnModel, ChurnModel.from_bytes)
    await save_snapshot(client, "churn", 41, OLD_FORMAT)
    assert not await cache.refresh(client)
    assert cache.version == 0 and cache.model.n_learned == 0
    assert not await cache.refresh(client)  # the same version is not loaded again
    fresh = ChurnModel()
    fresh.learn_one({"contract": "two_year"}, False)
    fresh.version = 42
    await save_snapshot(client, "churn", 42, fresh.to_bytes())
    assert await cache.refresh(client)
    assert cache.version == 42 and cache.model.n_learned == 1
