"""Summarise a py-spy ``--format raw`` profile (folded stacks) of the engine: where the time goes.

    python bench/pipeline/profile_report.py PROFILE.folded [--top 25]    # or PROFILE.folded.gz, as kept in bench/results

Prints (1) the share of samples *inclusive* of a list of known frames (a stack counts once per
pattern), (2) self time by package of the leaf frame, (3) the top leaf functions.  Shares are of
all recorded (non-idle) samples.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from collections import Counter
from pathlib import Path

#: (label, regex on one frame "function (file:line)"); inclusive: a stack containing it counts.
INCLUSIVE: tuple[tuple[str, str], ...] = (
    # a stage's handler: ``stage.<locals>.handle`` on the batch runtime, ``register...handle`` as a Faust agent
    ("stage: ingest (handle)", r"\.<locals>\.handle \(cxstream/agents/ingest"),
    ("stage: identity (handle)", r"\.<locals>\.handle \(cxstream/agents/identity"),
    ("stage: context (handle)", r"\.<locals>\.handle \(cxstream/agents/context"),
    ("stage: router (handle)", r"\.<locals>\.handle \(cxstream/agents/router"),
    ("learner (the desktops' labels; a Faust agent)", r"\.<locals>\.handle \(cxstream/agents/learner"),
    ("batch runtime: a batch through the stages (BatchRuntime.process)", r"BatchRuntime\.process "),
    ("batch runtime: outputs sent (BatchRuntime.send_all)", r"BatchRuntime\.send_all "),
    ("model snapshots (publication)", r"cxstream/intel/snapshot"),
    ("router: Router.apply", r"Router\.apply "),
    ("router: Router.to_state (state JSON per input)", r"Router\.to_state "),
    ("router: RouterHost.get / from_state", r"(RouterHost\.get|Router\.from_state) "),
    ("router tick timer", r"register\.<locals>\.tick "),
    ("context: apply_* (pure update)", r"apply_(interaction|outcome|assignment) "),
    ("context: redact", r"\bredact \("),
    ("context: sentiment", r"sentiment"),
    ("context: encode/decode_context", r"(encode_context|decode_context)"),
    ("codecs decode/encode (msgspec)", r"\b(decode|encode) \(cxstream/streams/codecs"),
    ("identifiers: normalise (phonenumbers)", r"\bnormalised? \(cxstream/context/identity"),
    ("table __setitem__ (changelog send)", r"Table\.__setitem__|ManagedUserDict\.__setitem__|on_key_set"),
    ("table get", r"(Table|Collection)\.(get|__getitem__|_get_key)|ManagedUserDict\.__getitem__"),
    ("Topic.send / producer (all sends)", r"(Topic|Channel)\.send \(faust|maybe_declare|FutureMessage"),
    ("aiokafka producer (batch/send)", r"aiokafka/producer"),
    ("aiokafka consumer (fetch/decode)", r"aiokafka/consumer"),
    ("aiokafka connection (requests encoded, socket writes)", r"aiokafka/conn"),
    ("faust stream iteration (Stream.__aiter__/events)", r"Stream\.(__aiter__|events|_c_aiter|_py_aiter)"),
    ("faust consumer/fetcher/transport", r"faust/transport"),
    ("faust commit / acks", r"(Consumer\.commit|_commit|on_message_out|ack\b|Event\.ack)"),
    ("redis write-behind flush", r"RedisContextWriter\.flush"),
    ("HTTP API (aiohttp server)", r"aiohttp/web_protocol|aiohttp/web_app|serve/http"),
    ("prometheus metrics", r"prometheus_client"),
    ("dead-letter wrapper (process_events)", r"process_events \(cxstream/streams/deadletter"),
    ("logging", r"logging/__init__"),
)

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    """The stacks of a folded profile, plain or gzipped (``.gz``), with their sample counts."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip's magic: the profiles kept in bench/results are compressed
        raw = gzip.decompress(raw)
    stacks = []
    for line in raw.decode(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        stacks.append((head.split(";"), int(count)))
    return stacks


def package(frame: str) -> str:
    m = _FRAME.match(frame)
    file = m.group("file") if m else frame
    if file.startswith("cxstream/"):
        return "/".join(file.split("/")[:2])
    if file.startswith("<frozen") or "/" not in file:
        return file.split("/")[0] or "?"
    return file.split("/")[0]


def report(path: Path, top: int = 25) -> str:
    stacks = parse(path)
    total = sum(c for _, c in stacks) or 1
    out = [f"{path}: {total} samples"]
    out.append("\n## inclusive share of samples")
    for label, pattern in INCLUSIVE:
        rx = re.compile(pattern)
        n = sum(c for frames, c in stacks if any(rx.search(f) for f in frames))
        out.append(f"{100 * n / total:6.1f}%  {label}")
    leaf_pkg: Counter[str] = Counter()
    leaf_fn: Counter[str] = Counter()
    for frames, c in stacks:
        leaf_pkg[package(frames[-1])] += c
        leaf_fn[frames[-1]] += c
    out.append("\n## self time by package of the leaf frame")
    for pkg, c in leaf_pkg.most_common(20):
        out.append(f"{100 * c / total:6.1f}%  {pkg}")
    out.append(f"\n## top {top} leaf frames")
    for fn, c in leaf_fn.most_common(top):
        out.append(f"{100 * c / total:6.1f}%  {fn}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("profile")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    print(report(Path(a.profile), a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
