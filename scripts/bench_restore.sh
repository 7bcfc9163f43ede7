#!/usr/bin/env bash
# Cache restore benchmark (issue 7): restoring a 1 GB output directory from repro's cache,
# against recomputing it and against a plain `cp -r` of the same directory on the same file
# system, measured side by side in one run. Not a test: it prints figures and ratios.
#
# One stage writes N files of M MiB (deterministic AES-CTR keystream from `openssl enc`, keyed
# by the `seed` param) into out/big. The script runs it with seed=1 and seed=2 (both computed
# and cached), then alternates seeds: every later run is a cache restore (`1 restored`), timed.
# The baselines: `repro run --force` (recompute) and `cp -r` of the workspace's out/big.
#
# Page cache: we cannot drop it on a shared machine (and may not be allowed to), so both sides
# are equalised instead: before every timed command, `sync` flushes pending writes and the
# source (the cache objects for a restore, out/big for cp) is read once so it is warm. The
# timed command then reads from memory and writes into the page cache; a separate `sync`
# after it is timed too and reported as "+ flush", so the table shows both.
#
#   scripts/bench_restore.sh                       # 100 × 10 MiB = 1 GiB, 3 repeats
#   RESTORE_FILES=20 RESTORE_MIB=5 scripts/bench_restore.sh   # quick check
#
# Environment: REPRO_BIN (default target/release/repro), BENCH_DIR (default
# /tmp/repro-bench-restore, deleted at the end), RESTORE_FILES, RESTORE_MIB, BENCH_REPEATS,
# BENCH_RESULTS (write the Markdown table to this file as well).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${REPRO_BIN:-$PWD/target/release/repro}
[ -x "$bin" ] || { echo "bench_restore: no binary at $bin; run cargo build --release" >&2; exit 1; }
bin=$(realpath "$bin")
dir=${BENCH_DIR:-/tmp/repro-bench-restore}
n=${RESTORE_FILES:-100}
mib=${RESTORE_MIB:-10}
repeats=${BENCH_REPEATS:-3}
total_mib=$((n * mib))

mkdir -p "$dir"
avail_mib=$(($(df -Pk "$dir" | awk 'NR==2{print $4}') / 1024))
# Two cached versions + workspace + a cp copy + one output moved aside during a restore.
[ "$avail_mib" -gt $((total_mib * 6)) ] ||
  { echo "bench_restore: $dir has $avail_mib MiB free, needs about $((total_mib * 6)) MiB" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir/ws"
trap 'rm -rf "$dir"' EXIT
ws=$dir/ws

cat >"$ws/pipeline.yaml" <<EOF
vars:
  seed: 1
stages:
  big:
    cmd: >-
      mkdir -p out/big && for i in \$(seq 1 $n); do
      openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:\${seed}-\$i < /dev/zero 2>/dev/null
      | head -c $((mib * 1048576)) > out/big/f\$i; done
    params: [seed]
    outs: [out/big]
EOF

now() { date +%s.%N; }
# Time one command in the workspace; prints "seconds flush_seconds", keeps its output in $ws/last.log.
timed() {
  sync
  local t0 t1 t2
  t0=$(now)
  (cd "$ws" && "$@") >"$ws/last.log" 2>&1 || { cat "$ws/last.log" >&2; exit 1; }
  t1=$(now)
  sync
  t2=$(now)
  echo "$(echo "$t1 - $t0" | bc -l) $(echo "$t2 - $t1" | bc -l)"
}
warm() { find "$@" -type f -exec cat {} + >/dev/null; }
engine_s() { grep -oE '\(([0-9.]+)s\)$' "$ws/last.log" | tail -1 | tr -d '()s'; }
expect() { grep -q "$1" "$ws/last.log" || { echo "bench_restore: expected '$1' in:" >&2; cat "$ws/last.log" >&2; exit 1; }; }
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "bench_restore: $n files × $mib MiB = $total_mib MiB in $ws ($(df -PT "$dir" | awk 'NR==2{print $2}'))" >&2
read -r first_s _ < <(timed "$bin" run --set seed=1)
expect "1 ran"
read -r second_s _ < <(timed "$bin" run --set seed=2)
expect "1 ran"
echo "computed seed=1 in ${first_s}s, seed=2 in ${second_s}s (each includes storing into the cache)" >&2

restore=() restore_flush=() restore_engine=() force=() force_flush=() cp=() cp_flush=() rmcp=()
seed=2
for ((r = 1; r <= repeats; r++)); do
  # Restore: flip the seed; the other version's objects are warm, the workspace holds this one.
  seed=$((3 - seed))
  warm "$ws/cache/objects"
  read -r s f < <(timed "$bin" run --set seed=$seed)
  expect "0 ran, 0 fresh, 1 restored"
  restore+=("$s") restore_flush+=("$f") restore_engine+=("$(engine_s)")
  # The checked-out version really is the one for this seed.
  first=$(head -c 16 "$ws/out/big/f1" | od -An -tx1 | tr -d ' \n')
  # (openssl dies of SIGPIPE once head has its bytes: not an error here)
  want=$(set +o pipefail; openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:$seed-1 </dev/zero 2>/dev/null | head -c 16 | od -An -tx1 | tr -d ' \n')
  [ "$first" = "$want" ] || { echo "bench_restore: restored out/big/f1 is not seed $seed's" >&2; exit 1; }

  # Recompute: the same run forced (runs the command and stores the result, as a cache miss does).
  read -r s f < <(timed "$bin" run --force --set seed=$seed)
  expect "1 ran"
  force+=("$s") force_flush+=("$f")

  # cp -r of the same directory, source warm, to a fresh target on the same file system.
  rm -rf "$ws/copy"
  warm "$ws/out/big"
  read -r s f < <(timed cp -r out/big copy)
  cp+=("$s") cp_flush+=("$f")
  # cp -r replacing an existing copy (what a restore does to the old output).
  warm "$ws/out/big"
  read -r s _ < <(timed sh -c 'rm -rf copy && cp -r out/big copy')
  rmcp+=("$s")
  rm -rf "$ws/copy"
  echo "repeat $r: restore ${restore[-1]}s (+${restore_flush[-1]}s flush, engine ${restore_engine[-1]}s)," \
    "recompute ${force[-1]}s, cp -r ${cp[-1]}s (+${cp_flush[-1]}s flush), rm+cp ${rmcp[-1]}s" >&2
done

m() { printf '%s\n' "$@" | median; }
R=$(m "${restore[@]}") RF=$(m "${restore_flush[@]}") RE=$(m "${restore_engine[@]}")
F=$(m "${force[@]}") FF=$(m "${force_flush[@]}")
C=$(m "${cp[@]}") CF=$(m "${cp_flush[@]}") RC=$(m "${rmcp[@]}")
ratio() { printf '%.2f' "$(echo "($1) / ($2)" | bc -l)"; }
torch=$(ldd "$bin" | grep -q torch && echo yes || echo no)
echo x >"$dir/reflink-probe"
reflinks=$(cp --reflink=always "$dir/reflink-probe" "$dir/reflink-probe2" 2>/dev/null && echo with || echo without)
{
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM," \
    "$(df -PT "$dir" | awk 'NR==2{print $2}') $reflinks reflinks ($dir); $n files × $mib MiB = $total_mib MiB;" \
    "medians of $repeats; \`$("$bin" --version)\`, libtorch linked: $torch; load average $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| operation | time (wall) | + flush to disk (\`sync\`) | vs \`cp -r\` |"
  echo "|---|---|---|---|"
  printf '| `repro run` restoring from the cache (`1 restored`) | %.2f s (engine %.2f s) | %.2f s | %s× (%s× with flush) |\n' \
    "$R" "$RE" "$RF" "$(ratio "$R" "$C")" "$(ratio "$R + $RF" "$C + $CF")"
  printf '| `cp -r` of the same directory (fresh target) | %.2f s | %.2f s | 1× |\n' "$C" "$CF"
  printf '| `rm -rf` old copy + `cp -r` | %.2f s | — | %s× |\n' "$RC" "$(ratio "$RC" "$C")"
  printf '| `repro run --force` (recompute; its objects are already cached) | %.2f s | %.2f s | %s× |\n' \
    "$F" "$FF" "$(ratio "$F" "$C")"
  printf '| first `repro run` of each seed (compute + store new objects, fsync) | %.2f s, %.2f s | — | %s× |\n' \
    "$first_s" "$second_s" "$(ratio "($first_s + $second_s) / 2" "$C")"
  echo
  printf 'Restore vs `cp -r` on the engine'"'"'s own time (no process start-up): %s×; vs `rm -rf` + `cp -r` (which, like a restore, also removes the old copy): %s×. Recompute / restore: %s×.\n' \
    "$(ratio "$RE" "$C")" "$(ratio "$R" "$RC")" "$(ratio "$F" "$R")"
} | tee "${BENCH_RESULTS:-/dev/null}"
