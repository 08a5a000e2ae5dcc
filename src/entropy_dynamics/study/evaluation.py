"""One held-out evaluation of a setup's model, and the two files it writes.

:func:`held_out_evaluation` samples ``k`` answers to each of the first ``problems`` held-out
problems of a :class:`~entropy_dynamics.training.setup.RunSetup` (torch seeded first, so the
numbers repeat) and scores them: Avg@k and unbiased Pass@k
(:func:`~entropy_dynamics.training.evaluate.evaluate`). It can write

- ``eval.json`` (``entropy-dynamics eval``): the settings, the metrics and the per-problem correct
  counts;
- ``final_eval.json`` in a run directory (:func:`final_evaluation`: the run's own eval settings on
  its final model, after each run of a grid, by ``eval --final-eval`` and by
  ``report --evaluate-missing``): per problem the correct samples out of ``k`` — enough for Pass@k
  at any k' ≤ k; the report's Pass@k table and pass-rate histogram read it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entropy_dynamics.training.checkpoint import latest_checkpoint
from entropy_dynamics.training.config import TrainConfig
from entropy_dynamics.training.evaluate import DEFAULT_MAX_NEW_TOKENS, EvalResult, evaluate
from entropy_dynamics.training.randomness import side_stream
from entropy_dynamics.training.setup import RunSetup

__all__ = [
    "EVAL_FILE",
    "FINAL_EVAL_FILE",
    "EvalSettings",
    "final_eval_current",
    "final_evaluation",
    "held_out_evaluation",
]

EVAL_FILE = "eval.json"
FINAL_EVAL_FILE = "final_eval.json"


@dataclass(frozen=True)
class EvalSettings:
    """How a held-out evaluation samples (defaults: ``entropy-dynamics eval``'s)."""

    problems: int = 200
    """The first this many held-out problems."""
    k: int = 16
    """Samples per problem (Avg@k, and the ``n`` of the Pass@k estimator)."""
    temperature: float = 1.0
    """Sampling temperature."""
    seed: int = 0
    """torch's seed, set just before sampling."""
    ks: tuple[int, ...] | None = None
    """Pass@k values to report, each in ``[1, k]``; ``None``: 1 and ``k``."""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """Longest answer."""

    @classmethod
    def of_run(cls, config: TrainConfig) -> EvalSettings:
        """A run's own settings: ``config.eval``, its seed and its response length."""
        cfg = config.eval
        return cls(cfg.problems, cfg.k, cfg.temperature, config.seed, None,
                   config.rollout.max_new_tokens)  # fmt: skip


def held_out_evaluation(
    setup: RunSetup,
    settings: EvalSettings,
    *,
    eval_file: str | Path | None = None,
    run_dir: str | Path | None = None,
) -> EvalResult:
    """Evaluate ``setup``'s model on its held-out problems (module docstring).

    Args:
        setup: the model, tokenizer and prompted task.
        settings: problems, samples and sampling.
        eval_file: also write ``eval.json``'s record here.
        run_dir: also write the run's ``final_eval.json`` there (the step is that of the run's
            newest checkpoint, the model's).

    Raises:
        FileNotFoundError: ``run_dir`` holds no checkpoint.
    """
    checkpoint = None
    if run_dir is not None:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise FileNotFoundError(f"no checkpoint under {run_dir}")
    problems = setup.held_out[: settings.problems]
    with side_stream(settings.seed, setup.device):  # the same stream as the run's evaluations
        result = evaluate(
            setup.model,
            setup.tokenizer,
            setup.task,
            problems,
            k=settings.k,
            ks=settings.ks,
            temperature=settings.temperature,
            max_new_tokens=settings.max_new_tokens,
        )
    if eval_file is not None:
        _write_json(Path(eval_file), _eval_record(setup, settings, result, len(problems)))
    if checkpoint is not None:
        step = int(checkpoint.name.rsplit("_", 1)[-1])
        record = _final_record(step, settings, result, len(problems))
        _write_json(Path(run_dir) / FINAL_EVAL_FILE, record)
    return result


def final_evaluation(
    run_dir: str | Path, config: TrainConfig | None = None, setup: RunSetup | None = None
) -> dict[str, Any]:
    """Evaluate a finished run's final model with the run's own settings
    (:meth:`EvalSettings.of_run`); write and return ``final_eval.json``.

    Args:
        run_dir: the run directory (its newest checkpoint is the model evaluated).
        config: the run's config, for a setup built here (default: its ``config.yaml``).
        setup: the run's setup when at hand (the trainer's, holding the final model); default:
            built from the newest checkpoint.
    """
    setup = setup or RunSetup.from_run(run_dir, config)
    held_out_evaluation(setup, EvalSettings.of_run(setup.config), run_dir=run_dir)
    return json.loads((Path(run_dir) / FINAL_EVAL_FILE).read_text())


def final_eval_current(run_dir: Path, steps: int) -> bool:
    """Whether ``run_dir`` holds the final evaluation of step ``steps``."""
    try:
        return json.loads((run_dir / FINAL_EVAL_FILE).read_text())["step"] == steps
    except (OSError, ValueError, KeyError):
        return False


def _eval_record(setup: RunSetup, settings: EvalSettings, result: EvalResult, n: int) -> dict:
    return {
        "model": str(setup.model_path),
        "problems": n,
        "k": settings.k,
        "temperature": settings.temperature,
        "seed": settings.seed,
        "metrics": result.to_metrics("eval"),
        "per_problem_correct": list(result.per_problem_correct),
    }


def _final_record(step: int, settings: EvalSettings, result: EvalResult, n: int) -> dict:
    return {
        "step": step,
        "k": result.k,
        "problems": n,
        "temperature": settings.temperature,
        "avg_at_k": result.avg_at_k,
        "pass_at": {str(k): v for k, v in result.pass_at.items()},
        "correct": [round(rate * result.k) for rate in result.per_problem_pass_rate],
        "format_rate": result.format_rate,
        "mean_entropy": result.mean_entropy,
    }


def _write_json(path: Path, record: dict) -> None:
    """Write ``record`` (indent 1) to ``path`` atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
