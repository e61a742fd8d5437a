"""The Faust stage runtime takes every call the stage builders make on the batch runtime.

The stage builders (``cxstream/agents/*.stage``) are typed against
:class:`~cxstream.streams.batch.BatchRuntime`, and the engine hands them a
:class:`~cxstream.streams.faust_stages.FaustStageRuntime` for ``CX_STAGE_RUNTIME=faust`` (the naive
Faust reference of the benchmarks).  mypy cannot see that second use, so an option added to one
runtime only failed at run time (``fast_path_input``, December 7).  These tests compare the two
runtimes' signatures of every method a builder calls, read from the builders' own source.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import cxstream.agents
from cxstream.streams.batch import BatchRuntime, BatchStage, Output
from cxstream.streams.faust_stages import FaustOutput, FaustStage, FaustStageRuntime

AGENTS = Path(cxstream.agents.__file__).parent
# Used only by the identity fast path, which runs on the batch runtime only (Settings refuses it
# elsewhere, and 'auto' is off there): cxstream/agents/fastpath.py, ingest.py's FastPath branch.
FAST_PATH_ONLY = {"table_changelog", "on_start", "on_stop", "alone", "group_told", "assignments", "bootstrap", "committed_offset", "consumer"}


def _runtime_calls() -> set[str]:
    """The attributes the stage builders read on a parameter named ``runtime``."""
    names: set[str] = set()
    for path in AGENTS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "runtime":
                names.add(node.attr)
    return names


def _params(fn: object) -> dict[str, tuple[inspect._ParameterKind, object]]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    return {name: (p.kind, p.default) for name, p in sig.parameters.items() if name != "self"}


def test_the_builders_calls_are_found() -> None:
    calls = _runtime_calls()
    assert {"stage", "table", "topic", "send_now"} <= calls, calls


@pytest.mark.parametrize("name", sorted(_runtime_calls() - FAST_PATH_ONLY))
def test_the_faust_runtime_takes_what_the_batch_runtime_takes(name: str) -> None:
    assert hasattr(BatchRuntime, name), f"the builders call runtime.{name}, which the batch runtime lacks"
    assert hasattr(FaustStageRuntime, name), f"the builders call runtime.{name}, which the Faust stage runtime lacks"
    batch, faust = getattr(BatchRuntime, name), getattr(FaustStageRuntime, name)
    assert callable(batch) == callable(faust), name
    if callable(batch):
        assert inspect.iscoroutinefunction(batch) == inspect.iscoroutinefunction(faust), name
        theirs = _params(faust)
        for param, (kind, default) in _params(batch).items():
            assert param in theirs, f"FaustStageRuntime.{name} does not take {param!r}"
            assert theirs[param] == (kind, default), f"FaustStageRuntime.{name}({param}): {theirs[param]} against {(kind, default)}"


def test_the_stages_outputs_take_the_same_arguments() -> None:
    assert _params(FaustStage.output) == _params(BatchStage.output)


def test_the_outputs_take_the_same_records() -> None:
    # (tracked: the identity fast path's, on the batch runtime only)
    assert _params(FaustOutput.send) == {k: v for k, v in _params(Output.send).items() if k != "tracked"}
