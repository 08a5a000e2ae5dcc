"""Short training runs for tests: override lists that make a run take a second, and the helpers
the test files of run directories, checkpoints, interrupts, guards, grids and commands share."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.training.checkpoint import latest_checkpoint
from entropy_dynamics.training.metrics import read_metrics

__all__ = [
    "FAST",
    "QUICK",
    "SMALL",
    "TINY",
    "comparable",
    "one_line",
    "run_args",
    "snapshot",
    "train_one_step",
    "weights",
]

QUICK = [
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.max_new_tokens=6",
    "eval.every=0",
    "tensorboard=false",
    "threads=1",
    "task.countdown.n_train=40",
    "task.countdown.n_validation=10",
    "task.countdown.n_test=10",
]
"""A run of the tiny random model, a fraction of a second a step, without evaluations."""

TINY = [
    *QUICK,
    "algorithm.method=entropy_bonus",  # gradients even without reward on a random model
    "algorithm.loss={entropy_coef: 0.05}",
    "optim.lr=1e-3",
]
"""A :data:`QUICK` run that moves the weights of the random model."""

FAST = [
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.max_new_tokens=6",
    "eval.every=2",
    "eval.problems=3",
    "eval.k=2",
    "checkpoint_every=1",
    "tensorboard=false",
    "threads=1",
    "task.countdown.n_train=40",
    "task.countdown.n_validation=10",
    "task.countdown.n_test=10",
    "steps=2",
    # A random model earns no reward; the entropy bonus still moves the weights.
    "algorithm.loss.entropy_coef=0.05",
    "optim.lr=1e-3",
]
"""The runs of a grid: two steps, evaluated at the start and the end, a checkpoint each step."""

SMALL = [
    "eval.every=0",
    "tensorboard=false",
    "rollout.prompts_per_step=1",
    "rollout.group_size=2",
    "rollout.max_new_tokens=4",
    "eval.problems=2",
    "eval.k=2",
]
"""The smallest run a command can evaluate or report on."""


def run_args(model_dir, out, name: str, steps: int, *extra: str) -> list[str]:
    """``train``'s overrides of a :data:`TINY` run ``out/name`` of ``steps`` steps."""
    where = [f"model.path={model_dir}", f"output_dir={out}", f"name={name}", f"steps={steps}"]
    return [*where, *TINY, *extra]


def train_one_step(out, model_dir, name: str) -> None:
    """``entropy-dynamics train`` of one :data:`SMALL` step into ``out/name``."""
    args = ["train", f"model.path={model_dir}", f"output_dir={out}", f"name={name}",
            "steps=1", *SMALL]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path, with its bytes."""
    files = (p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


def one_line(output: str) -> str:
    """A command's output on one line (the console wraps long lines)."""
    return " ".join(output.split())


def comparable(run_dir: Path) -> list[dict]:
    """A run's metrics without the wall-clock ones (``perf/*``)."""
    return [
        {k: v for k, v in row.items() if not k.startswith("perf/")}
        for row in read_metrics(run_dir / "metrics.jsonl")
    ]


def weights(run_dir: Path) -> bytes:
    """The model file of a run's newest checkpoint."""
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None
    return (checkpoint / "model" / "model.safetensors").read_bytes()
