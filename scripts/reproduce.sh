#!/usr/bin/env bash
# Set up on a fresh machine and run the default pipeline (the quick profile) end to end.
#   scripts/reproduce.sh [repro run options, e.g. --profile paper]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release
status=0
./target/release/repro run "$@" || status=$?
# The last lines say where the results are (also after a failure: earlier reports may exist).
for f in report/report.html report/report.pdf report/report.tex; do
  [ -f "$f" ] && echo "report: $PWD/$f"
done
exit "$status"
