#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent; safe to rerun):
#   - Debian packages: Fashion-MNIST (the default dataset), TeX for the PDF report, Chromium
#     for the HTML report's browser test, Slurm + munge for the cluster executor's tests;
#   - the PyPI wheel torch==2.11.0 (what tch 0.24 links against) into .venv, plus numpy and
#     safetensors for the Python baselines of the benchmarks (and, with --tests, torchvision
#     0.26.0 for the weight-import and paper-mini tests);
#   - .venv/torch -> the wheel's torch/ folder (LIBTORCH for the build, see .cargo/config.toml).
# Usage: scripts/setup.sh [--no-apt] [--tests]   (--tests adds the packages only tests need)
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

if [ "$apt" = 1 ] && command -v apt-get >/dev/null; then
  pkgs=(dataset-fashion-mnist)
  if [ "$tests" = 1 ]; then
    pkgs+=(texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-pictures
           chromium slurmctld slurmd slurm-client munge)
  else
    # the main job renders the PDF report when pdflatex is present
    pkgs+=(texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-pictures)
  fi
  missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import torch, numpy, safetensors; assert torch.__version__.startswith("2.11.0")' 2>/dev/null; then
  echo "setup: installing torch==2.11.0 into .venv (about 4.6 GB)"
  .venv/bin/pip install -q --disable-pip-version-check torch==2.11.0 numpy safetensors
fi
# Tests only: torchvision 0.26 (the release paired with torch 2.11) writes the reference
# checkpoints of the weight-import tests and the paper-mini profile; --no-deps keeps the torch
# wheel as it is, and pillow is the one dependency torchvision imports.
if [ "$tests" = 1 ] && ! .venv/bin/python -c 'import torchvision; assert torchvision.__version__.startswith("0.26.0")' 2>/dev/null; then
  echo "setup: installing torchvision==0.26.0 (tests)"
  .venv/bin/pip install -q --disable-pip-version-check torchvision==0.26.0 --no-deps
  .venv/bin/pip install -q --disable-pip-version-check pillow
fi
torch_dir=$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))')
ln -sfn "$torch_dir" .venv/torch
echo "setup: libtorch at $torch_dir"
