#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run the whole test suite.
#   scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
if [ -x scripts/slurm-up.sh ]; then
  # A one-node Slurm on localhost for the cluster executor's tests.
  eval "$(scripts/slurm-up.sh)"
fi
log=$(mktemp)
set +e
cargo test --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over all test binaries (cargo prints one `test result:` per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
