"""``entropy-dynamics analyze``: per-token entropy diagnostics and the one-step check."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.table import Table

from entropy_dynamics.cli._console import console, fail
from entropy_dynamics.dynamics import QUADRANT_LABELS
from entropy_dynamics.study.analysis import DEFAULT_LR


def _load_task(data: Path | None, preset: str, n: int):
    """``(task, problems)``: ``n`` held-out Countdown problems, or the first ``n`` of ``data``."""
    if data is None:
        from entropy_dynamics.tasks import build_task
        from entropy_dynamics.training.config import TaskConfig

        task = build_task(TaskConfig())
        return task, task.eval_problems()[:n]
    from entropy_dynamics.tasks.math import MathConfig, MathTask, load_problems

    task = MathTask(MathConfig(path=str(data), preset=preset))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problems, issues = load_problems(data, preset)
    for warning in caught:
        console.print(f"[yellow]warning:[/] {warning.message}")
    if issues:
        console.print(f"[yellow]{len(issues)} unusable record(s) of {data} skipped[/]")
    return task, problems[:n]


def _summary(result, lr: float) -> Table:
    one = result.one_step
    overall = one.overall
    table = Table(title=f"One SGD step (lr {lr:g}) of the GRPO loss on this batch")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = [
        (
            "responses × mean tokens",
            f"{len(one.actual)} × {float(one.num_tokens.float().mean()):.1f}",
        ),
        ("advantages", result.advantage_source),
        ("ΔH actual (token mean)", f"{overall['actual']:+.4e}"),
        ("ΔH first order, measured Δz", f"{overall['first_order']:+.4e}"),
        ("ΔH Theorem 3.3, fitted step", f"{overall['thm33']:+.4e}"),
        ("Pearson r first order vs actual", f"{one.r_first_order:.4f}"),
        ("Pearson r Thm 3.3 vs actual", f"{one.r_thm33:.4f}"),
        ("first-order relative error", f"{one.first_order_rel_error:.3g}"),
        ("effective logit step α̂", f"{one.effective_logit_lr:.4g}"),
    ]
    if one.forecast is not None:  # parameter space, taken before the step
        rows += [
            ("ΔH forecast, before the step", f"{one.forecast_overall:+.4e}"),
            ("Pearson r forecast vs actual", f"{one.r_forecast:.4f}"),
        ]
        rows += [
            (f"  forecast share {QUADRANT_LABELS.get(g, g)}", f"{v:+.3e}")
            for g, v in (one.forecast_groups or {}).items()
        ]
    if result.rewards is not None:
        rows.insert(2, ("mean reward", f"{float(result.rewards.mean()):.3f}"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def analyze_command(
    model: Path = typer.Option(
        None, "--model", help="Model directory or .gguf file (default: the embedded model)."
    ),
    data: Path = typer.Option(
        None, "--data", help="Math dataset (.jsonl/.json/.parquet); default: held-out Countdown."
    ),
    n: int = typer.Option(8, "-n", "--problems", min=1, help="Problems (prompts) to sample."),
    samples: int = typer.Option(4, "--samples", min=1, help="Responses per problem (group G)."),
    temperature: float = typer.Option(1.0, "--temperature", min=1e-6, help="Sampling temperature."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Longest response."),
    advantage_sign: int = typer.Option(
        1,
        "--advantage-sign",
        help="+1 or -1: the advantage of every response when the rewards give none (all "
        "equal) or with --constant-advantage.",
    ),
    constant_advantage: bool = typer.Option(
        False,
        "--constant-advantage",
        help="Give every response --advantage-sign instead of the GRPO advantages of its reward.",
    ),
    lr: float = typer.Option(DEFAULT_LR, "--lr", min=0.0, help="SGD step of the one-step check."),
    preset: str = typer.Option(
        "auto", "--preset", help="Dataset layout of --data: auto, gsm8k, math, dapo."
    ),
    chat_template: str = typer.Option(
        "auto", "--chat-template", help="auto (if the tokenizer has one), always, never."
    ),
    dtype: str = typer.Option("float32", "--dtype", help="auto, float32, bfloat16, float16."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    output: Path = typer.Option(Path("analysis"), "--output", "-o", help="Output directory."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    forecast: bool = typer.Option(
        True,
        "--forecast/--no-forecast",
        help="Forecast the step's ΔH in parameter space before taking it (by token group and "
        "per sequence; one extra forward + backward per response).",
    ),
) -> None:
    """Sample responses; write per-token S_k − E_p[S] (CSV/Parquet, HTML) and the one-step check."""
    from entropy_dynamics.models import default_model_path
    from entropy_dynamics.models.loading import load_model_and_tokenizer
    from entropy_dynamics.study.analysis import analyze
    from entropy_dynamics.training.prompts import ChatTemplateTask, uses_chat

    if advantage_sign not in (1, -1):
        fail(f"--advantage-sign must be +1 or -1, got {advantage_sign}")
    if not lr > 0:
        fail(f"--lr must be > 0, got {lr}")
    path = model if model is not None else default_model_path()
    try:
        policy, tokenizer = load_model_and_tokenizer(path, dtype, device)
        task, problems = _load_task(data, preset, n)
        if uses_chat(tokenizer, chat_template):  # type: ignore[arg-type]
            task = ChatTemplateTask(task, tokenizer)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if not problems:
        fail(f"no problems to analyse in {data or 'the Countdown held-out split'}")
    prompts = [task.prompt(problem) for problem in problems]

    def scorer(index: int, completion: str) -> float:
        return float(task.score(problems[index], completion).reward)

    with console.status(f"sampling {len(prompts)} × {samples} responses, one SGD step"):
        result = analyze(
            policy,
            tokenizer,
            prompts,
            num_samples=samples,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            scorer=None if constant_advantage else scorer,
            advantage_sign=advantage_sign,
            lr=lr,
            output_dir=output,
            seed=seed,
            forecast=forecast,
        )
    console.print(_summary(result, lr))
    for name, file in result.paths.items():
        console.print(f"{name}: {file}")
