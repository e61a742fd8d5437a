#!/usr/bin/env bash
# The pipeline benchmark of issue 7 (see docs/PERFORMANCE.md): references + engine on the embedded
# broker, open-loop, --find-max, then half the max rate with 1,000 context lookups/s.
# Writes bench/results/pipeline.json.  About 6-8 minutes on a 2-core machine.
#   CUSTOMERS=100000 WORKERS=2 bash bench/pipeline/run.sh      # other sizes
#   bash bench/pipeline/run.sh --engine-src /tmp/snapshot        # extra options are passed on
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-bench/results/pipeline.json}
mkdir -p "$(dirname "$OUT")"
exec timeout 1800 "$BIN/python" -m cxstream.cli bench pipeline \
  --customers "${CUSTOMERS:-10000}" --workers "${WORKERS:-1}" --find-max --json "$OUT" "$@"
