#!/usr/bin/env bash
# CPU per context lookup in one API process: the lookup front against aiohttp, alternated in one
# run (bench/api/cost.py; --compare pipelined: the pipelined hiredis connection against the redis-py
# pool).  Writes bench/results/api-cost-front.json unless --json is given.  See docs/PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
mkdir -p bench/results
"$PY" bench/api/cost.py --json bench/results/api-cost-front.json "$@"
