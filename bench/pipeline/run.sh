#!/usr/bin/env bash
# The pipeline benchmark of issue 7 (see docs/PERFORMANCE.md): references + engine on the embedded
# broker, open-loop, --find-max, then half the max rate with 1,000 context lookups/s.
# Writes bench/results/pipeline.json.  About 15 minutes on a 2-core machine with the defaults (the latency
# search measures each rate three times: --latency-repeats);
# the long final run of docs/PERFORMANCE.md (>= 10 min, >= 10,000 contacts) takes ~30 minutes:
#   OUT=bench/results/pipeline-kafka.json TIMEOUT=3600 bash bench/pipeline/run.sh --duration 600 \
#       --final-contacts 10000 --max-final-duration 1200
#   .venv/bin/python bench/pipeline/plot_minutes.py bench/results/pipeline-kafka.json --out bench/results/pipeline-kafka.png
#   CUSTOMERS=100000 WORKERS=2 bash bench/pipeline/run.sh      # other sizes
#   bash bench/pipeline/run.sh --engine-src /tmp/snapshot        # extra options are passed on
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-bench/results/pipeline.json}
mkdir -p "$(dirname "$OUT")"
exec timeout "${TIMEOUT:-1800}" "$BIN/python" -m cxstream.cli bench pipeline \
  --customers "${CUSTOMERS:-10000}" --workers "${WORKERS:-1}" --find-max --json "$OUT" "$@"
