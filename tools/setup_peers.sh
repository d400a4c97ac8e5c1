#!/usr/bin/env bash
# Install the peer codecs that tools/bench_codec.py compares with. Idempotent.
#
#   1. bench/.peers/nncodec-venv: a venv of its own holding nncodec 2.1.3
#      (DeepCABAC, the MPEG NNR reference codec), installed as
#      /work/shared/PEERS.md says: its build dependencies first, then nncodec
#      itself with --no-deps --no-build-isolation (compiles its C++ coder,
#      about 3 minutes on 2 cores).
#   2. bench/.peers/stubs: stand-in `torchvision` and `cv2` modules. nncodec
#      imports both when it loads but uses them only in its dataset helpers;
#      PyPI's torchvision fails to import beside torch 2.13.0, so the
#      benchmark puts these stubs on PYTHONPATH instead.
#
# bench/.peers/ is gitignored: nothing of the peers is ever committed.
# Skips every step that is already done; the check at the end imports
# nncodec's deepCABAC extension with the stubs on the path.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '[setup_peers] %s\n' "$*" >&2; }

PEERS=bench/.peers
VENV="$PEERS/nncodec-venv"
STUBS="$PEERS/stubs"
PY="$VENV/bin/python"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
mkdir -p "$PEERS" "$STUBS"

# --- stubs ------------------------------------------------------------------
# Each stub is a package whose every attribute and submodule is a placeholder
# that raises if it is ever called, so a use outside import time fails loudly.
write_stub() {
    local name="$1"
    mkdir -p "$STUBS/$name"
    cat >"$STUBS/$name/__init__.py" <<EOF
"""Stand-in for $name, written by tools/setup_peers.sh for the nncodec benchmark venv.

nncodec imports $name at load time but the benchmark never uses it. Any
attribute or submodule resolves to a placeholder that raises when called.
"""
import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0.0+stub"
__path__ = []


class _Placeholder:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} is a stub (tools/setup_peers.sh); it cannot be used")

    def __mro_entries__(self, bases):
        return (object,)


class _StubModule(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self.__name__}.{attr}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("$name."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        mod = _StubModule(spec.name)
        mod.__path__ = []
        return mod

    def exec_module(self, module):
        pass


sys.meta_path.append(_Finder())
sys.modules[__name__].__class__ = _StubModule
EOF
}
for name in torchvision cv2; do
    if [[ -f "$STUBS/$name/__init__.py" ]] && grep -q "tools/setup_peers.sh" "$STUBS/$name/__init__.py"; then
        log "stub $name already written"
    else
        write_stub "$name"
        log "wrote stub $STUBS/$name"
    fi
done

check() {
    [[ -x "$PY" ]] && PYTHONPATH="$ROOT/$STUBS" "$PY" -c \
        'from nncodec.extensions import deepCABAC; import importlib.metadata as m; assert m.version("nncodec") == "2.1.3", m.version("nncodec")' \
        >/dev/null 2>&1
}

if check; then
    log "nncodec 2.1.3 already installed in $VENV (deepCABAC imports)"
    exit 0
fi

# --- venv and nncodec -------------------------------------------------------
if [[ ! -x "$PY" ]]; then
    log "creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
log "installing nncodec's dependencies: torch==2.13.0 numpy<2 pybind11 click tqdm h5py scikit-learn pandas"
"${PIP[@]}" torch==2.13.0 "numpy<2" pybind11 click tqdm h5py scikit-learn pandas
log "installing nncodec==2.1.3 (--no-deps --no-build-isolation; compiles its C++ coder, about 3 minutes)"
"${PIP[@]}" --no-deps --no-build-isolation nncodec==2.1.3

if check; then
    log "done: $VENV has nncodec $("$PY" -c 'import importlib.metadata as m; print(m.version("nncodec"))')"
else
    log "ERROR: nncodec installed but 'from nncodec.extensions import deepCABAC' fails; the error follows"
    PYTHONPATH="$ROOT/$STUBS" "$PY" -c 'from nncodec.extensions import deepCABAC' || true
    exit 1
fi
