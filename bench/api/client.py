"""The lookup client alone: how late it sends, and what it adds to each latency, against a server that costs nothing.

    .venv/bin/python bench/api/client.py --json bench/results/lookup-client-pacer.json \\
        --variant new= --variant noslice=--slice-us=0 --variant old= --src old=/tmp/old --rounds 2

A loopback HTTP server in a process of its own answers every request head with ``{}`` at once
(uvloop, a protocol, no parsing beyond the blank line), so what a run measures is the client
(``python -m cxstream.bench.lookups``): its ``client_send_lag_p99_ms`` (its own lateness against
the planned times), its latency from the planned times and from each send (``from_send``, where
the client reports it), and its CPU.  Each variant is the client from a source folder (``--src
NAME=DIR``; default this checkout) with extra client options (after ``NAME=``, comma-separated);
the variants alternate, their order rotating each round.  Compare variants within one file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cxstream.streams.embedded import free_port

REPO = Path(__file__).resolve().parents[2]

SERVER = r"""
import asyncio, sys, uvloop
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"
class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            self.buf = self.buf.partition(b"\r\n\r\n")[2]
            self.transport.write(ANSWER)
async def main():
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()
uvloop.run(main())
"""


def one_run(src: Path, extra: list[str], rate: float, seconds: float) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        cmd = [sys.executable, "-m", "cxstream.bench.lookups", "--url", f"http://127.0.0.1:{port}", "--key", "k",
               "--rate", str(rate), "--duration", str(seconds), "--customers", "100", *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=src, env={**os.environ, "PYTHONPATH": str(src)},
                              check=True, timeout=seconds + 60)
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait(10)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", action="append", required=True, help="NAME=client options, comma-separated")
    p.add_argument("--src", action="append", default=[], help="NAME=DIR: that variant's client from DIR")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", required=True)
    a = p.parse_args()
    variants = [(name, [s for s in opts.split(",") if s]) for name, opts in (v.split("=", 1) for v in a.variant)]
    sources = {name: Path(d).resolve() for name, d in (s.split("=", 1) for s in a.src)}
    runs = []
    for rnd in range(a.rounds):
        k = rnd % len(variants)
        for name, extra in variants[k:] + variants[:k]:
            result = one_run(sources.get(name, REPO), extra, a.rate, a.seconds)
            keys = ("p50_ms", "p99_ms", "p999_ms", "client_send_lag_p99_ms", "client_cpu_pct", "from_send", "client_slice_us")
            row = {"variant": name, "round": rnd, **{key: result.get(key) for key in keys}, "status": result.get("status")}
            print(json.dumps(row), flush=True)
            runs.append(row)
    out = {"command": " ".join(sys.argv), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rate": a.rate,
           "seconds": a.seconds, "variants": dict(variants), "sources": {k: str(v) for k, v in sources.items()},
           "runs": runs}
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
