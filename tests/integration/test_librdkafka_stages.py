"""The batch stages on librdkafka (``CX_STAGE_CLIENT=librdkafka``): the same tests, with the stages' client swapped.

Every other test runs the stages on the default client, aiokafka.  This module runs again, on
engines of its own whose stages' consumer and producer are librdkafka's (cxstream/streams/rdkafka.py):
the pipeline end to end (contexts, assignments, duplicates, dead letters), local delivery with one
and two workers, exactly once (transactions, offsets past their markers); and
``test_librdkafka_outage.py`` the Redis and broker outages.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import RunningEngine
from tests.integration.helpers import stages_on_librdkafka  # noqa: F401  (autouse: this module's engines)
from tests.integration.test_exactly_once import eos_engine, test_routes_with_transactions_and_commits_past_their_markers  # noqa: F401
from tests.integration.test_local_delivery import (  # noqa: F401
    engines,
    test_local_delivery_gives_the_same_contexts_and_assignments_as_the_broker,
    test_two_workers_deliver_locally_only_what_they_own_and_lose_nothing,
)
from tests.integration.test_pipeline import (  # noqa: F401
    test_contact_waits_in_queue_until_an_advisor_frees_up,
    test_duplicate_event_is_applied_once,
    test_interaction_in_context_in_redis_assignment_out,
    test_malformed_events_go_to_the_dead_letter_topic_with_reason,
)

pytestmark = pytest.mark.librdkafka  # deselected by default: make test-librdkafka


def test_the_stages_ran_on_librdkafka(engine: RunningEngine) -> None:
    """The engine of this module's pipeline tests logged its stages' client (so the tests above ran on it)."""
    assert "stages: Kafka client librdkafka" in engine.output()
