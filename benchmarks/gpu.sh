#!/usr/bin/env bash
# GPU checks from the source tree, with the machine's own torch and transformers (nothing is installed):
# a bf16 training step of mghft_pvt_small at 448 px, batch 32, with model FLOP utilisation; single-process DDP
# over NCCL; a short `mghft train` on generated stickers; prediction with CUDA. One summary line per check.
#
#   bash benchmarks/gpu.sh [step ddp train predict] [--batch 32 --size 448 --steps 10]
#
# Exit status: 0 all checks passed, 1 a check failed, 2 no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export MGHFT_OFFLINE="${MGHFT_OFFLINE:-1}" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
"$PYTHON" - <<'PY' || exit 2
import sys
import torch
if tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) < (2, 11):
    sys.exit(f"error: torch {torch.__version__} is older than 2.11")
PY
exec "$PYTHON" benchmarks/gpu_checks.py "$@"
