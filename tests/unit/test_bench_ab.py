"""bench/pipeline/ab.py: each run's yardstick (raw aiokafka's drain on its broker) is asked for and kept."""

from __future__ import annotations

from pathlib import Path

from tests.scripts import load_script

ab = load_script("bench/pipeline/ab.py")


def test_a_runs_summary_keeps_its_yardstick_and_none_when_it_had_none() -> None:
    run = {"final": {"e2e": {"p99_ms": 20.0}}, "yardstick": {"events": 20000, "raw_aiokafka_rate": 71234.5}}
    assert ab.summary(run)["raw_aiokafka_rate"] == 71234.5
    assert ab.summary({"final": {}})["raw_aiokafka_rate"] is None


def test_the_yardstick_is_asked_only_of_a_bench_that_takes_it(tmp_path: Path) -> None:
    assert ab.knows_yardstick(None)  # this tree's bench
    old = tmp_path / "cxstream" / "bench"
    old.mkdir(parents=True)
    (old / "loadgen.py").write_text('p.add_argument("--skip-refs", action="store_true")\n')
    assert not ab.knows_yardstick(str(tmp_path))  # a harness tree from before it: its runs go without
    assert not ab.knows_yardstick(str(tmp_path / "older"))  # from before the bench had its home in cxstream/bench
