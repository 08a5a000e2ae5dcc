"""Final evaluation of a finished run: ``final_eval.json`` with per-problem correct counts.

Written by :mod:`entropy_dynamics.study.experiments` after each run of a grid; the report's Pass@k
table and per-problem pass-rate histogram read it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from entropy_dynamics.training.config import TrainConfig

__all__ = ["FINAL_EVAL_FILE", "final_eval_current", "final_evaluation"]

FINAL_EVAL_FILE = "final_eval.json"


def final_evaluation(run_dir: str | Path, config: TrainConfig, model=None, tokenizer=None) -> dict:
    """Evaluate the run's final model on its held-out problems; write ``final_eval.json``.

    Uses ``config.eval`` (problems, ``k`` samples each, temperature). The file records, per
    problem, the number of correct samples out of ``k`` — enough for Pass@k at any k' ≤ k.
    """
    import torch

    from entropy_dynamics.models.loading import load_model_and_tokenizer
    from entropy_dynamics.training.checkpoint import latest_checkpoint
    from entropy_dynamics.training.evaluate import evaluate
    from entropy_dynamics.training.prompts import build_prompted_task

    run_dir = Path(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to evaluate")
    if model is None:
        model, tokenizer = load_model_and_tokenizer(
            checkpoint / "model", config.model.dtype, config.model.device
        )
    task = build_prompted_task(config.task, tokenizer, config.model.chat_template)
    problems = task.eval_problems()[: config.eval.problems]
    torch.manual_seed(config.seed)
    result = evaluate(
        model,
        tokenizer,
        task,
        problems,
        k=config.eval.k,
        temperature=config.eval.temperature,
        max_new_tokens=config.rollout.max_new_tokens,
    )
    payload = {
        "step": int(checkpoint.name.rsplit("_", 1)[-1]),
        "k": result.k,
        "problems": len(problems),
        "temperature": config.eval.temperature,
        "avg_at_k": result.avg_at_k,
        "pass_at": {str(k): v for k, v in result.pass_at.items()},
        "correct": [round(rate * result.k) for rate in result.per_problem_pass_rate],
        "format_rate": result.format_rate,
        "mean_entropy": result.mean_entropy,
    }
    tmp = run_dir / (FINAL_EVAL_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, run_dir / FINAL_EVAL_FILE)
    return payload


def final_eval_current(run_dir: Path, steps: int) -> bool:
    try:
        return json.loads((run_dir / FINAL_EVAL_FILE).read_text())["step"] == steps
    except (OSError, ValueError, KeyError):
        return False


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
