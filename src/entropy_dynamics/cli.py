"""The ``entropy-dynamics`` command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from entropy_dynamics._cli_analyze import analyze_command
from entropy_dynamics._cli_data import filter_data_command
from entropy_dynamics._cli_experiments import (
    compare_command,
    report_command,
    validate_signs_command,
)
from entropy_dynamics._cli_train import eval_command, train_command

app = typer.Typer(
    help="Study and control entropy in reinforcement fine-tuning of LLMs (arXiv 2602.03392).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


@app.callback()
def _root() -> None:
    """Study and control entropy in reinforcement fine-tuning of LLMs (arXiv 2602.03392)."""


@app.command("verify-theory")
def verify_theory(
    vocab_size: int = typer.Option(1000, min=2, help="Vocabulary size V of the random logits."),
    positions: int = typer.Option(64, min=1, help="Number of random positions."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Check Theorems 3.2 and 3.3 numerically: first-order error must shrink as O(ε²)."""
    from entropy_dynamics.verification import convergence_table

    rows = convergence_table(vocab_size=vocab_size, positions=positions, seed=seed)
    table = Table(title=f"First-order entropy-change error, V={vocab_size}, {positions} positions")
    for column in ("prediction", "step", "max |ΔH|", "max error", "log-log slope"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row.name,
            f"{row.step:.0e}",
            f"{row.max_change:.3e}",
            f"{row.max_error:.3e}",
            "" if row.slope is None else f"{row.slope:.3f}",
        )
    console.print(table)


@app.command("pretrain")
def pretrain_command(
    output: Path = typer.Option(
        Path("countdown-tiny"), "--output", "-o", help="Directory to write the model into."
    ),
    steps: int = typer.Option(None, "--steps", min=1, help="Optimiser steps (default: config)."),
    seed: int = typer.Option(None, "--seed", help="Seed of init, data order and eval sampling."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Examples per step."),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Peak AdamW learning rate."),
    hidden_size: int = typer.Option(None, "--hidden-size", min=1, help="Model width."),
    num_layers: int = typer.Option(None, "--num-layers", min=1, help="Transformer blocks."),
    eval_problems: int = typer.Option(
        None, "--eval-problems", min=0, help="Held-out problems to evaluate (0: none)."
    ),
    eval_samples: int = typer.Option(
        None, "--eval-samples", min=1, help="Samples per held-out problem (Pass@k)."
    ),
) -> None:
    """Pretrain the embedded tiny Qwen2 on Countdown (supervised) and evaluate pass@1, Pass@k."""
    import shlex
    from dataclasses import replace

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from entropy_dynamics.models.pretrain import PretrainConfig, pretrain

    overrides = {
        "steps": steps,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "eval_problems": eval_problems,
        "eval_samples": eval_samples,
    }
    sizes = {"hidden_size": hidden_size, "num_layers": num_layers}
    try:
        config = PretrainConfig()
        config = replace(
            config,
            model=replace(config.model, **{k: v for k, v in sizes.items() if v is not None}),
            **{k: v for k, v in overrides.items() if v is not None},
        )
    except ValueError as exc:
        console.print(f"[red]error[/]: {exc}")
        raise typer.Exit(2) from None
    # the effective options (defaults included), so the command reproduces the run exactly
    effective = {
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
    table = Table(title=f"Pretrained {output}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("compare")(compare_command)
app.command("validate-signs")(validate_signs_command)
app.command("report")(report_command)
app.command("analyze")(analyze_command)
app.command("filter-data")(filter_data_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
