#!/usr/bin/env bash
# Suggested knowledge on the IBM Twitter customer-care conversations (read in place, never copied).
# Writes bench/results/intel-assist.json: the held-out figures (learn the first 70 % of dev.json in
# time order -- the only part the model's parameters were chosen on -- then score the last 30 %,
# against a batch TF-IDF nearest-neighbour baseline fitted on the same 70 %), and under
# "whole_file" the prequential (test-then-train) figures over all of dev.json.
# Then "memory_scaling": the CPU cost of one ranking at 500 to 20,000 remembered contacts.
#   PY=/path/to/python overrides the interpreter (default: .venv/bin/python of the repo).
#   CX_SHARED_DATA_DIR overrides the data folder (default: ../shared/data beside the repo).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
OUT="$ROOT/bench/results"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
DATA="$("$PY" -c 'from cxstream.datasets import shared_data_dir; print(shared_data_dir() / "twitter_customer_care_ibm/dev.json")')"

"$PY" -m cxstream.cli eval assist-split --data "$DATA" --fraction 0.7 --out "$TMP" >/dev/null
"$PY" -m cxstream.cli eval assist --data "$TMP/first.json" --test "$TMP/rest.json" --json "$TMP/heldout.json" >/dev/null
"$PY" -m cxstream.cli eval assist --data "$DATA" --json "$TMP/whole.json" >/dev/null
"$PY" - "$TMP" "$OUT/intel-assist.json" "$DATA" <<'PY'
import json, pathlib, sys
tmp, out, data = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
r = json.loads((tmp / "heldout.json").read_text())
whole = json.loads((tmp / "whole.json").read_text())
r["data_file"] = f"{data}: first 70 % in time order (cxstream eval assist-split --fraction 0.7: first.json)"
r["test_file"] = f"{data}: last 30 % in time order (rest.json), never used to choose parameters"
r["whole_file"] = {"data_file": data, "prequential": whole["prequential"], "n_documents": whole["n_documents"]}
r["commands"] = [
    "cxstream eval assist-split --data DEV --fraction 0.7 --out T",
    "cxstream eval assist --data T/first.json --test T/rest.json --json heldout.json",
    "cxstream eval assist --data DEV --json whole.json",
]
# cost of one ranking against the size of the memory: dev.json's conversations learned again and again
# (each copy made distinct) up to each size, then 100 of them ranked; this process's CPU time
import time
from cxstream.intel.assist import KnowledgeModel
from cxstream.intel.eval_assist import examples_of, read_conversations
ex = examples_of(read_conversations(data))
m, n, scaling = KnowledgeModel(), 0, []
for size in (500, 2000, 5000, 20000):
    while m._n_rows < size:
        e = ex[n % len(ex)]
        m.learn_one(f"{e.text} copy{n}", e.document)
        n += 1
    queries = [e.text for e in ex[:100]]
    m.predict_ranked(queries[0])  # the inverted index is built (or brought up to date) on a ranking
    c0 = time.process_time()
    for q in queries:
        m.predict_ranked(q, 3)
    scaling.append({"contacts_remembered": m._n_rows, "nonzeros": m._nnz,
                    "rank_cpu_us": round((time.process_time() - c0) / len(queries) * 1e6, 1)})
r["memory_scaling"] = scaling
out.write_text(json.dumps(r, indent=2, sort_keys=True) + "\n")
print(out.name, {k: r[k] for k in ("top1", "top3", "baseline_top1", "baseline_top3", "n_train", "n_test")},
      "whole file prequential", {k: whole["prequential"][k] for k in ("top1", "top3", "n")})
PY
