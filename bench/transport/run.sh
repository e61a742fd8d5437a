#!/usr/bin/env bash
# One Kafka hop with aiokafka and with confluent-kafka (librdkafka), on the embedded broker: the
# relay's CPU per record and the hop's latency at fixed rates (bench/transport/hop.py; issue 17).
# Writes bench/results/transport-hop.json.  About 5 minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-bench/results/transport-hop.json}
exec timeout "${TIMEOUT:-1800}" "$BIN/python" bench/transport/hop.py --rates "${RATES:-100,500,1000}" --json "$OUT" "$@"
