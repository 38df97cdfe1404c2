#!/usr/bin/env bash
# The torch and array-API (CuPy) targets against F.cross_entropy on a CUDA GPU (issue 13, part 3).
# One short script for a machine with a GPU: installs what it lacks (best effort: a machine with
# no network keeps what it has, and a missing CuPy only drops its columns), prints one table (a few
# minutes). Never run by the test suite. Not yet run on a GPU (none was lent to the sessions that
# worked on it); its --dry-run mode runs on the CPU.
#
#   bash benchmarks/gpu_frameworks.sh
#   bash benchmarks/gpu_frameworks.sh --dry-run   # CPU, small sizes, installs nothing: a script check
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
if [ "${1:-}" = "--dry-run" ]; then
  exec python benchmarks/gpu_frameworks.py --dry-run
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_frameworks: no CUDA device (nvidia-smi found none); nothing to time" >&2
  exit 0
fi
nvidia-smi -L
try_install() {  # what: the import to test; then pip's arguments
  local what=$1
  shift
  python -c "$what" 2>/dev/null && return 0
  echo "gpu_frameworks: installing $*" >&2
  python -m pip install -q "$@" >&2 || echo "gpu_frameworks: could not install $* (offline?)" >&2
}
try_install "import sympy, jinja2, scipy, mpmath, array_api_compat" \
  sympy jinja2 scipy mpmath array-api-compat
# NOTE: PyPI's Linux torch wheel is the CUDA build (several GB); a CPU build already installed
# is not replaced (the script then says so and stops).
try_install "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" torch
try_install "import cupy; cupy.cuda.runtime.getDeviceCount()" cupy-cuda12x
exec python benchmarks/gpu_frameworks.py
