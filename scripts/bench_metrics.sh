#!/usr/bin/env bash
# Metrics benchmark: evaluating a 50,000 x 1,000 logits file (ImageNet validation size) with
# repro's metrics module against a NumPy implementation of the same definitions and against
# one plain parallel read pass (sum) over the same matrix, all in the same run. Prints the
# times, the ratios, and the counts of both implementations (they must agree).
# Usage: scripts/bench_metrics.sh [samples=50000] [classes=1000] [reps=7]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50000}; classes=${2:-1000}; reps=${3:-7}
dir=$(mktemp -d /tmp/repro-bench-metrics.XXXXXX)
trap 'rm -rf "$dir"' EXIT
py=.venv/bin/python
$py scripts/bench_metrics.py gen "$dir/logits.safetensors" "$n" "$classes"
cargo test --release --test metrics_bench --no-run 2>/dev/null
out_rs=$(BENCH_FILE="$dir/logits.safetensors" BENCH_REPS="$reps" \
  cargo test --release --test metrics_bench -- --ignored --nocapture 2>/dev/null | grep -E '^(BENCH|RESULT)')
out_py=$($py scripts/bench_metrics.py bench "$dir/logits.safetensors" 3 | grep -E '^(BENCH|RESULT)')
echo "$out_rs"; echo "$out_py"
echo "cores: $(nproc)"
get() { echo "$1" | grep "^BENCH $2 " | sed 's/.* \([0-9.]*\) ms.*/\1/'; }
rs_eval=$(get "$out_rs" eval); rs_sum=$(get "$out_rs" sum); np_eval=$(get "$out_py" "numpy eval")
python3 -c "print(f'repro eval {$rs_eval:.1f} ms, plain read pass {$rs_sum:.1f} ms (ratio {$rs_eval/$rs_sum:.2f}x), NumPy {$np_eval:.1f} ms (repro is {$np_eval/$rs_eval:.1f}x faster)')"
rr=$(echo "$out_rs" | grep '^RESULT' | sed 's/Some(\([^)]*\))/\1/g; s/None/None/g')
pr=$(echo "$out_py" | grep '^RESULT')
python3 - "$rr" "$pr" <<'PY'
import sys
a, b = sys.argv[1].split(), sys.argv[2].split()
def norm(v):
    try: return round(float(v), 6)
    except ValueError: return v
same = [norm(x) for x in a] == [norm(x) for x in b]
print("results agree" if same else f"RESULTS DIFFER:\n  repro {a}\n  numpy {b}")
sys.exit(0 if same else 1)
PY
