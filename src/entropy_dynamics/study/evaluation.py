"""One evaluation of a setup's model on a named split, and the two files it writes.

:func:`held_out_evaluation` samples ``k`` answers to each of the first ``problems`` problems of one
split of a :class:`~entropy_dynamics.training.setup.RunSetup`'s task — ``test`` unless told
``validation`` — on a seeded stream of its own, so the numbers repeat, and scores them: Avg@k and
unbiased Pass@k (:func:`~entropy_dynamics.training.evaluate.evaluate`). The files:

- ``eval.json`` (``entropy-dynamics eval``): the split, the settings, the metrics and the
  per-problem correct counts;
- ``final_eval.json`` in a run directory (:func:`final_evaluation`: the run's own eval settings on
  its final model, after each run of a grid, by ``eval --run``'s ``--final-eval`` and by
  ``report --evaluate-missing``): the test split's record at the top level (``"split": "test"``)
  and the validation split's under ``"validation"`` (``"split": "validation"``), each with per
  problem the correct samples out of ``k`` — enough for Pass@k at any k' ≤ k. Results are read
  from the test record; choices (a sweep's selection) from the validation record only. A file
  without ``"split"`` is an older run's, evaluated on the one held-out split of its time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entropy_dynamics.tasks.base import Split
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
    """How an evaluation samples, and on which split (defaults: ``entropy-dynamics eval``'s)."""

    problems: int = 200
    """The first this many problems of the split."""
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
    split: Split = "test"
    """The split evaluated: ``test`` (a result) or ``validation`` (monitoring, selection)."""

    def __post_init__(self) -> None:
        if self.split not in ("validation", "test"):
            raise ValueError(f"split must be validation or test, got {self.split!r}")

    @classmethod
    def of_run(cls, config: TrainConfig, split: Split = "test") -> EvalSettings:
        """A run's own settings: ``config.eval``, its seed and its response length."""
        cfg = config.eval
        return cls(cfg.problems, cfg.k, cfg.temperature, config.seed, None,
                   config.rollout.max_new_tokens, split)  # fmt: skip


def held_out_evaluation(
    setup: RunSetup, settings: EvalSettings, *, eval_file: str | Path | None = None
) -> EvalResult:
    """Evaluate ``setup``'s model on the first ``settings.problems`` of ``settings.split``
    (module docstring); with ``eval_file``, also write ``eval.json``'s record there."""
    problems = setup.problems(settings.split)[: settings.problems]
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
    return result


def final_evaluation(
    run_dir: str | Path, config: TrainConfig | None = None, setup: RunSetup | None = None
) -> dict[str, Any]:
    """Evaluate a finished run's final model with the run's own settings
    (:meth:`EvalSettings.of_run`) on the test split and on the validation split; write and
    return ``final_eval.json`` (the test record, the validation record under ``"validation"``).

    Args:
        run_dir: the run directory (its newest checkpoint is the model evaluated).
        config: the run's config, for a setup built here (default: its ``config.yaml``).
        setup: the run's setup when at hand (the trainer's, holding the final model); default:
            built from the newest checkpoint.

    Raises:
        FileNotFoundError: ``run_dir`` holds no checkpoint.
    """
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint under {run_dir}")
    step = int(checkpoint.name.rsplit("_", 1)[-1])  # the model's: that of the newest checkpoint
    setup = setup or RunSetup.from_run(run_dir, config)
    records = {}
    for split in ("test", "validation"):
        settings = EvalSettings.of_run(setup.config, split)
        result = held_out_evaluation(setup, settings)
        records[split] = _final_record(step, settings, result, len(result.per_problem_pass_rate))
    record = {**records["test"], "validation": records["validation"]}
    _write_json(Path(run_dir) / FINAL_EVAL_FILE, record)
    return record


def final_eval_current(run_dir: Path, steps: int) -> bool:
    """Whether ``run_dir`` holds the final evaluation of step ``steps`` on today's splits (an
    older file, of the one held-out split, is not: it is evaluated again)."""
    try:
        record = json.loads((run_dir / FINAL_EVAL_FILE).read_text())
        return record["step"] == steps and record["split"] == "test" and "validation" in record
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _eval_record(setup: RunSetup, settings: EvalSettings, result: EvalResult, n: int) -> dict:
    return {
        "model": str(setup.model_path),
        "split": settings.split,
        "problems": n,
        "k": settings.k,
        "temperature": settings.temperature,
        "seed": settings.seed,
        "metrics": result.to_metrics("eval"),
        "per_problem_correct": list(result.per_problem_correct),
    }


def _final_record(step: int, settings: EvalSettings, result: EvalResult, n: int) -> dict:
    return {
        "split": settings.split,
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
