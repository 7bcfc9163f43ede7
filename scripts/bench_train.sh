#!/usr/bin/env bash
# Training throughput of the small CNN on CPU: repro's `train` stage against the same model,
# batch, threads, optimiser and data in PyTorch (Python, from the same .venv), measured in the
# same run, alternating, REPS times each. Prints the medians and their ratio (goal >= 1.0x).
#
#   scripts/bench_train.sh [N_IMAGES=20000] [BATCH=128] [THREADS=2] [REPS=3]
#
# Uses $REPRO_BIN (default target/debug/repro, which hands train stages to repro-torch beside
# it: build both first with `cargo build`).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}; BATCH=${2:-128}; THREADS=${3:-2}; REPS=${4:-3}
PY=.venv/bin/python
BIN=${REPRO_BIN:-target/debug/repro}
[ -x "$BIN" ] || { echo "build repro first (cargo build)"; exit 1; }
WS=$(mktemp -d); trap 'rm -rf "$WS"' EXIT
$PY scripts/bench_train.py make-data "$WS/fm"
cat > "$WS/spec.json" <<JSON
{"stage": "bench", "kind": "train", "threads": $THREADS,
 "params": {"data": "fm", "out": "out", "model": "cnn", "loss": "soft-d", "epochs": 1,
            "batch_size": $BATCH, "lr": 0.01, "limit_train": $N, "limit_test": 1000}}
JSON
rust=(); torch=()
for r in $(seq "$REPS"); do
  (cd "$WS" && "$OLDPWD/$BIN" internal run-kind spec.json >/dev/null)
  rust+=("$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["epochs"][0]["images_per_s"])' "$WS/out/train.json")")
  torch+=("$($PY scripts/bench_train.py cnn "$WS/fm" "$N" "$BATCH" "$THREADS" | $PY -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')")
  echo "rep $r: repro ${rust[-1]} img/s, pytorch ${torch[-1]} img/s"
done
$PY - "${rust[*]}" "${torch[*]}" "$BIN" "$N" "$BATCH" "$THREADS" <<'PY'
import statistics, sys, platform, os
r = [float(x) for x in sys.argv[1].split()]; t = [float(x) for x in sys.argv[2].split()]
mr, mt = statistics.median(r), statistics.median(t)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"cnn training, {sys.argv[4]} images, batch {sys.argv[5]}, {sys.argv[6]} threads, {cpu}, load {os.getloadavg()[0]:.1f}")
print(f"repro ({sys.argv[3]}): median {mr:.0f} img/s   pytorch eager: median {mt:.0f} img/s   ratio {mr/mt:.2f}x")
PY
