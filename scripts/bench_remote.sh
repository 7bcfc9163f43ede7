#!/usr/bin/env bash
# Remote cache benchmark (issues 19, 27): `repro pull` of a pipeline's outputs from a localhost
# remote into an empty workspace, against `cp -r` of the same bytes as the yardstick and, on
# the shared-directory remote, `dvc pull` of the same files from a DVC remote built from them.
# All measured in the same run. Not a test: it prints figures and ratios (and, with
# BENCH_RESULTS, writes a Markdown table).
#
# The outputs: those of a finished quick-profile workspace when QUICK_WS names one (copied
# with cp -a, its pipeline.yaml, repro.lock and cache/ are workspace A); else a generated
# pipeline (REMOTE_FIXTURE=stages, the default) of REMOTE_STAGES stages (300) each writing one
# file of REMOTE_STAGE_KB kB (1000) plus one stage writing a directory of REMOTE_SMALL files of
# 4 kB (2000) — many stages and small files, like the quick profile, made in seconds; or
# (REMOTE_FIXTURE=blobs) REMOTE_BIG files of REMOTE_BIG_MIB MiB plus REMOTE_SMALL files of
# 8 KiB in two directory outputs. Random bytes, so nothing compresses or deduplicates.
#
# Remotes: a shared directory (file://) and nginx WebDAV on 127.0.0.1 (when nginx and its
# dav-ext module are installed). A pushes once; then, BENCH_REPEATS times, a fresh workspace B
# (same pipeline, empty cache) runs `repro pull` (timed, then `sync` timed as "+ flush"), and
# `cp -r` copies A's output directories to a fresh place (timed the same way); `dvc pull` into
# a fresh DVC checkout (its .dvc files and config, empty cache) is timed the same way. Before
# each timed command the source is read once (page cache warm on both sides) and `sync` is run.
#
# Environment: REPRO_BIN (default target/release/repro, else target/debug/repro), BENCH_DIR
# (default /tmp/repro-bench-remote, deleted at the end), QUICK_WS, REMOTE_FIXTURE,
# REMOTE_STAGES, REMOTE_STAGE_KB, REMOTE_BIG (32), REMOTE_BIG_MIB (8), REMOTE_SMALL (2000),
# BENCH_REPEATS (3), BENCH_RESULTS (file for the table), BENCH_DVC (a dvc executable; default
# .tools/dvc/bin/dvc, made with `python3 -m venv .tools/dvc && .tools/dvc/bin/pip install
# dvc`; `none` skips DVC), BENCH_DVC_LINK (DVC's cache.type in the pulling checkout, e.g.
# `hardlink,copy`; default DVC's own, reflink then copy), BENCH_WEBDAV (`no` skips the nginx
# row).
#
# Link mode: REPRO_CACHE_LINK (e.g. `hardlink,copy`) applies to every repro command here, so to
# workspace B's pulls; the table names it. After the last pull, `du -sk` of B's outputs and its
# cache/ in one command (a hard-linked file counted once) is printed with its ratio to the
# outputs' bytes (the sum of their files' sizes); the same for DVC's checkout and .dvc/cache.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${REPRO_BIN:-}
if [ -z "$bin" ]; then
  if [ -x target/release/repro ]; then bin=target/release/repro; else bin=target/debug/repro; fi
fi
[ -x "$bin" ] || { echo "bench_remote: no binary at $bin; run cargo build --release" >&2; exit 1; }
bin=$(realpath "$bin")
dir=${BENCH_DIR:-/tmp/repro-bench-remote}
big=${REMOTE_BIG:-32}
big_mib=${REMOTE_BIG_MIB:-8}
small=${REMOTE_SMALL:-2000}
repeats=${BENCH_REPEATS:-3}
fixture=${REMOTE_FIXTURE:-stages}
stages=${REMOTE_STAGES:-300}
stage_kb=${REMOTE_STAGE_KB:-1000}
dvc=${BENCH_DVC:-$root/.tools/dvc/bin/dvc}
dvc_link=${BENCH_DVC_LINK:-}
webdav=${BENCH_WEBDAV:-yes}
links=${REPRO_CACHE_LINK:-reflink,copy (default)}
[ "$dvc" = none ] || [ -x "$dvc" ] || { echo "bench_remote: no dvc at $dvc (BENCH_DVC=none skips it)" >&2; dvc=none; }

rm -rf "$dir"
mkdir -p "$dir"
nginx_pid=
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

# ---- workspace A with the outputs
a=$dir/a
if [ -n "${QUICK_WS:-}" ]; then
  what="the quick profile's outputs ($QUICK_WS)"
  mkdir -p "$a"
  # -a keeps a hard-link workspace's outputs linked to its cache/objects (and their modes): a
  # `cp -r` copy of one has read-only copies, which `status` reports as modified outputs.
  cp -a "$QUICK_WS"/. "$a"/
elif [ "$fixture" = stages ]; then
  what="generated: $stages stages x $stage_kb kB + one directory of $small x 4 kB"
  mkdir -p "$a"
  {
    echo "stages:"
    for i in $(seq 1 "$stages"); do
      printf '  s%d:\n    cmd: mkdir -p out && head -c %d /dev/urandom > out/s%d.bin\n    outs: [out/s%d.bin]\n' \
        "$i" $((stage_kb * 1000)) "$i" "$i"
    done
    echo "  small:"
    echo "    cmd: mkdir -p small && for i in \$(seq 1 $small); do head -c 4096 /dev/urandom > small/f\$i; done"
    echo "    outs: [small]"
  } >"$a/pipeline.yaml"
  (cd "$a" && "$bin" run --no-remote >/dev/null)
else
  what="synthetic: $big x $big_mib MiB + $small x 8 KiB"
  mkdir -p "$a"
  cat >"$a/pipeline.yaml" <<EOF
stages:
  big:
    cmd: mkdir -p out/big && for i in \$(seq 1 $big); do head -c $((big_mib * 1048576)) /dev/urandom > out/big/f\$i; done
    outs: [out/big]
  small:
    cmd: mkdir -p out/small && for i in \$(seq 1 $small); do head -c 8192 /dev/urandom > out/small/f\$i; done
    outs: [out/small]
EOF
  (cd "$a" && "$bin" run --no-remote >/dev/null)
fi
# The output paths, from the lock (what A's stages produced).
mapfile -t outs < <(python3 - "$a/repro.lock" <<'PY'
import sys, re
paths = []
in_outs = False
for line in open(sys.argv[1]):
    if re.match(r"\s+out_hashes:", line):
        in_outs = True
        continue
    m = re.match(r"\s{6,}([^:]+):\s*\S+", line)
    if in_outs and m:
        paths.append(m.group(1).strip().strip("'\""))
    elif not re.match(r"\s{6,}", line):
        in_outs = False
print("\n".join(sorted(set(paths))))
PY
)
[ "${#outs[@]}" -gt 0 ] || { echo "bench_remote: no outputs found in $a/repro.lock" >&2; exit 1; }
# The outputs' bytes: every file's size, each counted (du would count once the outputs of a
# hard-link workspace that share an object).
bytes=$(cd "$a" && find "${outs[@]}" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f", s}')
files=$(cd "$a" && find "${outs[@]}" -type f | wc -l)
file_kib=$(awk -v b="$bytes" 'BEGIN {printf "%.0f", b / 1024}')
mib=$(awk -v b="$bytes" 'BEGIN {printf "%.0f", b / 1048576}')
echo "outputs: ${#outs[@]} paths, $files files, $mib MiB ($file_kib KiB in files) — $what; links: $links"

now() { date +%s.%N; }
# Run a command; print "seconds flush_seconds".
timed() {
  sync
  local t0 t1 t2
  t0=$(now)
  "$@" >"$dir/last.log" 2>&1 || { cat "$dir/last.log" >&2; exit 1; }
  t1=$(now)
  sync
  t2=$(now)
  awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {printf "%.3f %.3f\n", b - a, c - b}'
}
warm() { find "$@" -type f -exec cat {} + >/dev/null; }

# DVC: a DVC project holding the same files (each output path `dvc add`ed), pushed once to a
# DVC remote in a shared directory; each timed `dvc pull` runs in a fresh checkout (its .dvc
# files and .dvc/config, no cache).
dvc_a=$dir/dvc-a
if [ "$dvc" != none ]; then
  mkdir -p "$dvc_a"
  (cd "$a" && cp -r --parents "${outs[@]}" "$dvc_a/")
  (cd "$dvc_a" && "$dvc" init --no-scm -q && "$dvc" remote add -d -q r "$dir/dvc-remote" &&
    "$dvc" add -q "${outs[@]}" && "$dvc" push -q) >"$dir/dvc-setup.log" 2>&1 ||
    { cat "$dir/dvc-setup.log" >&2; exit 1; }
fi
dvc_checkout() {
  rm -rf "$dir/dvc-b"
  mkdir -p "$dir/dvc-b/.dvc"
  cp "$dvc_a/.dvc/config" "$dir/dvc-b/.dvc/"
  [ -z "$dvc_link" ] || (cd "$dir/dvc-b" && "$dvc" config -q cache.type "$dvc_link")
  (cd "$dvc_a" && find . -type f -name '*.dvc' -not -path './.dvc/*' -exec cp --parents {} "$dir/dvc-b/" \;)
}

rows=()
bench_remote() {
  local name=$1 url=$2 src=$3 with_dvc=$4
  (cd "$a" && "$bin" push --remote "$url" >/dev/null)
  local i pull_s=() pull_f=() cp_s=() cp_f=() dvc_s=() dvc_f=()
  for i in $(seq 1 "$repeats"); do
    rm -rf "$dir/b" "$dir/cp"
    mkdir -p "$dir/b" "$dir/cp"
    # B is a fresh copy of the pipeline: every file of A's except its cache, lock and outputs.
    (cd "$a" && tar -cf - --exclude=./cache --exclude=./repro.lock "${outs[@]/#/--exclude=./}" .) |
      tar -xf - -C "$dir/b"
    warm "$src"
    read -r s f < <(cd "$dir/b" && timed "$bin" pull --remote "$url")
    grep -q "restored (remote)" "$dir/last.log" || { cat "$dir/last.log" >&2; exit 1; }
    pull_s+=("$s"); pull_f+=("$f")
    (cd "$a" && warm "${outs[@]}")
    read -r s f < <(cd "$a" && timed cp -r --parents "${outs[@]}" "$dir/cp/")
    cp_s+=("$s"); cp_f+=("$f")
    cmp -s <(cd "$a" && find "${outs[@]}" -type f -exec md5sum {} + | sort) \
           <(cd "$dir/b" && find "${outs[@]}" -type f -exec md5sum {} + | sort) ||
      { echo "bench_remote: pulled outputs differ from A's" >&2; exit 1; }
    if [ "$with_dvc" = yes ]; then
      dvc_checkout
      warm "$dir/dvc-remote"
      read -r s f < <(cd "$dir/dvc-b" && timed "$dvc" pull -q)
      dvc_s+=("$s"); dvc_f+=("$f")
      cmp -s <(cd "$a" && find "${outs[@]}" -type f -exec md5sum {} + | sort) \
             <(cd "$dir/dvc-b" && find "${outs[@]}" -type f -exec md5sum {} + | sort) ||
        { echo "bench_remote: dvc-pulled outputs differ from A's" >&2; exit 1; }
    fi
  done
  # Disk after the last pull: outputs and cache in one du, so a hard-linked file counts once.
  local du_b du_d=-
  du_b=$(cd "$dir/b" && du -sk "${outs[@]}" cache | awk '{s += $1} END {print s}')
  echo "$name: du -sk of B's outputs + cache/ after pull: $du_b KiB ($(awk -v d="$du_b" -v o="$file_kib" 'BEGIN {printf "%.2f", d / o}')x the outputs' $file_kib KiB)"
  if [ "${#dvc_s[@]}" -gt 0 ]; then
    du_d=$(cd "$dir/dvc-b" && du -sk "${outs[@]}" .dvc/cache | awk '{s += $1} END {print s}')
    echo "$name: du -sk of DVC's outputs + .dvc/cache after pull: $du_d KiB"
  fi
  local med
  med() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
  local ps pf cs cf ds=- df=-
  ps=$(med "${pull_s[@]}"); pf=$(med "${pull_f[@]}"); cs=$(med "${cp_s[@]}"); cf=$(med "${cp_f[@]}")
  [ "${#dvc_s[@]}" -gt 0 ] && { ds=$(med "${dvc_s[@]}"); df=$(med "${dvc_f[@]}"); }
  local line
  line=$(awk -v n="$name" -v l="$links" -v ps="$ps" -v pf="$pf" -v cs="$cs" -v cf="$cf" -v ds="$ds" -v df="$df" -v mib="$mib" \
      -v db="$du_b" -v dd="$du_d" -v o="$file_kib" 'BEGIN {
    d = (ds == "-") ? "not measured | —" : sprintf("%.2f s (+ %.2f flush) | %.1fx", ds, df, (ds + df) / (ps + pf))
    u = sprintf("%.0f MiB (%.2fx)", db / 1024, db / o)
    if (dd != "-") u = u sprintf("; DVC %.0f MiB (%.2fx)", dd / 1024, dd / o)
    printf "| %s | %s | %.2f s (+ %.2f flush) | %.0f MiB/s | %.2f s (+ %.2f flush) | %.1fx | %s | %s |", n, l, ps, pf, mib / (ps + pf), cs, cf, (ps + pf) / (cs + cf), d, u }')
  echo "$line   (pull runs: ${pull_s[*]}; cp runs: ${cp_s[*]}; dvc runs: ${dvc_s[*]:-})"
  rows+=("$line")
}

with_dvc=yes
[ "$dvc" = none ] && with_dvc=no
bench_remote "shared directory (file://)" "file://$dir/remote-fs" "$dir/remote-fs" "$with_dvc"

if [ "$webdav" = no ]; then
  echo "bench_remote: BENCH_WEBDAV=no; WebDAV row skipped" >&2
elif [ -x /usr/sbin/nginx ] && [ -e /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ]; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  n=$dir/nginx
  mkdir -p "$n/www/cache" "$n/tmp"
  cat >"$n/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_http_dav_ext_module.so;
daemon off;
master_process off;
worker_processes 1;
pid $n/nginx.pid;
error_log $n/error.log;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path $n/tmp/body;
  proxy_temp_path $n/tmp/proxy;
  fastcgi_temp_path $n/tmp/fastcgi;
  uwsgi_temp_path $n/tmp/uwsgi;
  scgi_temp_path $n/tmp/scgi;
  client_max_body_size 0;
  sendfile on;
  server {
    listen 127.0.0.1:$port;
    root $n/www;
    location /cache/ {
      dav_methods PUT DELETE MKCOL;
      dav_ext_methods PROPFIND OPTIONS;
      create_full_put_path on;
    }
  }
}
EOF
  /usr/sbin/nginx -p "$n" -e "$n/error.log" -c "$n/nginx.conf" &
  nginx_pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
  bench_remote "nginx WebDAV on 127.0.0.1 (http://)" "http://127.0.0.1:$port/cache" "$n/www/cache" no
else
  echo "bench_remote: nginx with dav-ext not installed; WebDAV row skipped (scripts/setup.sh --tests)" >&2
fi

cpu=$(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo)
machine="$(nproc) cores ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(df -PT "$dir" | awk 'NR==2 {print $2}') file system, $(date -u +%Y-%m-%d)"
table=$(
  echo "Outputs: $files files, $mib MiB — $what. Machine: $machine. Load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min load average at the end). Binary: ${bin#"$root"/}$([ "$dvc" != none ] && echo "; $("$dvc" --version 2>/dev/null | sed 's/^/DVC /'), cache.type ${dvc_link:-default}"). Median of $repeats runs; du after the last pull."
  echo
  echo "| remote | links | repro pull into an empty workspace | pull throughput | cp -r of the same bytes | pull / cp | dvc pull of the same files | dvc / repro | du of outputs + cache after pull (× outputs) |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
)
echo
echo "$table"
[ -n "${BENCH_RESULTS:-}" ] && echo "$table" >"$BENCH_RESULTS"
exit 0
