"""A Redis outage, then a broker outage, with the batch stages on librdkafka (``CX_STAGE_CLIENT=librdkafka``).

The same test as ``test_outages.py`` (which runs on the default client, aiokafka).  A restarted
broker answers its first metadata requests without the engine's topics; librdkafka then fails the
records queued for them at once, and the stages' producer holds them, and every record sent after,
until the broker knows the partitions again (``RdProducer._hold_back``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import RunningEngine
from tests.integration.test_outages import engine, servers_to_stop, test_redis_then_broker_outage  # noqa: F401

pytestmark = pytest.mark.librdkafka  # deselected by default: make test-librdkafka


@pytest.fixture(scope="module", autouse=True)
def librdkafka() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CX_STAGE_CLIENT", "librdkafka")
        yield


def test_the_outage_engine_ran_on_librdkafka(engine: RunningEngine) -> None:  # noqa: F811
    assert "stages: Kafka client librdkafka" in engine.output()
