#!/usr/bin/env bash
# Context retention across channel switches, wrong merges, context lookup latency at 1,000
# requests/s (open loop, from a separate process: python -m cxstream.bench.lookups, while
# background traffic keeps the engine working), erasure under load and bytes per customer, on
# the real engine (embedded Apache Kafka and Redis).  Reads the IBM Twitter customer-care set from CX_SHARED_DATA_DIR
# (default ../shared/data).  Writes bench/results/context.json.  See docs/IDENTITY.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
export CX_SHARED_DATA_DIR="${CX_SHARED_DATA_DIR:-../shared/data}"
mkdir -p bench/results
"$PY" -m cxstream.cli bench context --json bench/results/context.json "$@"
