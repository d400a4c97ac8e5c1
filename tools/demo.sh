#!/usr/bin/env bash
# Set up (if needed) and run the demo: train a small model, pack, inspect, unpack.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup.sh"
exec "$ROOT/.venv/bin/python" "$ROOT/tools/demo.py" "$@"
