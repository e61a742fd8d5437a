"""The pipeline bench's drain (``cxstream bench pipeline --drain-only``): the engine's rate over a backlog.

It must measure the whole pipeline's work, not a shortcut: every record is taken up, every
message is scored by the seeded intent model, every customer event by the churn model.  The
same holds for the naive reference it is compared with: the same stages as plain Faust agents
(``CX_STAGE_RUNTIME=faust``, :mod:`cxstream.streams.faust_stages`).
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from cxstream.bench.loadgen import Bench, Options
from cxstream.bench.workload import Workload, WorkloadConfig


@pytest.mark.parametrize("faust", [False, True], ids=["batch-runtime", "naive-faust-reference"])
def test_drain_runs_every_record_through_every_stage_with_trained_models(servers: tuple[str, str], faust: bool) -> None:
    broker, _ = servers
    opts = Options(customers=200, advisors=20)
    bench = Bench(opts)
    workload = Workload(WorkloadConfig(customers=200, seed=3, advisors=20))
    try:
        result = asyncio.run(bench.engine_drain(broker, workload, 400, faust=faust))
    finally:
        shutil.rmtree(bench.base, ignore_errors=True)
    assert result["events"] == 420 and result["advisor_logins"] == 20
    assert result["rate"] > 0 and result["seconds"] > 0
    assert result["stage_runtime"] == ("faust" if faust else "batch")
    split = result["cpu_by_process"]  # where the machine's CPU went: the engine did the work, the harness waited
    assert set(split) == {"engine", "api", "learner", "redis", "harness", "other"}, split
    assert split["engine"] > split["api"] >= 0 and split["engine"] > split["learner"] >= 0, split  # (the learner's own process)
    work = result["work_done"]
    assert work["cx_events_in_total"].get("accepted", 0) + work["cx_events_in_total"].get("anonymous", 0) == 420
    messages = sum(1 for r in Workload(workload.config, workload.texts).events(400)
                   if getattr(r, "kind", "") == "message" and getattr(r, "text", None) and r.direction == "inbound")
    assert result["models"]["trained"], result["models"]  # the shared data sits beside the checkout (README)
    assert work["cx_model_predict_seconds_count"]["intent"] == messages
    customer_updates = work["cx_context_updates_total"].get("InteractionEvent", 0) + work[
        "cx_context_updates_total"].get("OutcomeEvent", 0)
    assert work["cx_model_predict_seconds_count"]["churn"] >= customer_updates > 0
    assert work["cx_assignments_total"] > 0


def test_the_yardstick_drains_its_records_with_raw_aiokafka_on_the_runs_broker(servers: tuple[str, str]) -> None:
    """``--yardstick-events``: runs made without the references still say how fast their hour was."""
    broker, _ = servers
    bench = Bench(Options(customers=200, advisors=20, skip_refs=True, yardstick_events=500))
    workload = Workload(WorkloadConfig(customers=200, seed=3, advisors=20))
    try:
        found = asyncio.run(bench.yardstick(broker, workload, 500))
    finally:
        shutil.rmtree(bench.base, ignore_errors=True)
    assert found["events"] == 500 and found["raw_aiokafka"]["n"] == 500, found
    assert found["raw_aiokafka_rate"] > 0 and found["raw_aiokafka_rate"] == round(found["raw_aiokafka"]["rate"], 1)
