"""``cxstream ... --help`` answers every command and subcommand with its usage and exit status 0."""

from __future__ import annotations

import pytest

from cxstream import cli


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("group,modules", [("eval", cli.EVALS), ("bench", cli.BENCHES)])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_eval_and_bench_help_list_their_commands(group: str, modules: dict[str, str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([group, flag], capsys)
    assert code == 0, err
    assert f"usage: cxstream {group}" in out
    for name in modules:
        assert f"  {name} " in out, f"{name} not listed in:\n{out}"


@pytest.mark.parametrize("group", ["eval", "bench"])
def test_eval_and_bench_alone_list_their_commands_as_a_usage_error(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([group], capsys)
    assert code == 2 and "commands:" in err and "rest" not in err


SUBCOMMANDS = [
    [], ["run"], ["serve"], ["replay"], ["schemas"], ["schemas", "export"], ["schemas", "docs"], ["settings"],
    *(["eval", name] for name in cli.EVALS), *(["bench", name] for name in cli.BENCHES),
]


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=lambda a: " ".join(a) or "cxstream")
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([*argv, "--help"], capsys)
    assert code == 0, err
    assert out.startswith(f"usage: cxstream {' '.join(argv)}".rstrip()), out[:200]
