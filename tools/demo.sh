#!/usr/bin/env bash
# Set up (if needed) and run the demo: train LeNet-300-100 on MNIST with the rate
# term of ecnn.train, pack it over 100x smaller, and run it back in PyTorch and
# ONNX Runtime (tools/demo.py; options such as --epochs, --out, --quick pass through).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup.sh"
exec "$ROOT/.venv/bin/python" "$ROOT/tools/demo.py" "$@"
