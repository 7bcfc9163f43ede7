#!/usr/bin/env bash
# Copy the report's Markdown summary into README.md between the generated-results markers, and
# the runs it was drawn from into docs/results/, so `cargo test --test readme_results` can check
# that the README shows exactly what the report renders from those runs.
#   scripts/update-readme.sh [report directory, default: report]
# Run it after `repro run` of the quick profile has finished.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-report}"
summary="$dir/summary.md"
runs="$dir/summary-runs.json"
for f in "$summary" "$runs"; do
    [ -f "$f" ] || { echo "update-readme: $f not found (run the pipeline first)" >&2; exit 1; }
done
begin='<!-- BEGIN GENERATED RESULTS -->'
end='<!-- END GENERATED RESULTS -->'
grep -qxF "$begin" README.md && grep -qxF "$end" README.md || {
    echo "update-readme: README.md lacks the lines '$begin' and '$end'" >&2; exit 1; }
mkdir -p docs/results
cp "$runs" docs/results/quick-summary-runs.json
tmp="$(mktemp README.md.XXXXXX)"
awk -v b="$begin" -v e="$end" -v f="$summary" '
    $0 == b { print; while ((getline line < f) > 0) print line; skip = 1; next }
    $0 == e { skip = 0 }
    !skip { print }
' README.md > "$tmp"
mv "$tmp" README.md
echo "README.md: generated block replaced from $summary; runs copied to docs/results/quick-summary-runs.json"
