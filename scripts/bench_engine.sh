#!/usr/bin/env bash
# Engine benchmark (issue 2): cold run and no-op rerun of a synthetic DAG (each stage reads
# F input files plus one upstream output and writes one output), measured in the same run for
# repro, DVC and Snakemake at one size, then for repro alone at larger sizes. Prints a Markdown
# table with wall times, repro's own engine time and the ratios; not a test (no pass/fail on
# speed). The driver is scripts/bench_engine/bench.py; see its --help for every knob.
#
#   scripts/bench_engine.sh                  # defaults below, about 10 minutes on 2 cores
#   BENCH_SIDE=50:500:100000 BENCH_ALONE="1000:10000:100000" scripts/bench_engine.sh   # quicker
#
# Environment:
#   REPRO_BIN    repro binary (default target/release/repro; built with cargo build --release)
#   BENCH_VENV   throw-away venv for the baselines (default /tmp/bench-venv; created with
#                `pip install dvc snakemake` if missing). BENCH_VENV=none skips DVC and Snakemake.
#   BENCH_DIR    scratch directory, deleted at the end (default /tmp/repro-bench-engine)
#   BENCH_SIDE   STAGES:FILES:BYTES run by all three tools (default 1000:10000:100000 = 1 GB;
#                DVC's cold run is replaced by `dvc commit` above 200 stages, see bench.py)
#   BENCH_ALONE  sizes run by repro alone (default "10000:100000:10000": 1 GB in files of
#                10 kB, since 100,000 files of 100 kB would be 10 GB)
#   BENCH_REPEATS no-op runs per figure, median reported (default 5)
#   BENCH_JOBS   -j / --cores (default nproc)
#   BENCH_RESULTS write PREFIX.md and PREFIX.json with the table and raw samples
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${REPRO_BIN:-$PWD/target/release/repro}
[ -x "$bin" ] || { echo "bench_engine: no binary at $bin; run cargo build --release" >&2; exit 1; }
venv=${BENCH_VENV:-/tmp/bench-venv}
dir=${BENCH_DIR:-/tmp/repro-bench-engine}

args=(--repro "$bin" --dir "$dir" --side "${BENCH_SIDE:-1000:10000:100000}"
      --repeats "${BENCH_REPEATS:-5}" --jobs "${BENCH_JOBS:-$(nproc)}")
# shellcheck disable=SC2206 # word splitting of the size list is intended
alone=(${BENCH_ALONE-10000:100000:10000})
args+=(--alone "${alone[@]}")
[ -n "${BENCH_RESULTS:-}" ] && args+=(--results "$BENCH_RESULTS")

if [ "$venv" != none ]; then
  if [ ! -x "$venv/bin/dvc" ] || [ ! -x "$venv/bin/snakemake" ]; then
    echo "bench_engine: installing dvc and snakemake into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q dvc snakemake
  fi
  args+=(--venv "$venv")
fi

# Fail early if the scratch file system cannot hold the largest size (inputs + cache copy).
need_kb=$(python3 - "${BENCH_SIDE:-1000:10000:100000}" "${alone[@]}" <<'EOF'
import sys
print(max(int(f) * int(b) for s in sys.argv[1:] for _, f, b in [s.split(":")]) * 3 // 1024)
EOF
)
mkdir -p "$dir"
avail_kb=$(df -Pk "$dir" | awk 'NR==2{print $4}')
[ "$avail_kb" -gt "$need_kb" ] ||
  { echo "bench_engine: $dir has $((avail_kb / 1024)) MiB free, needs about $((need_kb / 1024)) MiB" >&2; exit 1; }

trap 'rm -rf "$dir"' EXIT
python3 scripts/bench_engine/bench.py "${args[@]}"
