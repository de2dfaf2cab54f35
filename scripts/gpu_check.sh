#!/usr/bin/env bash
# The GPU check on a lent machine: versions, the GPU, then scripts/gpu_check.py "$@".
#   bash scripts/gpu_check.sh [--device cuda] [--quick] [--keep-going] [--json FILE]
# Runs from the repository root with PYTHONPATH=. (no installation needed) and offline.
# PYTHON picks the interpreter (default: python3, else python). See docs/gpu-check.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=".${PYTHONPATH:+:${PYTHONPATH}}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DISTILLBENCH_PROGRESS=0

PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
"$PYTHON" - <<'PY'
import platform

import torch

try:
    import transformers

    tf = transformers.__version__
except ImportError:
    tf = "missing"
cuda = torch.version.cuda or "none"
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {cuda}), "
      f"transformers {tf}, GPUs visible to torch: {torch.cuda.device_count()}")
PY
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi -L || true
fi

exec "$PYTHON" scripts/gpu_check.py "$@"
