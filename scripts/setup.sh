#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent; safe to rerun):
#   - Debian packages: Fashion-MNIST (the default dataset), TeX for the PDF report, Chromium
#     for the HTML report's browser test, Slurm + munge for the cluster executor's tests,
#     e2fsprogs (mkfs.ext4) for the 1-second file system of the racy-clean tests;
#   - the PyPI wheel torch==2.11.0 (what tch 0.24 links against) into .venv, plus numpy and
#     safetensors for the Python baselines of the benchmarks (and, with --tests, torchvision
#     0.26.0 for the weight-import and paper-mini tests);
#   - .venv/torch -> the wheel's torch/ folder (LIBTORCH for the build, see .cargo/config.toml);
#   - with --tests, the remote cache's test servers: nginx with WebDAV (Debian) and the S3
#     server moto (PyPI, into .tools/moto).
# Usage: scripts/setup.sh [--no-apt] [--tests]   (--tests adds the packages only tests need)
# Without root (and without password-less sudo) the missing Debian packages are listed and the
# rest of the set-up goes on. REPRO_TORCH_PYTHON / REPRO_LIBTORCH reuse an existing torch 2.11.0.
set -euo pipefail
cd "$(dirname "$0")/.."

apt=1; tests=0
for a in "$@"; do
  case "$a" in
    --no-apt) apt=0 ;;
    --tests) tests=1 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

# Debian packages: installed when possible (root, or sudo without a password); otherwise the
# missing ones are named and set-up goes on with the rest.
if [ "$apt" = 1 ] && command -v dpkg >/dev/null; then
  pkgs=(dataset-fashion-mnist)
  # `python3 -m venv` needs ensurepip, which Debian ships separately.
  python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
  if [ "$tests" = 1 ]; then
    pkgs+=(texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-pictures
           chromium slurmctld slurmd slurm-client munge nginx libnginx-mod-http-dav-ext
           e2fsprogs   # mkfs.ext4: the 1-second file system of tests/racy_clean.rs
           # podman runs tests/container.rs's stages; runc besides crun, which cannot start
           # containers on hosts with hybrid cgroups; busybox-static is the test image's rootfs
           podman runc busybox-static)
  else
    # the main job renders the PDF report when pdflatex is present
    pkgs+=(texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-pictures)
  fi
  missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo -n); fi
    if command -v apt-get >/dev/null && { [ "${#sudo[@]}" = 0 ] || sudo -n true 2>/dev/null; }; then
      echo "setup: installing Debian packages: ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      "${sudo[@]}" apt-get update -q
      "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
      echo "setup: cannot install Debian packages (not root, no password-less sudo); missing:" >&2
      echo "setup:   ${missing[*]}" >&2
      echo "setup: ask an administrator for: apt-get install ${missing[*]}   (going on without them)" >&2
    fi
  fi
fi

if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv; then
    echo "setup: python3 -m venv failed: install python3-venv (see above)" >&2
    exit 1
  fi
fi
# An existing torch 2.11.0 is reused instead of downloading the 4.6 GB wheel again:
#   REPRO_TORCH_PYTHON=/path/to/python   a Python environment whose torch is 2.11.0, or
#   REPRO_LIBTORCH=/path/to/libtorch     a libtorch 2.11.0 directory (with lib/ and include/).
torch_dir=""
if [ -n "${REPRO_LIBTORCH:-}" ]; then
  [ -f "$REPRO_LIBTORCH/lib/libtorch_cpu.so" ] || { echo "setup: REPRO_LIBTORCH=$REPRO_LIBTORCH has no lib/libtorch_cpu.so" >&2; exit 1; }
  torch_dir=$REPRO_LIBTORCH
elif [ -n "${REPRO_TORCH_PYTHON:-}" ]; then
  torch_dir=$("$REPRO_TORCH_PYTHON" -c 'import torch, os; assert torch.__version__.startswith("2.11.0"), torch.__version__; print(os.path.dirname(torch.__file__))') \
    || { echo "setup: REPRO_TORCH_PYTHON=$REPRO_TORCH_PYTHON has no torch 2.11.0" >&2; exit 1; }
fi
if [ -n "$torch_dir" ]; then
  # Only the small packages the Python baselines need.
  .venv/bin/python -c 'import numpy, safetensors' 2>/dev/null \
    || .venv/bin/pip install -q --disable-pip-version-check numpy safetensors
  echo "setup: reusing torch 2.11.0 at $torch_dir"
else
  if ! .venv/bin/python -c 'import torch, numpy, safetensors; assert torch.__version__.startswith("2.11.0")' 2>/dev/null; then
    echo "setup: installing torch==2.11.0 into .venv (about 4.6 GB; set REPRO_TORCH_PYTHON or REPRO_LIBTORCH to reuse one)"
    .venv/bin/pip install -q --disable-pip-version-check torch==2.11.0 numpy safetensors
  fi
  torch_dir=$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))')
fi
# Tests only: torchvision 0.26 (the release paired with torch 2.11) writes the reference
# checkpoints of the weight-import tests and the paper-mini profile; --no-deps keeps the torch
# wheel as it is, and pillow is the one dependency torchvision imports.
if [ "$tests" = 1 ] && ! .venv/bin/python -c 'import torchvision; assert torchvision.__version__.startswith("0.26.0")' 2>/dev/null; then
  echo "setup: installing torchvision==0.26.0 (tests)"
  .venv/bin/pip install -q --disable-pip-version-check torchvision==0.26.0 --no-deps
  .venv/bin/pip install -q --disable-pip-version-check pillow
fi
ln -sfn "$torch_dir" .venv/torch
echo "setup: libtorch at $torch_dir"

if [ "$tests" = 1 ] && [ ! -x .tools/moto/bin/moto_server ]; then
  echo "setup: installing moto[server] (an S3-compatible test server) into .tools/moto"
  python3 -m venv .tools/moto
  .tools/moto/bin/pip install -q --disable-pip-version-check 'moto[server]'
fi
