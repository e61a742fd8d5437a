"""The librdkafka client's pure parts: its settings and its log filter (the client itself: tests/integration/test_librdkafka_*.py)."""

from __future__ import annotations

import logging

import pytest

from cxstream.streams.rdkafka import _Repeats, consumer_config, producer_config


def test_the_consumer_commits_by_hand_and_the_producer_is_idempotent_and_partitions_as_java_does() -> None:
    c = consumer_config(bootstrap="k:9092", group_id="g", fetch_wait_ms=10, session_ms=6000, isolation_level="read_committed")
    assert (c["enable.auto.commit"], c["isolation.level"], c["fetch.wait.max.ms"], c["socket.nagle.disable"]) == (
        False, "read_committed", 10, True,
    )
    assert c["max.poll.interval.ms"] >= c["session.timeout.ms"]
    p = producer_config(bootstrap="k:9092", linger_ms=0, max_request_bytes=1 << 20, delivery_timeout_s=300, transactional_id=None)
    assert (p["enable.idempotence"], p["acks"], p["partitioner"], p["message.timeout.ms"]) == (True, "all", "murmur2_random", 300_000)
    assert "transactional.id" not in p
    t = producer_config(bootstrap="k:9092", linger_ms=0, max_request_bytes=1 << 20, delivery_timeout_s=300, transactional_id="a.tx")
    assert t["transactional.id"] == "a.tx" and t["transaction.timeout.ms"] > t["message.timeout.ms"]


def test_repeated_log_lines_pass_once_per_period_and_say_how_many_were_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("cxstream.streams.rdkafka.time.monotonic", lambda: now[0])
    f = _Repeats(every_s=30.0)

    def line(msg: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.ERROR, __file__, 1, msg, None, None)

    assert f.filter(line("Connect to 127.0.0.1:9092 failed"))
    assert not f.filter(line("Connect to 127.0.0.1:9093 failed")), "the same line but for its digits"
    assert f.filter(line("another line"))
    now[0] += 31
    again = line("Connect to 127.0.0.1:9092 failed")
    assert f.filter(again) and again.getMessage().endswith("(and 1 like it in the last 31 s)")
