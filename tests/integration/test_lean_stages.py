"""The batch stages with the lean producer (``CX_STAGE_PRODUCER=lean``): the same tests, with the stages' producer swapped.

Every other test runs the stages on aiokafka's producer.  This module runs again, on engines of its
own whose stages send on cxstream/streams/leanproducer.py: the pipeline end to end (contexts,
assignments, duplicates, dead letters), local delivery with one and two workers, the identity fast
path's order per customer (its records' futures), a restart that restores the contexts and the
router's state from the changelogs the producer wrote; and ``test_lean_outage.py`` the Redis and
broker outages.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import RunningEngine
from tests.integration.helpers import stages_on_lean_producer  # noqa: F401  (autouse: this module's engines)
from tests.integration.test_identity_fastpath import (  # noqa: F401
    test_one_worker_sends_settled_events_past_identity_and_keeps_each_customers_order,
)
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
from tests.integration.test_replay_and_recovery import test_restarted_engine_recovers_contexts_and_router_state  # noqa: F401

pytestmark = pytest.mark.integration


def test_the_stages_sent_on_the_lean_producer(engine: RunningEngine) -> None:
    """The engine of this module's pipeline tests logged its stages' producer (so the tests above ran on it)."""
    assert "stages: Kafka client aiokafka (the lean producer)" in engine.output()
