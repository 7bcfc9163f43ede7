#!/usr/bin/env bash
# Loader benchmark: images/s of decode + augment on this machine, repro's loader (Rust, N
# threads) against torchvision with N DataLoader workers, on the same preprocessed shards,
# in the same run. Prints both and their ratio for the train and test transforms.
# Usage: scripts/bench_loader.sh [images=1024] [workers=2] [epochs=3]
# Needs torchvision in .venv (benchmark-only): .venv/bin/pip install --no-deps torchvision==0.26.0 pillow
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:-1024}; workers=${2:-2}; epochs=${3:-3}
dir=$(mktemp -d /tmp/repro-bench-loader.XXXXXX)
trap 'rm -rf "$dir"' EXIT
export BENCH_DIR="$dir" BENCH_IMAGES="$images" BENCH_WORKERS="$workers" BENCH_EPOCHS="$epochs"
out_rs=$(cargo test --release -p repro-torch --test data_loader_bench -- --ignored --nocapture 2>/dev/null | grep '^BENCH')
out_py=$(.venv/bin/python scripts/bench_loader.py "$dir" | grep '^BENCH')
echo "$out_rs"; echo "$out_py"
echo "images: $images, workers: $workers, epochs timed: $epochs, cores: $(nproc)"
for t in train test; do
  rs=$(echo "$out_rs" | grep " $t " | sed 's/.*= \([0-9.]*\) images.*/\1/')
  py=$(echo "$out_py" | grep " $t " | sed 's/.*= \([0-9.]*\) images.*/\1/')
  python3 -c "print(f'$t: repro {float($rs):.1f} img/s, torchvision {float($py):.1f} img/s, ratio {float($rs)/float($py):.2f}x')"
done
