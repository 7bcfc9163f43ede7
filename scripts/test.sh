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
cargo test --no-fail-fast "$@"
