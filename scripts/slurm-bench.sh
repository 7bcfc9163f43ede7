#!/usr/bin/env bash
# Overhead of the Slurm executor against the local one, measured side by side in one run:
# the same pipeline of N independent stages (each sleeps S seconds and writes one file) runs
# with `--executor local` and `--executor slurm` in two fresh workspaces, both at -j J.
# Prints both wall times, their ratio and the added seconds per stage.
#   scripts/slurm-bench.sh [N=20] [S=1] [J=8]
# Needs a built binary (cargo build) and a running Slurm (eval "$(scripts/slurm-up.sh)").
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}; secs=${2:-1}; j=${3:-8}
bin=${REPRO_BIN:-$PWD/target/debug/repro}
[ -x "$bin" ] || { echo "slurm-bench: no binary at $bin; run cargo build" >&2; exit 1; }
export SLURM_CONF=${SLURM_CONF:-${REPRO_SLURM_DIR:-/tmp/repro-slurm}/slurm.conf}
[ -f "$SLURM_CONF" ] || { echo "slurm-bench: Slurm is not up; eval \"\$(scripts/slurm-up.sh)\"" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
items=$(seq -s, 1 "$n")
for ex in local slurm; do
  mkdir -p "$tmp/$ex"
  cat >"$tmp/$ex/pipeline.yaml" <<EOF
stages:
  s:
    foreach: [$items]
    cmd: sleep $secs; echo \${item} > "out/\${item}.txt"
    outs: ["out/\${item}.txt"]
EOF
  mkdir -p "$tmp/$ex/out"
done

time_run() { # workspace executor -> seconds
  local start end
  start=$(date +%s.%N)
  (cd "$1" && "$bin" run --executor "$2" -j "$j" >"$1/run.log" 2>&1) ||
    { cat "$1/run.log" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

t_local=$(time_run "$tmp/local" local)
t_slurm=$(time_run "$tmp/slurm" slurm)
cmp -s <(cd "$tmp/local" && cat repro.lock) <(cd "$tmp/slurm" && cat repro.lock) ||
  { echo "slurm-bench: lock files differ" >&2; exit 1; }
printf 'stages=%d sleep=%ss -j %d\n' "$n" "$secs" "$j"
printf 'local  %.2f s\nslurm  %.2f s\nratio  %.2fx (slurm/local)\nadded  %.3f s per stage\n' \
  "$t_local" "$t_slurm" "$(echo "$t_slurm / $t_local" | bc -l)" \
  "$(echo "($t_slurm - $t_local) / $n" | bc -l)"
