"""The open-loop lookup client's request selection (cxstream.bench.lookups): pure, no network."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from cxstream.bench import lookups
from cxstream.bench.context_bench import target_path
from cxstream.bench.lookups import auth_headers, lookups_command, parse_paths, path_picker, read_paths
from cxstream.bench.workload import customer_ref


def test_paths_file_lines_are_stripped_and_blank_and_comment_lines_skipped(tmp_path: Path) -> None:
    f = tmp_path / "paths.txt"
    f.write_text("# targets\n/customers/C00042/context\n\n  /customers/context?email=a%40b.org \r\n/customers/C00042/context\n")
    # duplicates are kept: a path listed twice is drawn twice as often
    assert read_paths(f) == ["/customers/C00042/context", "/customers/context?email=a%40b.org", "/customers/C00042/context"]


@pytest.mark.parametrize("text", ["", "\n# only a comment\n", "customers/C1/context\n", "/customers/context?email=a b\n",
                                  "http://127.0.0.1:8080/customers/C1/context\n"])
def test_an_empty_paths_file_or_a_line_that_is_not_a_path_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_paths(text.splitlines())


def test_paths_are_drawn_uniformly_and_reproducibly_with_the_seed() -> None:
    paths = [f"/customers/C{i:05d}/context" for i in range(10)]
    draw = lambda seed: [p() for p in [path_picker(random.Random(seed), paths=paths)] for _ in range(20_000)]  # noqa: E731
    a, b, c = draw(11), draw(11), draw(12)
    assert a == b
    assert a != c
    counts = Counter(a)
    assert set(counts) == set(paths)
    assert all(abs(n - 2000) < 250 for n in counts.values())  # ~uniform (binomial sd ~42)


def test_customers_mode_draws_the_same_customers_as_before() -> None:
    rng = random.Random(11)
    pick = path_picker(random.Random(11), customers=500)
    assert [pick() for _ in range(100)] == [f"/customers/{customer_ref(rng.randrange(500))}/context" for _ in range(100)]


def test_exactly_one_source_of_paths() -> None:
    with pytest.raises(ValueError):
        path_picker(random.Random(1))
    with pytest.raises(ValueError):
        path_picker(random.Random(1), customers=10, paths=["/a"])
    with pytest.raises(ValueError):
        path_picker(random.Random(1), paths=[])


def test_the_command_line_wants_exactly_one_of_customers_and_paths_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.txt"
    f.write_text("/customers/C1/context\n")
    base = ["--url", "http://127.0.0.1:1", "--key", "k"]
    for extra in ([], ["--customers", "10", "--paths-file", str(f)]):
        with pytest.raises(SystemExit) as exc:
            lookups.main(base + extra)
        assert exc.value.code == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(SystemExit) as exc:
        lookups.main([*base, "--paths-file", str(empty)])
    assert exc.value.code == 2
    assert "no request paths" in capsys.readouterr().err


def test_the_subprocess_command_carries_the_paths_file_and_the_auth_scheme() -> None:
    cmd = lookups_command("http://h:1", "k", 1000.0, 12.0, paths_file="/tmp/p.txt", seed=1, start_at=5.5, warmup_s=2.0,
                          auth="bearer")
    assert cmd[1:3] == ["-m", "cxstream.bench.lookups"]
    args = cmd[3:]
    assert args[args.index("--paths-file") + 1] == "/tmp/p.txt"
    assert args[args.index("--auth") + 1] == "bearer"
    assert "--customers" not in args
    old = lookups_command("http://h:1", "k", 1000.0, 20.0, customers=10_000, start_at=5.5, warmup_s=3.0)
    assert "--customers" in old and "--paths-file" not in old and "--auth" not in old


def test_auth_headers() -> None:
    assert auth_headers("k") == {"X-API-Key": "k"}
    assert auth_headers("k", "bearer") == {"Authorization": "Bearer k"}
    with pytest.raises(ValueError):
        auth_headers("k", "basic")


def test_context_bench_targets_become_paths_the_paths_file_accepts() -> None:
    targets = [("id", "C00042"), ("kv", "email:jane doe@x.org"), ("email", "a+b@x.org"), ("phone", "+44 20 7946 0000"),
               ("social_handle", "@jane")]
    paths = [target_path(k, v) for k, v in targets]
    assert parse_paths(p + "\n" for p in paths) == paths
    assert paths[0] == "/customers/C00042/context"
    assert paths[2] == "/customers/context?email=a%2Bb%40x.org"
