#!/usr/bin/env bash
# Job arrays against one Slurm job per stage, measured side by side in one run: the same
# pipeline of N matrix stages (each sleeps S seconds and writes one file) runs under
# `--executor slurm` in two fresh workspaces, once as job arrays (the default) and once with
# `slurm: {arrays: false}`. Counts every call of Slurm's client tools the engine makes (through
# wrappers put first on its PATH): submissions (sbatch) and scheduler queries (squeue, sacct),
# and the wall time; prints them side by side with ratios, plus the date, nproc and load.
#   scripts/bench_slurm_arrays.sh [N=100] [S=1] [J]     (J: -j, default the engine's, 256)
# Needs a built binary (cargo build) and a running Slurm (eval "$(scripts/slurm-up.sh)").
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}; secs=${2:-1}; j=${3:-}
bin=${REPRO_BIN:-$PWD/target/debug/repro}
[ -x "$bin" ] || { echo "bench_slurm_arrays: no binary at $bin; run cargo build" >&2; exit 1; }
export SLURM_CONF=${SLURM_CONF:-${REPRO_SLURM_DIR:-/tmp/repro-slurm}/slurm.conf}
[ -f "$SLURM_CONF" ] || { echo "bench_slurm_arrays: Slurm is not up; eval \"\$(scripts/slurm-up.sh)\"" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Wrappers that log each call's tool name, then run the real tool.
mkdir -p "$tmp/shim"
for tool in sbatch squeue sacct scancel; do
  real=$(command -v "$tool") || { echo "bench_slurm_arrays: $tool not found" >&2; exit 1; }
  printf '#!/bin/sh\necho %s >> "$REPRO_BENCH_CALLS"\nexec %s "$@"\n' "$tool" "$real" >"$tmp/shim/$tool"
  chmod +x "$tmp/shim/$tool"
done

items=$(seq -s, 1 "$n")
for mode in arrays single; do
  mkdir -p "$tmp/$mode/out"
  {
    [ "$mode" = single ] && echo "slurm: {arrays: false}"
    cat <<EOF
stages:
  s:
    foreach: [$items]
    cmd: sleep $secs; echo \${item} > "out/\${item}.txt"
    outs: ["out/\${item}.txt"]
EOF
  } >"$tmp/$mode/pipeline.yaml"
done

declare -A wall calls_sbatch calls_query
for mode in arrays single; do
  log="$tmp/$mode.calls"; : >"$log"
  start=$(date +%s.%N)
  (cd "$tmp/$mode" && REPRO_BENCH_CALLS=$log PATH="$tmp/shim:$PATH" \
     "$bin" run --executor slurm ${j:+-j "$j"} >"$tmp/$mode.out" 2>&1) ||
    { cat "$tmp/$mode.out" >&2; exit 1; }
  end=$(date +%s.%N)
  grep -q "^$n ran, 0 fresh, 0 failed" "$tmp/$mode.out" || { cat "$tmp/$mode.out" >&2; exit 1; }
  wall[$mode]=$(echo "$end - $start" | bc -l)
  calls_sbatch[$mode]=$(grep -c '^sbatch$' "$log" || true)
  calls_query[$mode]=$(grep -cE '^(squeue|sacct)$' "$log" || true)
done
cmp -s "$tmp/arrays/repro.lock" "$tmp/single/repro.lock" ||
  { echo "bench_slurm_arrays: lock files differ" >&2; exit 1; }

ratio() { printf '%.2f' "$(echo "$2 / $1" | bc -l)"; }
printf '%s  nproc=%s  load(1/5/15 min)=%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(nproc)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'stages=%d  sleep=%ss  -j %s  (Slurm node: %s CPUs)\n' "$n" "$secs" "${j:-default}" \
  "$(scontrol show node -o 2>/dev/null | sed -n 's/.*CPUTot=\([0-9]*\).*/\1/p' | head -1)"
printf '%-31s %10s %10s %14s\n' "" "array" "one each" "one each/array"
printf '%-31s %10d %10d %13sx\n' "submissions (sbatch)" "${calls_sbatch[arrays]}" \
  "${calls_sbatch[single]}" "$(ratio "${calls_sbatch[arrays]}" "${calls_sbatch[single]}")"
printf '%-31s %10d %10d %13sx\n' "scheduler calls (squeue+sacct)" "${calls_query[arrays]}" \
  "${calls_query[single]}" "$(ratio "${calls_query[arrays]}" "${calls_query[single]}")"
printf '%-31s %9.2fs %9.2fs %13sx\n' "wall time" "${wall[arrays]}" "${wall[single]}" \
  "$(ratio "${wall[arrays]}" "${wall[single]}")"
