"""``entropy-dynamics pretrain``: the embedded model's supervised pretraining, into a directory
that holds no model yet (``--overwrite`` moves one aside, never deletes it)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from entropy_dynamics.cli._console import console, fail, notice

__all__ = ["pretrain_command"]


def _claim_output(output: Path, overwrite: bool) -> None:
    """Refuse an ``output`` that is a file, or a directory with anything in it unless
    ``overwrite``, which moves that directory aside first (and says where)."""
    from entropy_dynamics.training.run_dir import move_aside, unwritable

    if output.exists() and not output.is_dir():
        fail(f"--output: {output} is a file; give a directory")
    if output.is_dir() and any(output.iterdir()):
        what = "holds a model" if (output / "config.json").is_file() else "is not empty"
        if not overwrite:
            fail(
                f"--output: {output} {what}; add --overwrite to move it aside to "
                f"{output.name}.old-<time> and write the new model there, or give another "
                "--output"
            )
        try:
            moved = move_aside(output)
        except OSError as exc:
            fail(f"--overwrite could not move {output} aside ({exc.strerror or exc}); "
                 "give another --output")  # fmt: skip
        notice(f"moved the previous contents of {output} aside to {moved}")
    problem = unwritable(output)
    if problem:
        fail(problem.replace("output_dir / name", "--output"))


def pretrain_command(
    output: Path = typer.Option(
        Path("countdown-tiny"), "--output", "-o", help="Directory to write the model into."
    ),
    config_file: Path = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML of PretrainConfig fields (configs/pretrain_countdown_search.yaml); the "
        "options below override it.",
    ),
    task: str = typer.Option(
        None, "--task", help="Examples of: countdown (default) or countdown_search (traces)."
    ),
    steps: int = typer.Option(None, "--steps", min=1, help="Optimiser steps (default: config)."),
    seed: int = typer.Option(None, "--seed", help="Seed of init, data order and eval sampling."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Examples per step."),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Peak AdamW learning rate."),
    hidden_size: int = typer.Option(None, "--hidden-size", min=1, help="Model width."),
    num_layers: int = typer.Option(None, "--num-layers", min=1, help="Transformer blocks."),
    eval_problems: int = typer.Option(
        None, "--eval-problems", min=0, help="Validation problems to evaluate (0: none)."
    ),
    eval_samples: int = typer.Option(
        None, "--eval-samples", min=1, help="Samples per evaluated problem (Pass@k)."
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Move a model already in --output aside (to DIR.old-TIME) and write afresh.",
    ),
) -> None:
    """Pretrain the embedded tiny Qwen2 on Countdown or its search traces (supervised) and
    evaluate pass@1, Pass@k."""
    import shlex
    from dataclasses import replace

    from entropy_dynamics.training.config_io import from_dict, load_yaml
    from entropy_dynamics.training.pretrain import PretrainConfig, pretrain

    overrides = {
        "steps": steps,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "eval_problems": eval_problems,
        "eval_samples": eval_samples,
        "task_name": task,
    }
    sizes = {"hidden_size": hidden_size, "num_layers": num_layers}
    try:
        config = (
            PretrainConfig()
            if config_file is None
            else from_dict(PretrainConfig, load_yaml(config_file))
        )
        config = replace(
            config,
            model=replace(config.model, **{k: v for k, v in sizes.items() if v is not None}),
            **{k: v for k, v in overrides.items() if v is not None},
        )
    except ValueError as exc:  # ConfigError included
        fail(str(exc))
    _claim_output(output, overwrite)  # before the minutes of training, never after
    # the effective options (defaults included), so the command reproduces the run exactly
    effective = {
        **({} if config_file is None else {"--config": config_file}),
        "--task": config.task_name,
        "--output": output,
        "--seed": config.seed,
        "--steps": config.steps,
        "--batch-size": config.batch_size,
        "--lr": config.lr,
        "--hidden-size": config.model.hidden_size,
        "--num-layers": config.model.num_layers,
        "--eval-problems": config.eval_problems,
        "--eval-samples": config.eval_samples,
    }
    command = shlex.join(
        ["entropy-dynamics", "pretrain", *(str(x) for item in effective.items() for x in item)]
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        bars: dict[str, int] = {}

        def progress(phase: str, done: int, total: int, info: dict[str, float]) -> None:
            if phase not in bars:
                bars[phase] = bar.add_task(phase, total=total, status="")
            status = " ".join(f"{key}={value:.3f}" for key, value in info.items())
            bar.update(bars[phase], completed=done, total=total, status=status)

        metrics = pretrain(config, output, progress=progress, provenance={"command": command})
    table = Table(title=f"Pretrained {output} (eval/*: the validation split)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
