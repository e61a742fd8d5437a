#!/usr/bin/env bash
# Replay the real bank call-centre log (January 1999) through the router core, per policy.
# Writes bench/results/routing-raw.json (no after-call work) and
# bench/results/routing-calibrated.json (50 s after-call work per call, calibrated so that
# fifo's simulated ASA/abandonment come close to the log's own figures), the whole month;
# and the same for each half: routing-{raw,calibrated}-{first,second}-half.json.  The default
# policy was tuned on the first half (days 1-14) only; the second half is held out.
# See docs/ROUTING.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
LOG="${CX_SHARED_DATA_DIR:-../shared/data}/callcenter_anonymous_bank/january_1999.txt"
POLICIES="${POLICIES:-fifo,fifo_skills,skills,default}"
mkdir -p bench/results
"$PY" -m cxstream.replay.eval_routing --log "$LOG" --policy "$POLICIES" --wrap-up 0 --json bench/results/routing-raw.json &
"$PY" -m cxstream.replay.eval_routing --log "$LOG" --policy "$POLICIES" --wrap-up 50 --json bench/results/routing-calibrated.json &
wait
for half in first second; do
  "$PY" -m cxstream.replay.eval_routing --log "$LOG" --policy "$POLICIES" --half "$half" --wrap-up 0 --json "bench/results/routing-raw-$half-half.json" &
  "$PY" -m cxstream.replay.eval_routing --log "$LOG" --policy "$POLICIES" --half "$half" --wrap-up 50 --json "bench/results/routing-calibrated-$half-half.json" &
  wait
done
