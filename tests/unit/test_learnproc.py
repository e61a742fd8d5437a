"""The learner's own process: its place among the engine's children, and when it publishes (its metrics: test_loopback.py)."""

from __future__ import annotations

import time

from cxstream.agents.learner import Learner
from cxstream.agents.learnproc import LearnerProcess
from cxstream.streams.settings import Settings


def test_the_learner_process_is_one_child_running_cxstream_learn() -> None:
    proc = LearnerProcess(Settings(broker_url="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0"))
    assert proc.count == 1 and proc.command() == ["learn"] and proc.metrics_url is None


def test_labels_publish_the_models_no_sooner_than_the_minimum_interval_after_the_last_time() -> None:
    learner = Learner()
    assert not learner.publication_due(every=3, min_gap_s=5.0)  # nothing learned
    learner.pending["churn"] = 3
    assert learner.publication_due(every=3, min_gap_s=5.0)  # the first one goes at once
    learner.published_at = time.monotonic()
    assert not learner.publication_due(every=3, min_gap_s=5.0)  # the labels wait for the interval
    assert learner.publication_due(every=3, min_gap_s=0.0)
    learner.published_at = time.monotonic() - 5.0
    assert learner.publication_due(every=3, min_gap_s=5.0)
