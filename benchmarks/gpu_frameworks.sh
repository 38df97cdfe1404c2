#!/usr/bin/env bash
# The torch and array-API (CuPy) targets against F.cross_entropy on a CUDA GPU (issue 13, part 3).
# One short script for a machine with a GPU: installs what it needs, prints one table (a few
# minutes). Never run by the test suite. Not yet run on a GPU (none was lent to either session that
# worked on it); its --dry-run mode was run on the CPU.
#
#   bash benchmarks/gpu_frameworks.sh
#   bash benchmarks/gpu_frameworks.sh --dry-run   # CPU, small sizes, installs nothing: a script check
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--dry-run" ]; then
  PYTHONPATH=$PWD exec python benchmarks/gpu_frameworks.py --dry-run
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_frameworks: no CUDA device (nvidia-smi found none); nothing to time" >&2
  exit 0
fi
nvidia-smi -L
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
  || pip install -q torch  # the CUDA build (several GB): only on a GPU machine
python -c "import cupy" 2>/dev/null || pip install -q cupy-cuda12x
pip install -q array-api-compat sympy jinja2 scipy mpmath hypothesis
PYTHONPATH=$PWD python benchmarks/gpu_frameworks.py
