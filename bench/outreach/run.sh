#!/usr/bin/env bash
# Issue 6: the churn outreach trigger and the guardrails on the real IBM Telco churn table
# (progressive test-then-train scores, threshold chosen on the first half, figures on the
# second half).  Reads $CX_SHARED_DATA_DIR/telco_churn (default ../shared/data), pure Python,
# about 10 s on one core.  Writes bench/results/outreach.json.  See docs/OUTREACH.md.
#   bash bench/outreach/run.sh --threshold 0.5      # extra options are passed on
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
export CX_SHARED_DATA_DIR="${CX_SHARED_DATA_DIR:-../shared/data}"
mkdir -p bench/results
"$PY" -m cxstream.cli bench outreach --json bench/results/outreach.json "$@" >/dev/null
"$PY" - <<'PY'
import json
r = json.load(open("bench/results/outreach.json"))
keys = ("threshold", "precision", "recall", "lift", "base_churn_rate", "outreach_events", "suppressed")
print("bench/results/outreach.json", {k: r[k] for k in keys})
PY
