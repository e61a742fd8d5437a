"""The restart tests of ``test_restart.py`` with the batch stages on librdkafka (``CX_STAGE_CLIENT=librdkafka``).

Ctrl-C and run again keeps everything; ``kill -9`` in the middle of a replay loses nothing the
broker acknowledged and counts nothing twice, with local delivery and through the broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_restart import (  # noqa: F401
    Engine,
    new_engine,
    test_ctrl_c_then_run_again_keeps_contexts_links_roster_and_queues,
    test_kill_9_mid_replay_loses_nothing_acknowledged_and_counts_nothing_twice,
)

pytestmark = pytest.mark.librdkafka  # deselected by default: make test-librdkafka


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = new_engine(tmp_path, CX_STAGE_CLIENT="librdkafka")
    try:
        yield e
        if e.runs:
            assert "stages: Kafka client librdkafka" in e.log.read_text(), "the engine ran its stages on another client"
    finally:
        e.stop()
