"""A Redis outage, then a broker outage, with the batch stages on the lean producer (``CX_STAGE_PRODUCER=lean``).

The same test as ``test_outages.py`` (which runs on aiokafka's producer): the engine rides both out
without a restart, loses nothing and counts nothing twice.  The producer's requests in flight when
the broker goes are sent again once it answers (the same batches, kept once by their sequences).
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import RunningEngine
from tests.integration.helpers import stages_on_lean_producer  # noqa: F401  (autouse: this module's engines)
from tests.integration.test_outages import engine, servers_to_stop, test_redis_then_broker_outage  # noqa: F401

pytestmark = pytest.mark.integration


def test_the_outage_engine_sent_on_the_lean_producer(engine: RunningEngine) -> None:  # noqa: F811
    assert "stages: Kafka client aiokafka (the lean producer)" in engine.output()
