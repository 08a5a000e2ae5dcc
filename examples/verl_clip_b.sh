#!/usr/bin/env bash
# Clip_B (arXiv 2602.03392) in verl 0.9 at the paper's scale: Qwen2.5-7B-Instruct on pass-rate
# filtered DAPO-Math-17k, 64 prompts x 16 samples, lr 1e-6, one node of 8 GPUs (80 GB each).
# NOT run end to end here (no GPU cluster, no vLLM on the test machines): the plug-in's pieces
# are verified on CPU in verl's real engine (tests/integrations/test_verl_*.py).
#
#   MODEL=/models/Qwen2.5-7B-Instruct DATA=/data/dapo-math-17k.parquet bash examples/verl_clip_b.sh
#
# Needs: pip install "entropy-dynamics[verl]" vllm (the plug-in loads in every Ray worker through
# verl's `verl.plugins` entry point). Resumable: filter-data resumes from its decisions file, the
# data split refuses to overwrite, and verl resumes from its last checkpoint (trainer.resume_mode).
set -euo pipefail
MODEL=${MODEL:?set MODEL to a local model directory}
DATA=${DATA:?set DATA to the DAPO-Math-17k parquet file}
OUT=${OUT:-data}
RECIPE=${RECIPE:-clip_b}  # grpo | clip_b | clip_v | entropy_target
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"

# 1. the paper's pass-rate filter with the model you train (16 samples per problem)
entropy-dynamics filter-data --model "$MODEL" --data "$DATA" --preset dapo --samples 16 \
    --output "$OUT/dapo-math-17k.decisions.jsonl"
# 2. verl's parquet files: 500 held out (DAPO500), the rest for training
[ -f "$OUT/dapo-math-17k.train.parquet" ] || python "$ROOT/examples/verl_prepare_data.py" \
    "$OUT/dapo-math-17k.decisions.kept.jsonl" --out-dir "$OUT"
# 3. verl's trainer with the recipe (configs/verl/$RECIPE.yaml) and the plug-in's filter
python -m verl.trainer.main_ppo --config-path "$ROOT/configs/verl" --config-name "$RECIPE" \
    actor_rollout_ref.model.path="$MODEL" \
    data.train_files="$OUT/dapo-math-17k.train.parquet" \
    data.val_files="$OUT/dapo-math-17k.dapo500.parquet" \
    trainer.resume_mode=auto "$@"
