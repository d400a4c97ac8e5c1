#!/usr/bin/env bash
# Create .venv if it is missing and install ecnn into it (editable) with its
# test tools and the plotting of `ecnn report`. Safe to run again: it
# reinstalls only when pyproject.toml, constraints.txt or this script changed. torch is pinned by constraints.txt to the CPU build
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
if [[ ! -f "$STAMP" || pyproject.toml -nt "$STAMP" || constraints.txt -nt "$STAMP" || tools/setup.sh -nt "$STAMP" ]]; then
    echo "[setup] installing ecnn and its dependencies into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,report]'
    touch "$STAMP"
fi
