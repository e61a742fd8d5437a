"""The learner's own process: its metrics merged into the worker's, and its place among the engine's children."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from cxstream.agents.learner import Learner
from cxstream.agents.learnproc import LearnerProcess, WithLearner
from cxstream.streams.embedded import free_port
from cxstream.streams.settings import Settings


def exposition(registry: object) -> list[tuple[str, str, list[tuple[str, dict[str, str], float]]]]:
    """What Prometheus would read: (family, type, samples); it refuses a family declared twice."""
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))  # type: ignore[arg-type]
    names = [f.name for f in families]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
    return [(f.name, f.type, [(s.name, s.labels, s.value) for s in f.samples]) for f in families]


def test_the_learners_series_join_the_workers_families_labelled_and_the_apis_own_stay_out() -> None:
    worker, learner = CollectorRegistry(), CollectorRegistry()
    for registry, n in ((worker, 3), (learner, 1)):
        Counter("cx_redis_errors", "Errors.", registry=registry).inc(n)
        Histogram("cx_wait_seconds", "Waits.", registry=registry, buckets=(0.1,)).observe(0.05)
        Histogram("cx_http_request_seconds", "The API's.", registry=registry)  # the API exports its own
    Counter("cx_labels", "Labels learned.", ["model"], registry=learner).labels("churn").inc(7)
    Gauge("cx_model_version", "Version.", ["model"], registry=worker).labels("churn").set(4)
    Gauge("cx_model_version", "Version.", ["model"], registry=learner).labels("churn").set(5)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=learner)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        merged = WithLearner(worker, lambda: url, keep=lambda name: name != "cx_http_request_seconds")
        found = {name: (kind, samples) for name, kind, samples in exposition(merged)}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(2)
    assert found["cx_learner_metrics_up"][1] == [("cx_learner_metrics_up", {}, 1.0)]
    errors = [(labels, v) for name, labels, v in found["cx_redis_errors"][1] if name == "cx_redis_errors_total"]
    assert errors == [({}, 3.0), ({"process": "learner"}, 1.0)]
    assert [s for s in found["cx_labels"][1] if s[0] == "cx_labels_total"] == [
        ("cx_labels_total", {"model": "churn", "process": "learner"}, 7.0)]
    assert sorted(v for _, _, v in found["cx_model_version"][1]) == [4.0, 5.0]  # the scorer's and the learner's
    counts = [(labels, v) for name, labels, v in found["cx_wait_seconds"][1] if name == "cx_wait_seconds_count"]
    assert counts == [({}, 1.0), ({"process": "learner"}, 1.0)]
    assert [s[1] for s in found["cx_http_request_seconds"][1] if s[0] == "cx_http_request_seconds_count"] == [{}]


def test_a_learner_that_does_not_answer_is_said_and_the_workers_metrics_still_go_out() -> None:
    worker = CollectorRegistry()
    Counter("cx_redis_errors", "Errors.", registry=worker).inc()
    down = f"http://127.0.0.1:{free_port('127.0.0.1')}/metrics"
    for url in (down, None):  # refused; or no learner process yet (starting, restarting)
        found = {name: samples for name, _, samples in exposition(WithLearner(worker, lambda u=url: u, timeout_s=0.5))}
        assert found["cx_learner_metrics_up"] == [("cx_learner_metrics_up", {}, 0.0)]
        assert ("cx_redis_errors_total", {}, 1.0) in found["cx_redis_errors"]


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
