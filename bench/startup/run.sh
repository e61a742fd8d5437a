#!/usr/bin/env bash
# Time from `make run` to a ready engine (new data folder, restart, after kill -9). Writes bench/results/startup.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python bench/startup/ready.py --repeats "${REPEATS:-3}" --json bench/results/startup.json "$@"
