"""The worker's loopback endpoint (cxstream/serve/loopback.py): its metrics with the learner's merged in, /live, and a render that lets the loop turn."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from cxstream.serve.loopback import LoopbackEndpoint, fetch_text, live_url, render
from cxstream.streams.embedded import free_port


def exposition(text: str) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    """What Prometheus would read: family -> (type, samples); it refuses a family declared twice."""
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
    return {f.name: (f.type, [(s.name, s.labels, s.value) for s in f.samples]) for f in families}


async def get(endpoint: LoopbackEndpoint, path: str, method: str = "GET") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


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
    url = f"http://127.0.0.1:{server.server_port}/metrics"

    async def scrape() -> tuple[int, bytes]:
        endpoint = LoopbackEndpoint(worker, learner_url=lambda: url, keep=lambda name: name.removesuffix("_created") != "cx_http_request_seconds")
        await endpoint.start()
        try:
            return await get(endpoint, "/metrics")
        finally:
            await endpoint.stop()

    try:
        status, body = asyncio.run(scrape())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(2)
    assert status == 200
    found = exposition(body.decode())
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

    async def scrape(url: str | None) -> bytes:
        endpoint = LoopbackEndpoint(worker, learner_url=lambda: url, learner_timeout_s=0.5)
        await endpoint.start()
        try:
            return await endpoint.metrics()
        finally:
            await endpoint.stop()

    for url in (down, None):  # refused; or no learner process yet (starting, restarting)
        found = exposition(asyncio.run(scrape(url)).decode())
        assert found["cx_learner_metrics_up"][1] == [("cx_learner_metrics_up", {}, 0.0)]
        assert ("cx_redis_errors_total", {}, 1.0) in found["cx_redis_errors"][1]


def test_without_a_learner_process_the_text_is_the_workers_own() -> None:
    worker = CollectorRegistry()
    Counter("cx_redis_errors", "Errors.", ["kind"], registry=worker).labels("write").inc()
    Histogram("cx_wait_seconds", "Waits.", ["stage"], registry=worker).labels("ingest").observe(0.2)
    Gauge("cx_up", "Up.", registry=worker).set(1)
    endpoint = LoopbackEndpoint(worker)
    assert asyncio.run(endpoint.metrics()) == generate_latest(worker)  # (no cx_learner_metrics_up)


def test_live_answers_from_the_loop_and_other_requests_are_refused() -> None:
    async def main() -> list[tuple[int, bytes]]:
        endpoint = LoopbackEndpoint(CollectorRegistry())
        await endpoint.start()
        try:
            assert live_url(endpoint.url) == f"http://127.0.0.1:{endpoint.port}/live"
            text = await fetch_text(live_url(endpoint.url), 2.0)
            assert '"status":"alive"' in text
            return [await get(endpoint, "/live"), await get(endpoint, "/nothing"), await get(endpoint, "/metrics", "POST")]
        finally:
            await endpoint.stop()

    (live, _), (missing, _), (post, _) = asyncio.run(main())
    assert (live, missing, post) == (200, 404, 405)


def test_the_render_gives_the_loop_a_turn_between_families_and_writes_what_generate_latest_writes() -> None:
    registry = CollectorRegistry()
    for i in range(200):
        Histogram(f"cx_h{i}_seconds", "H.", ["stage"], registry=registry).labels("context").observe(i / 100)

    async def turns(slice_s: float) -> tuple[int, bytes]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        ticks = 0
        text = await render(registry, slice_s)
        done = True
        counted = ticks
        await task
        return counted, text

    sliced, text = asyncio.run(turns(0.0))
    whole, _ = asyncio.run(turns(60.0))
    assert text == generate_latest(registry)
    assert sliced >= 150 and whole == 0  # a turn after each family; none when the slice is longer than the render


def test_a_render_that_fails_is_a_500_and_the_endpoint_goes_on() -> None:
    class Broken:
        def collect(self) -> list[object]:
            raise RuntimeError("a collector's bug")

    async def main() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        endpoint = LoopbackEndpoint(Broken())
        await endpoint.start()
        try:
            return await get(endpoint, "/metrics"), await get(endpoint, "/live")
        finally:
            await endpoint.stop()

    (status, body), (live, _) = asyncio.run(main())
    assert (status, live) == (500, 200) and b"see its log" in body
