#!/usr/bin/env bash
# The GPU checks, run once on a lent CUDA machine from the repository root:
#   bash benchmarks/gpu/run.sh [OUT_DIR]            (default benchmarks/results/gpu)
# Steps, each under its own timeout so one slow step never loses the others' JSON:
#   1. check_fused_loss.py: the fused loss's Triton kernels and the fused PPO-clip loss vs float64
#   2. policy_loss.py --full in bf16 (N=4096, d=1536, V=151936) beside the peers' fused heads
#   3. token_stats.py --full in bf16 beside the peers' fused heads
#   4. check_kernels.py: the statistics kernels vs float64 (issue 7), if time is left
#   5. check_triton_matmul.py: the matmul kernels with the statistics in their epilogue vs
#      float64, timed against the bare matmul and the statistics forward, if time is left
#   6. check_controller.py: entropy_target's controller and the dynamics monitor (the engines'
#      closed loop, issue 27) on CUDA vs CPU at a real shape, timed against the statistics pass
# The peers (TRL's fused head, verl's FusedLinearForPPO, Liger) are used when their pure-Python
# wheels are carried in .whl/ (trl 1.16.0, liger_kernel 0.8.5, verl 0.9.1); without them their
# rows read "not importable". The machine has no network: nothing is fetched.
set -uo pipefail
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
site=/tmp/site
if compgen -G ".whl/*.whl" > /dev/null; then
    timeout 60 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$site" .whl/*.whl || echo "wheel install failed; peers skipped"
fi
export PYTHONPATH="src:$site"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
echo "== 1. fused loss kernels vs float64"
timeout 90 python3 benchmarks/gpu/check_fused_loss.py --out "$out/check_fused_loss.json" | tail -30
echo "== 2. policy loss, full shape, bf16"
timeout 120 python3 benchmarks/policy_loss.py --full --device cuda --out "$out/policy_loss_full_cuda_bf16.json" \
    --markdown "$out/policy_loss_full_cuda_bf16.md" | tail -20
echo "== 3. token statistics, full shape, bf16"
timeout 100 python3 benchmarks/token_stats.py --full --device cuda \
    --out "$out/token_stats_full_cuda_bf16.json" --markdown "$out/token_stats_full_cuda_bf16.md" | tail -20
echo "== 4. statistics kernels vs float64"
timeout 60 python3 benchmarks/gpu/check_kernels.py --out "$out/check_kernels.json" | tail -20
echo "== 5. matmul kernels with the statistics in the epilogue"
timeout 120 python3 benchmarks/gpu/check_triton_matmul.py --out "$out/check_triton_matmul.json" | tail -40
echo "== 6. closed-loop controller and monitor on CUDA vs CPU"
timeout 90 python3 benchmarks/gpu/check_controller.py --out "$out/check_controller.json" | tail -5
echo "done"
