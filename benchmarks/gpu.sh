#!/usr/bin/env bash
# The benchmarks on a CUDA machine, unchanged: every figure of `make bench`, with training on the
# GPU (the Trainers use accelerator="auto", the hand-written baselines the same device), and
# training samples/second at batch sizes 64-4096 (benchmarks/throughput.py), and populations
# (benchmarks/population.py: K = 1, 8, 32, 64, 128, 256 toy MLPs and K = 1, 8, 32, 64 digits CNNs
# against a loop over the K models, eager and under torch.compile), into their own file.
#
#   benchmarks/gpu.sh [OUT.md]                       (default: BENCHMARKS-gpu.md)
#   REGZOO_BENCH_TINY=1 benchmarks/gpu.sh OUT.md     seconds-long smoke run (what the tests run)
#
# Needs the repository's .venv with a CUDA build of torch, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT="${1:-BENCHMARKS-gpu.md}"

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PY" - <<'PY'
import torch
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
PY

if [[ "${REGZOO_BENCH_TINY:-}" == "1" ]]; then
    "$PY" -m benchmarks --quick --only overhead throughput population --out "$OUT"
else
    "$PY" -m benchmarks --out "$OUT"
fi
