#!/usr/bin/env bash
# GPU check, for a machine with CUDA and the two binaries carried over (no build there):
#   1. `repro doctor` (libtorch, CUDA, cuDNN, devices) and nvidia-smi;
#   2. ResNet50 fine-tuning steps at 224×224 on synthetic data, repro-torch (`bench-train`, the
#      `train` stage's own step) against PyTorch eager (scripts/bench_gpu.py: same batch, SGD,
#      loss), fp32 and mixed precision (float16 autocast), alternating, REPS times each:
#      images/s medians and the ratio (goal ≥ 0.95×);
#   3. the paper profile's graph on its tiny fixture (`paper-mini`) at full resolution (224)
#      on the GPU, to the report.
#
# Prepare here (the GPU machine has no Rust and no network):
#   cargo build --release && mkdir -p gpu-bin && cp target/release/repro target/release/repro-torch gpu-bin/ && strip gpu-bin/*
# then on the GPU machine, from the repository root:
#   BIN_DIR=gpu-bin scripts/gpu-check.sh [BATCH=64] [STEPS=30] [REPS=2]
# libtorch comes from that machine's python3 torch (LD_LIBRARY_PATH below); it must be the
# release the binaries were built against (torch 2.11).
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${1:-64}; STEPS=${2:-30}; REPS=${3:-2}; WARMUP=5
BIN_DIR=${BIN_DIR:-target/release}
PY=${PYTHON:-python3}
BIN_DIR=$(cd "$BIN_DIR" && pwd)
TORCH_LIB=$($PY -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export REPRO_TORCH="$BIN_DIR/repro-torch"
echo "== python torch: $($PY -c 'import torch; print(torch.__version__, torch.version.cuda)') ($TORCH_LIB)"

echo "== repro doctor"
"$BIN_DIR/repro" doctor
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== ResNet50 fine-tuning step, 224x224 synthetic, batch $BATCH, $STEPS steps (+$WARMUP warm-up), $REPS reps"
declare -A rate
for amp in fp32 amp; do
  flag=""; [ "$amp" = amp ] && flag="--amp"
  for r in $(seq "$REPS"); do
    j=$("$BIN_DIR/repro-torch" bench-train --model resnet50 --batch "$BATCH" --size 224 --steps "$STEPS" --warmup "$WARMUP" --device cuda $flag)
    rate[repro,$amp]+="$($PY -c 'import json,sys; print(json.loads(sys.argv[1])["images_per_s"])' "$j") "
    j2=$($PY scripts/bench_gpu.py --batch "$BATCH" --size 224 --steps "$STEPS" --warmup "$WARMUP" $flag)
    rate[torch,$amp]+="$($PY -c 'import json,sys; print(json.loads(sys.argv[1])["images_per_s"])' "$j2") "
    echo "  $amp rep $r: repro-torch $j"
    echo "  $amp rep $r: pytorch     $j2"
  done
done
for amp in fp32 amp; do
  $PY - "$amp" "${rate[repro,$amp]}" "${rate[torch,$amp]}" <<'PY'
import statistics, sys
r = [float(x) for x in sys.argv[2].split()]; t = [float(x) for x in sys.argv[3].split()]
mr, mt = statistics.median(r), statistics.median(t)
print(f"RESULT {sys.argv[1]}: repro-torch {mr:.1f} img/s, pytorch eager {mt:.1f} img/s, ratio {mr / mt:.3f}x (goal >= 0.95x)")
PY
done

echo "== paper-mini at 224x224 on the GPU"
WS=$(mktemp -d)
cp pipeline.yaml "$WS/"
cp -r stages templates "$WS/"
mkdir -p "$WS/tests/fixtures" "$WS/paper-mini-weights"
cp -r tests/fixtures/paper-mini "$WS/tests/fixtures/"
$PY scripts/make_random_weights.py resnet50 3 "$WS/paper-mini-weights/resnet50-random.pth"
# The whole digest (64 hex digits; a short all-digit prefix would read as a number in --set).
prefix=$(sha256sum "$WS/paper-mini-weights/resnet50-random.pth" | cut -c1-64)
t0=$(date +%s)
(cd "$WS" && "$BIN_DIR/repro" run --profile paper-mini -j 4 --resources gpu=1 \
   --set device=cuda --set gpus_per_run=1 --set image_size=224 \
   --set "pretrained.resnet50.sha256_prefix=$prefix")
echo "paper-mini on GPU: $(( $(date +%s) - t0 )) s; report: $WS/report/report.html"
$PY - "$WS" <<'PY'
import json, glob, sys
for f in sorted(glob.glob(sys.argv[1] + "/runs/*/*/*/train.json")):
    t = json.load(open(f))
    print(f"  {f[len(sys.argv[1]) + 6:]}: device {t['device']}, test accuracy {t['test_accuracy']:.1f}%")
PY
ls -la "$WS/report"
