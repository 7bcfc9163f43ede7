#!/usr/bin/env bash
# S3 benchmark (issue 27): `repro push` and `repro pull` through one local S3 server (moto's
# server, scripts/setup.sh --tests puts it in .tools/moto; or, with S3_SERVER=s3s, s3s-fs, a
# Rust S3 server that keeps objects as files) against `aws s3 sync` (the plain
# sync tool: its time is what the server allows) and `dvc push`/`dvc pull` (DVC with dvc-s3)
# of the same files, each direction, same server, same run. Not a test: it prints figures and
# ratios (and, with BENCH_RESULTS, writes a Markdown table).
#
# Two parts (S3_PARTS, default "small big"):
#  small  S3_FILES files (100000) of S3_FILE_KB kB (10: about 1 GB), random bytes, in
#         directories of S3_PER_DIR files (100); once as ONE directory output (one stage) and
#         once as one directory output per stage (S3_FILES / S3_PER_DIR stages: 1,000). The
#         stages copy pre-made files (the bench times transfers, not the stages' work).
#  big    one file of S3_BIG_GIB GiB (6, sparse: `truncate`) pushed to the server in a
#         multipart upload (repro's defaults: parts of 64 MiB, four at once), against `aws s3 cp`
#         set to the same part size and concurrency; with moto, pulled in ranged GETs from nginx
#         over http:// (moto reads the whole object into memory for every ranged GET: four
#         ranges of 6 GiB at once would not fit), against one `curl` GET; and a file of
#         S3_BIG_PULL_GIB GiB (1 with moto, S3_BIG_GIB with s3s-fs, which has no nginx step)
#         pulled from the server, against `aws s3 cp`. repro's peak memory is measured as max RSS
#         (which counts the pages of files mapped into it) and as private memory (RssAnon,
#         sampled from /proc every 50 ms).
#
# Each tool of each part gets a fresh server (objects live in moto's memory and temporary
# files, or in a fresh s3s-fs root under BENCH_DIR; a fresh one keeps one tool's objects from
# slowing or filling the next). During every timed command the server's CPU time is read from
# /proc: moto is one Python process, and when its CPU seconds come near the wall time the
# server is the bottleneck, not the client (s3s-fs is multi-threaded: its CPU can pass the wall
# time; it lists a bucket by walking its whole directory tree for every page of 1,000 keys).
# Pulls go into an empty place (a fresh workspace with the pipeline only, a fresh DVC checkout
# with its .dvc files, an empty directory) and are checked against the source (`diff -r`, or
# `cmp` for the big file). Each tool runs with its defaults: repro --transfers 16, aws's 10
# concurrent requests, DVC's jobs (4 × cores); repro and DVC place files from their caches
# with their default link mode (copy) in the small part, REPRO_CACHE_LINK=hardlink in the big
# part (disk: the file would be stored three times).
#
# Environment: REPRO_BIN (default target/release/repro), BENCH_DIR (/tmp/repro-bench-s3,
# deleted at the end), S3_PARTS, S3_FILES, S3_FILE_KB, S3_PER_DIR, S3_BIG_GIB, S3_BIG_PUSH_GIB
# (the size pushed: default S3_BIG_GIB; moto needs about 4.5 × it in memory), S3_BIG_PULL_GIB,
# BENCH_DVC (a dvc with dvc-s3; default /tmp/bench-venv/bin/dvc, then .tools/dvc/bin/dvc;
# `none` skips DVC), BENCH_AWS (aws CLI; default `aws` on PATH; `none` skips it), MOTO
# (default .tools/moto/bin/moto_server), BENCH_RESULTS (file for the Markdown table).
# S3_SERVER: moto (default) or s3s; S3S_FS: the s3s-fs binary (default .tools/s3s/bin/s3s-fs),
# run with --access-key test --secret-key test on a fresh root. s3s-fs is a benchmark-only tool,
# not part of scripts/setup.sh: `CARGO_TARGET_DIR=/tmp/s3s-target cargo install s3s-fs
# --version 0.17.0 --features binary --ignore-rust-version --locked --root .tools/s3s` (0.17.0
# declares rustc 1.96 but builds with 1.95; 0.14.1, the newest that declares ≤ 1.95, answers a
# HEAD on a key that is a prefix of other keys with 500, not 404, which fails `dvc pull`).
# s3s-fs runs with scripts/tcp_nodelay.c preloaded (built here with gcc): it leaves Nagle on,
# and each small GET on a kept-alive connection then waits ~40 ms for the client's delayed ACK
# (see that file); S3S_NODELAY=no runs it as it is. S3_LAYOUTS: the small part's layouts
# ("dir stages", the default, or one of them).
# Disk: the small part needs about 6 × the files' size; the big part about 2 × S3_BIG_GIB
# (moto's parts and object in its temporary files, then the pulled copy) and moto about
# 2 × S3_BIG_GIB of memory while it completes the upload (it joins the parts in memory); with
# s3s-fs, about 4 × S3_BIG_GIB (its parts, then its object, for each tool, and both pulls).
# Time: against moto each small file costs every tool a few ms of the server's CPU; all tools
# and both layouts took about 4 minutes at 2,000 files and 37 at 20,000 (2 loaded cores; DVC's
# pull of 1,000 directory outputs alone 9 minutes and 13 GB of memory there).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$(realpath "${REPRO_BIN:-target/release/repro}")
[ -x "$bin" ] || { echo "bench_s3: no binary at $bin; run cargo build --release" >&2; exit 1; }
dir=${BENCH_DIR:-/tmp/repro-bench-s3}
parts=${S3_PARTS:-small big}
nfiles=${S3_FILES:-100000}
file_kb=${S3_FILE_KB:-10}
per_dir=${S3_PER_DIR:-100}
big_gib=${S3_BIG_GIB:-6}
server=${S3_SERVER:-moto}
case $server in
  moto)
    moto=${MOTO:-$root/.tools/moto/bin/moto_server} server_name=moto
    [ -x "$moto" ] || { echo "bench_s3: no moto_server at $moto (scripts/setup.sh --tests)" >&2; exit 1; }
    ;;
  s3s)
    s3s_fs=${S3S_FS:-$root/.tools/s3s/bin/s3s-fs} server_name=s3s-fs
    [ -x "$s3s_fs" ] || { echo "bench_s3: no s3s-fs at $s3s_fs (cargo install s3s-fs, see above)" >&2; exit 1; }
    ;;
  *) echo "bench_s3: S3_SERVER is moto or s3s, not $server" >&2; exit 1 ;;
esac
dvc=${BENCH_DVC:-}
if [ -z "$dvc" ]; then
  for d in /tmp/bench-venv/bin/dvc "$root/.tools/dvc/bin/dvc"; do
    if [ -x "$d" ] && "$(dirname "$d")/python" -c 'import dvc_s3' 2>/dev/null; then dvc=$d; break; fi
  done
  [ -n "$dvc" ] || { echo "bench_s3: no dvc with dvc-s3 found (pip install dvc-s3); DVC skipped" >&2; dvc=none; }
fi
aws=${BENCH_AWS:-$(command -v aws || echo none)}
[ -x /usr/bin/time ] || { echo "bench_s3: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
unset REPRO_REMOTE AWS_PROFILE AWS_SESSION_TOKEN
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$dir"
mkdir -p "$dir"
nodelay=
if [ "$server" = s3s ] && [ "${S3S_NODELAY:-yes}" != no ]; then
  gcc -shared -fPIC -O2 -o "$dir/tcp_nodelay.so" "$root/scripts/tcp_nodelay.c" -ldl
  nodelay=$dir/tcp_nodelay.so
fi
server_pid=
nginx_pid=
no_server=
sample_pat=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
  rm -rf "$dir/server-tmp"
}
cleanup() {
  stop_server
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

# A fresh server (S3_SERVER) on a free port with buckets $@; sets $endpoint and $server_pid.
# $dir/server-tmp is moto's TMPDIR, or s3s-fs's root (its objects, as files).
start_server() {
  stop_server
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$dir/server-tmp"
  case $server in
    moto) TMPDIR=$dir/server-tmp "$moto" -H 127.0.0.1 -p "$port" >"$dir/server.log" 2>&1 & ;;
    s3s) LD_PRELOAD=$nodelay "$s3s_fs" --host 127.0.0.1 --port "$port" --access-key test --secret-key test "$dir/server-tmp" >"$dir/server.log" 2>&1 & ;;
  esac
  server_pid=$!
  for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
  endpoint=http://127.0.0.1:$port
  export AWS_ENDPOINT_URL=$endpoint
  local b
  # Signed (s3s-fs checks signatures and wants x-amz-content-sha256; moto ignores both).
  for b in "$@"; do
    curl -sf --aws-sigv4 aws:amz:us-east-1:s3 --user test:test -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
      -X PUT "$endpoint/$b" >/dev/null
  done
}
# CPU seconds (user + system, all threads) the server has used so far.
server_cpu() { [ -n "$no_server" ] && { echo 0; return; }; awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$server_pid/stat"; }

# timed LABEL CMD...: run CMD (output to $dir/last.log); sets t_wall, t_cpu (the command's
# user+sys), t_rss (its max RSS, MB), t_server (the server's CPU seconds meanwhile).
timed() {
  local label=$1
  shift
  sync
  local m0 m1
  m0=$(server_cpu)
  # With $sample_pat set, the peak private (anonymous) memory of the processes it matches is
  # sampled too: max RSS also counts the pages of files mapped into the process.
  local sampler=
  echo 0 >"$dir/anon.out"
  if [ -n "$sample_pat" ]; then
    (
      max=0
      while :; do
        for p in $(pgrep -f "$sample_pat"); do
          a=$(awk '/RssAnon/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
          [ -n "$a" ] && [ "$a" -gt "$max" ] && max=$a && echo "$max" >"$dir/anon.out"
        done
        sleep 0.05
      done
    ) &
    sampler=$!
  fi
  /usr/bin/time -f '%e %U %S %M' -o "$dir/time.out" "$@" >"$dir/last.log" 2>&1 ||
    { echo "bench_s3: $label failed:" >&2; tail -30 "$dir/last.log" >&2; exit 1; }
  m1=$(server_cpu)
  [ -n "$sampler" ] && { kill "$sampler"; wait "$sampler" 2>/dev/null || true; }
  read -r t_wall u s k <"$dir/time.out"
  t_cpu=$(awk -v u="$u" -v s="$s" 'BEGIN {printf "%.1f", u + s}')
  t_rss=$(awk -v k="$k" 'BEGIN {printf "%.0f", k / 1024}')
  t_mem="$t_rss MB"
  [ -n "$sample_pat" ] && t_mem+=" (anonymous $(awk '{printf "%.0f", $1 / 1024}' "$dir/anon.out") MB)"
  t_server=$(awk -v a="$m0" -v b="$m1" 'BEGIN {printf "%.1f", b - a}')
  local hwm=-
  [ -z "$no_server" ] && hwm=$(awk '/VmHWM/ {printf "%.0f MB", $2 / 1024}' "/proc/$server_pid/status")
  echo "  $label: ${t_wall} s wall, ${t_cpu} s CPU, max RSS ${t_mem}; $server_name ${t_server} s CPU, its peak RSS so far $hwm"
}

rows=()
# row WHAT TOOL DIRECTION: one table line from the last timed command and the reference
# time $ref (repro's wall time for the same direction).
row() {
  local ratio=-
  [ "$2" != repro ] && ratio=$(awk -v r="$ref" -v t="$t_wall" 'BEGIN {printf "%.2f× repro", t / r}')
  local cpu="$t_server s"
  [ -n "$no_server" ] && cpu="— (nginx)"
  rows+=("| $1 | $2 | $3 | $t_wall s | $ratio | $t_cpu s | $t_mem | $cpu |")
}

dvc_remote() { # in a DVC project: remote r on bucket $1, the server's endpoint
  "$dvc" remote add -d -q r "s3://$1/store"
  "$dvc" remote modify -q r endpointurl "$endpoint"
}
dvc_checkout() { # a fresh checkout of DVC project $1 at $2: config and .dvc files, no cache
  rm -rf "$2"
  mkdir -p "$2/.dvc"
  cp "$1/.dvc/config" "$2/.dvc/"
  (cd "$1" && find . -type f -name '*.dvc' -not -path './.dvc/*' -exec cp --parents {} "$2/" \;)
}
clear_page_cache_free() { rm -rf "$@"; sync; }

# ---- small files
if [[ " $parts " == *" small "* ]]; then
  ndirs=$(((nfiles + per_dir - 1) / per_dir))
  src=$dir/src
  echo "making $nfiles files of $file_kb kB in $ndirs directories"
  python3 - "$src" "$nfiles" "$file_kb" "$per_dir" <<'PY'
import os, sys
src, n, kb, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    d = os.path.join(src, f"d{i // per:05d}")
    if i % per == 0:
        os.makedirs(d)
    with open(os.path.join(d, f"f{i % per:03d}"), "wb") as f:
        f.write(os.urandom(kb * 1000))
PY
  small_mb=$(du -sm --apparent-size "$src" | cut -f1)
  mapfile -t subdirs < <(ls "$src")

  for layout in ${S3_LAYOUTS:-dir stages}; do
    ws=$dir/ws-$layout
    mkdir -p "$ws"
    if [ "$layout" = dir ]; then
      what="$nfiles files ($small_mb MiB) as one directory output"
      printf 'stages:\n  all:\n    cmd: mkdir -p out && cp -r %s out/all\n    outs: [out/all]\n' "$src" >"$ws/pipeline.yaml"
    else
      what="$nfiles files ($small_mb MiB) as $ndirs stage outputs of $per_dir files"
      {
        echo "stages:"
        for d in "${subdirs[@]}"; do
          printf '  %s:\n    cmd: mkdir -p out && cp -r %s/%s out/%s\n    outs: [out/%s]\n' "$d" "$src" "$d" "$d" "$d"
        done
      } >"$ws/pipeline.yaml"
    fi
    echo "== $what"
    (cd "$ws" && "$bin" run --no-remote >/dev/null)

    # repro
    start_server repro
    url=s3://repro/cache
    timed "repro push" bash -c "cd '$ws' && '$bin' push --remote $url"
    ref=$t_wall; row "$what" repro push; push_ref=$t_wall
    b=$dir/ws-$layout-pull
    mkdir -p "$b"
    cp "$ws/pipeline.yaml" "$b/"
    timed "repro pull" bash -c "cd '$b' && '$bin' pull --remote $url"
    grep -q "restored (remote)" "$dir/last.log" || { cat "$dir/last.log" >&2; exit 1; }
    if [ "$layout" = dir ]; then diff -rq "$src" "$b/out/all"; else diff -rq "$src" "$b/out"; fi
    ref=$t_wall; row "$what" repro pull; pull_ref=$t_wall
    rm -rf "$b"

    # aws s3 sync: the same files, the same tree
    if [ "$aws" != none ]; then
      start_server aws
      ref=$push_ref
      timed "aws s3 sync (push)" "$aws" s3 sync --only-show-errors --endpoint-url "$endpoint" "$src" s3://aws/data
      row "$what" "aws s3 sync" push
      ref=$pull_ref
      timed "aws s3 sync (pull)" "$aws" s3 sync --only-show-errors --endpoint-url "$endpoint" s3://aws/data "$dir/aws-pull"
      diff -rq "$src" "$dir/aws-pull"
      row "$what" "aws s3 sync" pull
      rm -rf "$dir/aws-pull"
    fi

    # DVC: a project holding the same tree (`dvc add`ed beforehand, not timed)
    if [ "$dvc" != none ]; then
      start_server dvc
      p=$dir/dvc-$layout
      mkdir -p "$p/data"
      if [ "$layout" = dir ]; then
        cp -r "$src" "$p/data/all"
        targets=(data/all)
      else
        cp -r "$src"/. "$p/data/"
        targets=("${subdirs[@]/#/data/}")
      fi
      (cd "$p" && "$dvc" init --no-scm -q && dvc_remote dvc && "$dvc" add -q "${targets[@]}") >"$dir/dvc-setup.log" 2>&1 ||
        { tail -30 "$dir/dvc-setup.log" >&2; exit 1; }
      ref=$push_ref
      timed "dvc push" bash -c "cd '$p' && '$dvc' push -q"
      row "$what" "dvc" push
      dvc_checkout "$p" "$dir/dvc-pull"
      ref=$pull_ref
      timed "dvc pull" bash -c "cd '$dir/dvc-pull' && '$dvc' pull -q"
      diff -rq -x '*.dvc' "$src" "$dir/dvc-pull/data$([ "$layout" = dir ] && echo /all)"
      row "$what" "dvc" pull
      rm -rf "$p" "$dir/dvc-pull"
    fi
    stop_server
    rm -rf "$ws"
  done
  rm -rf "$src"
fi

# ---- one large file
if [[ " $parts " == *" big "* ]]; then
  [ "$aws" != none ] || { echo "bench_s3: the big part needs the aws CLI (pip install awscli)" >&2; exit 1; }
  export REPRO_CACHE_LINK=hardlink
  big_ws() { # big_ws DIR GIB: a workspace whose one stage made a sparse file of GIB GiB
    mkdir -p "$1"
    printf 'stages:\n  big:\n    cmd: truncate -s %dG big.bin\n    outs: [big.bin]\n' "$2" >"$1/pipeline.yaml"
    (cd "$1" && "$bin" run --no-remote >/dev/null)
  }
  # Moto keeps a multipart upload's parts and then joins them in memory: its peak RSS was
  # about 4.5 times the object (4.5 GB for 1 GiB), so a 6 GiB upload does not fit in this
  # machine's memory. The push to moto uses S3_BIG_PUSH_GIB (default S3_BIG_GIB).
  push_gib=${S3_BIG_PUSH_GIB:-$big_gib}
  what="one $push_gib GiB file (sparse), multipart"
  echo "== $what (disk before: $(df -h --output=avail "$dir" | tail -1 | tr -d ' ') free)"
  wp=$dir/ws-push
  big_ws "$wp" "$push_gib"
  # aws with repro's part size and concurrency (64 MiB, 4 at once): the same requests.
  printf '[default]\ns3 =\n  multipart_threshold = 256MB\n  multipart_chunksize = 64MB\n  max_concurrent_requests = 4\n' >"$dir/aws-config"
  start_server repro
  url=s3://repro/cache
  sample_pat="^$bin push"
  timed "repro push" bash -c "cd '$wp' && '$bin' push --remote $url"
  sample_pat=
  ref=$t_wall; row "$what" repro "push (S3 multipart)"; big_push_rss=$t_mem
  start_server aws
  timed "aws s3 cp (push)" env AWS_CONFIG_FILE="$dir/aws-config" "$aws" s3 cp --only-show-errors --endpoint-url "$endpoint" "$wp/big.bin" s3://aws/big.bin
  row "$what" "aws s3 cp" "push (S3 multipart)"
  stop_server
  rm -rf "$wp"
  # Pull: moto answers each ranged GET by reading the whole object into memory and slicing it
  # (moto 5.2, s3/responses.py: _handle_range_header on key.value), so four ranges of a 6 GiB
  # object at once would need some 24 GiB in moto. The large pull is measured from nginx over
  # http:// (repro's same ranged-GET path), serving a remote made by an untimed push to a
  # shared directory (its copy of the object then replaced by a hard link to the sparse cache
  # object, to save the disk), against one `curl` GET of the same object; the pull from moto is
  # measured on a smaller file (S3_BIG_PULL_GIB, default 1), against `aws s3 cp`. s3s-fs reads
  # ranges from its object file: no nginx step; the pull from it is of S3_BIG_GIB by default.
  ws=$dir/ws-big
  b=$dir/ws-big-pull
  big_pull_rss=
  if [ "$server" = moto ]; then
    what="one $big_gib GiB file (sparse), multipart"
    big_ws "$ws" "$big_gib"
    (cd "$ws" && "$bin" push --remote "file://$dir/www/cache" >/dev/null)
    hash=$(ls "$dir/www/cache/cas")
    ln -f "$ws/cache/objects/${hash:0:2}/${hash:2}" "$dir/www/cache/cas/$hash"
    n=$dir/nginx
    mkdir -p "$n/tmp"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$n/nginx.conf" <<EOF
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
  sendfile on;
  server { listen 127.0.0.1:$port; root $dir/www; }
}
EOF
    /usr/sbin/nginx -p "$n" -e "$n/error.log" -c "$n/nginx.conf" &
    nginx_pid=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
    mkdir -p "$b"
    cp "$ws/pipeline.yaml" "$b/"
    no_server=1
    sample_pat="^$bin pull"
    timed "repro pull (http)" bash -c "cd '$b' && '$bin' pull --remote http://127.0.0.1:$port/cache"
    sample_pat=
    grep -q "restored (remote)" "$dir/last.log" || { cat "$dir/last.log" >&2; exit 1; }
    cmp "$ws/big.bin" "$b/big.bin"
    ref=$t_wall; row "$what" repro "pull (nginx http://, ranged)"; big_pull_rss=$t_mem
    echo "  disk at the end of the pull: $(df -h --output=avail "$dir" | tail -1 | tr -d ' ') free"
    rm -rf "$b"
    timed "curl (pull)" curl -sf -o "$dir/curl-big.bin" "http://127.0.0.1:$port/cache/cas/$hash"
    cmp "$ws/big.bin" "$dir/curl-big.bin"
    row "$what" "curl, one GET" "pull (nginx http://)"
    rm -f "$dir/curl-big.bin"
    kill "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true; nginx_pid=
    no_server=
    rm -rf "$ws" "$dir/www"
  fi

  # The pull from the server (from moto, on a smaller file).
  pull_gib=${S3_BIG_PULL_GIB:-$([ "$server" = moto ] && echo 1 || echo "$big_gib")}
  what="one $pull_gib GiB file (sparse), multipart"
  big_ws "$ws" "$pull_gib"
  start_server repro aws
  (cd "$ws" && "$bin" push --remote $url >/dev/null)
  mkdir -p "$b"
  cp "$ws/pipeline.yaml" "$b/"
  sample_pat="^$bin pull"
  timed "repro pull" bash -c "cd '$b' && '$bin' pull --remote $url"
  sample_pat=
  grep -q "restored (remote)" "$dir/last.log" || { cat "$dir/last.log" >&2; exit 1; }
  cmp "$ws/big.bin" "$b/big.bin"
  ref=$t_wall; row "$what" repro "pull (S3 ranged)"; small_pull_rss=$t_mem
  rm -rf "$b"
  if [ "$aws" != none ]; then
    env AWS_CONFIG_FILE="$dir/aws-config" "$aws" s3 cp --only-show-errors --endpoint-url "$endpoint" "$ws/big.bin" s3://aws/big.bin
    timed "aws s3 cp (pull)" env AWS_CONFIG_FILE="$dir/aws-config" "$aws" s3 cp --only-show-errors --endpoint-url "$endpoint" s3://aws/big.bin "$dir/aws-big.bin"
    cmp "$ws/big.bin" "$dir/aws-big.bin"
    row "$what" "aws s3 cp" "pull (S3 ranged)"
    rm -f "$dir/aws-big.bin"
  fi
  unset REPRO_CACHE_LINK
  stop_server
  rm -rf "$ws"
  mem="push $big_push_rss ($push_gib GiB)"
  [ -n "$big_pull_rss" ] && mem+=", pull $big_pull_rss ($big_gib GiB from nginx)"
  echo "repro's peak memory (max RSS): $mem, pull $small_pull_rss ($pull_gib GiB from $server_name) (target ≤ 500 MB)"
fi

cpu=$(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo)
machine="$(nproc) cores ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(df -PT "$dir" | awk 'NR==2 {print $2}'), $(date -u '+%Y-%m-%d %H:%M UTC')"
case $server in
  moto) versions="repro: ${bin#"$root"/}; moto $("$(dirname "$moto")/python" -c 'import moto; print(moto.__version__)' 2>/dev/null)" ;;
  s3s) versions="repro: ${bin#"$root"/}; $("$s3s_fs" --version)${nodelay:+ (TCP_NODELAY preloaded)}" ;;
esac
[ "$aws" != none ] && versions+="; $("$aws" --version 2>&1 | cut -d' ' -f1)"
[ "$dvc" != none ] && versions+="; DVC $("$dvc" --version 2>/dev/null) with dvc-s3 $("$(dirname "$dvc")/python" -c 'import importlib.metadata as m; print(m.version("dvc-s3"))')"
table=$(
  echo "Machine: $machine. Load at the start: $load_start, at the end: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-min). $versions. One run each."
  echo
  echo "| data | tool | direction | wall | against repro | client CPU | client max RSS | $server_name CPU |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
)
echo
echo "$table"
[ -n "${BENCH_RESULTS:-}" ] && echo "$table" >"$BENCH_RESULTS"
exit 0
