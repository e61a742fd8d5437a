#!/usr/bin/env bash
# CPU per context lookup in one API process: the pipelined hiredis connection against the
# redis-py pool, alternated in one run.  Writes bench/results/api-cost.json.  See docs/PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
mkdir -p bench/results
"$PY" bench/api/cost.py --json bench/results/api-cost.json "$@"
