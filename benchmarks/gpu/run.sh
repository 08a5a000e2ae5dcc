#!/usr/bin/env bash
# The GPU checks, run once on a lent CUDA machine from the repository root:
#   bash benchmarks/gpu/run.sh OUT_DIR
# Writes OUT_DIR/check_kernels.json (Triton kernels vs float64 and the torch path, timings) and
# OUT_DIR/token_stats_full_cuda_bf16.json (benchmarks/token_stats.py at N=4096, d=1536, V=151936).
set -uo pipefail
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
timeout 300 python3 benchmarks/gpu/check_kernels.py --out "$out/check_kernels.json" | tail -40
timeout 240 python3 benchmarks/token_stats.py --full --device cuda --out "$out/token_stats_full_cuda_bf16.json" \
    --methods matmul naive ours ours_no_es | tail -15
