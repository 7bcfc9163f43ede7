#!/usr/bin/env bash
# Stop the test cluster that scripts/slurm-up.sh started (only its own slurmctld and slurmd,
# found by the pid files it wrote; munged is left running, other users may need it).
# Usage: scripts/slurm-down.sh   (honours REPRO_SLURM_DIR like slurm-up.sh)
set -euo pipefail
dir=${REPRO_SLURM_DIR:-/tmp/repro-slurm}
for d in slurmd slurmctld; do
  f="$dir/$d.pid"
  if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
    pid=$(cat "$f")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    echo "slurm-down: stopped $d ($pid)" >&2
  fi
  rm -f "$f"
done
