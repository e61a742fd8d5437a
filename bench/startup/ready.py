"""Time from ``make run`` to a ready engine, on a warm ``.venv``: a new data folder, a restart after Ctrl-C, after ``kill -9``.

Each run starts ``make run`` exactly as the README says (a session of its own, like a terminal),
with its own ``CX_DATA_DIR`` and HTTP port, and measures from the moment ``make`` is started to

* ``broker_ready_s``: the engine's line saying the embedded Kafka is ready (its own ``ready in``
  figure is reported too, as ``broker_reported_s``);
* ``api_ready_s``: the line ``cxstream: HTTP API on ...``;
* ``ready_s``: Faust's ``Worker]: Ready``, after which ``/healthz`` answers 200 (checked).

Per repeat: ``new`` (an empty data folder: topics are created), ``restart`` (after Ctrl-C, with
the data of the first run) and ``after_kill_9`` (after ``kill -9`` of the engine: ZooKeeper
must first expire the dead broker's session).  Writes medians and every run to ``--json``.

    .venv/bin/python bench/startup/ready.py --repeats 3 --json bench/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cxstream.streams.embedded import free_port  # noqa: E402


def start(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], dict[str, float], int]:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CX_")}, "CX_DATA_DIR": str(data_dir),
           "CX_HTTP_PORT": str(port), "CX_API_KEYS": "bench"}
    began = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    marks = {"broker_ready_s": "cxstream: embedded broker", "api_ready_s": "cxstream: HTTP API on", "ready_s": "Worker]: Ready"}
    found: dict[str, float] = {}
    deadline = began + 180
    while len(found) < len(marks):
        text = log.read_text(errors="replace")
        for name, mark in marks.items():
            if name not in found and mark in text:
                found[name] = round(time.monotonic() - began, 2)
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"make run did not get ready:\n{text[-3000:]}")
        time.sleep(0.02)
    reported = re.search(r"ready in ([\d.]+) s", log.read_text())
    found["broker_reported_s"] = float(reported.group(1)) if reported else -1.0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
        assert resp.status == 200
    return proc, found, port


def ctrl_c(proc: subprocess.Popen[bytes]) -> float:
    began = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(120)
    return round(time.monotonic() - began, 2)


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to make and the engine it runs (their process group); the servers die with the engine."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    time.sleep(1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    subprocess.run(["make", "install"], cwd=ROOT, check=True, capture_output=True)  # warm .venv: not timed
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cx-startup-") as tmp:
        for r in range(args.repeats):
            data = Path(tmp) / f"var{r}"
            proc, t, _ = start(data, Path(tmp) / f"new{r}.log")
            t["stop_s"] = ctrl_c(proc)
            runs.append({"repeat": r, "case": "new", **t})
            proc, t, _ = start(data, Path(tmp) / f"restart{r}.log")
            runs.append({"repeat": r, "case": "restart", **t})
            kill_9(proc)
            proc, t, _ = start(data, Path(tmp) / f"kill{r}.log")
            t["stop_s"] = ctrl_c(proc)
            runs.append({"repeat": r, "case": "after_kill_9", **t})
            print(json.dumps(runs[-3:]), flush=True)
    cases = sorted({x["case"] for x in runs})
    medians = {c: {k: statistics.median(x[k] for x in runs if x["case"] == c) for k in ("broker_ready_s", "api_ready_s", "ready_s")}
               for c in cases}
    result = {"command": " ".join(["bench/startup/ready.py", *sys.argv[1:]]), "cpus": os.cpu_count(),
              "medians": medians, "runs": runs}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(medians, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
