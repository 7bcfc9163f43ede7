#!/usr/bin/env bash
# Set up on a fresh machine and run the default pipeline (the quick profile) end to end.
#   scripts/reproduce.sh [repro run options, e.g. --profile paper]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release
exec ./target/release/repro run "$@"
