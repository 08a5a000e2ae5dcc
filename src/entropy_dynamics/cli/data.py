"""``entropy-dynamics filter-data``: the paper's pass-rate filter over a math dataset file."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from entropy_dynamics.cli._console import console, fail
from entropy_dynamics.cli._paths import check_outputs
from entropy_dynamics.tasks.math import DEFAULT_PROMPT_TEMPLATE, PRESETS


def parse_rate(text: str, option: str) -> float:
    """``"1/16"`` or ``"0.0625"`` → 0.0625, in ``[0, 1]``."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        message = f"{option}: expected a fraction like 1/16 or a number, got {text!r}"
        raise ValueError(message) from None
    if not 0 <= value <= 1:
        raise ValueError(f"{option}: must be in [0, 1], got {text}")
    return value


def filter_data_command(
    data: Path = typer.Option(
        ..., "--data", help="Dataset file: .jsonl, .json or .parquet (GSM8K / MATH / DAPO layout)."
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="Decisions file (JSON Lines, one line per decided problem); rerun to resume.",
    ),
    model: str = typer.Option(
        "", "--model", help="Local Hugging Face model directory or .gguf file; empty: embedded."
    ),
    preset: str = typer.Option("auto", "--preset", help=f"Layout: {', '.join(PRESETS)}."),
    prompt_field: str = typer.Option("", "--prompt-field", help="Override the problem field."),
    answer_field: str = typer.Option("", "--answer-field", help="Override the answer field."),
    prompt_template: str = typer.Option(
        DEFAULT_PROMPT_TEMPLATE, "--prompt-template", help="Prompt; {question} is the problem."
    ),
    on_error: str = typer.Option(
        "skip", "--on-error", help="Malformed records: skip (reported) or refuse."
    ),
    max_problems: int = typer.Option(0, "--max-problems", min=0, help="First N problems (0: all)."),
    samples: int = typer.Option(16, "--samples", min=1, help="Samples per problem (paper: 16)."),
    low: str = typer.Option("1/16", "--low", help="Keep if pass rate > LOW (paper: 1/16)."),
    high: str = typer.Option("15/16", "--high", help="Keep if pass rate < HIGH (paper: 15/16)."),
    max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1, help="Response length."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling threshold."),
    batch_prompts: int = typer.Option(4, "--batch-prompts", min=1, help="Problems per batch."),
    kept_output: str = typer.Option(
        "", "--kept-output", help="Kept records (JSON Lines); default: <output>.kept.jsonl."
    ),
    kept_only: bool = typer.Option(
        False, "--kept-only", help="Only write the kept records of the existing output."
    ),
    chat_template: str = typer.Option(
        "auto", "--chat-template", help="auto / always / never: prompts as a user chat turn."
    ),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16, float16."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    grading_timeout: float = typer.Option(5.0, "--grading-timeout", help="Seconds per grading."),
    seed: int = typer.Option(0, "--seed", help="Seed of sampling."),
) -> None:
    """Keep the problems whose pass rate under a model is strictly between LOW and HIGH.

    Samples SAMPLES completions per problem, grades them with math-verify and writes one line per
    problem to OUTPUT (resumable); when all are decided, the kept problems' original records go
    to the kept file, a dataset in the input's layout (paper: DAPO-Math-17k, 16 samples,
    1/16 < p < 15/16).
    """
    from entropy_dynamics.study.filter_data import (
        default_kept_path,
        filter_by_pass_rate,
        write_kept,
    )

    kept_path = Path(kept_output) if kept_output else default_kept_path(output)
    try:  # before anything is read or written: an output over the data would destroy it
        if kept_only:  # reads the decisions, writes the kept records
            check_outputs({"--kept-output": kept_path}, {"--output": output})
        else:
            check_outputs({"--output": output, "--kept-output": kept_path}, {"--data": data})
    except ValueError as exc:
        fail(str(exc))
    if kept_only:
        if not output.is_file():
            fail(f"--output: {output} does not exist; run filter-data first")
        try:
            path, count = write_kept(output, kept_path)
        except ValueError as exc:
            fail(str(exc))
        console.print(f"kept {count} problem(s) of {output} → [bold]{path}[/]")
        return
    try:
        rates = parse_rate(low, "--low"), parse_rate(high, "--high")
        task, problems = _load_data(
            data, preset, prompt_field, answer_field, prompt_template, on_error, grading_timeout
        )
        if max_problems:
            problems = problems[:max_problems]
        model_obj, tokenizer, task = _load_model(model, dtype, device, chat_template, task)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    import torch

    torch.manual_seed(seed)
    columns = (
        TextColumn("[bold]filter"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("filter", total=len(problems))
        try:
            summary = filter_by_pass_rate(
                model_obj,
                tokenizer,
                task,
                problems,
                output=output,
                samples=samples,
                low=rates[0],
                high=rates[1],
                batch_prompts=batch_prompts,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                kept_output=kept_path,
                progress=lambda done, total: progress.update(bar, completed=done),
            )
        except ValueError as exc:
            fail(str(exc))
    console.print(
        f"{summary.decided} problem(s) decided ({summary.resumed} from an earlier run): "
        f"[bold]{summary.kept} kept[/], {summary.too_easy} with pass rate ≥ {high}, "
        f"{summary.too_hard} with pass rate ≤ {low}"
    )
    console.print(f"decisions: {summary.output}")
    if summary.kept_output is not None:
        console.print(f"kept records: [bold]{summary.kept_output}[/]")


def _load_data(data, preset, prompt_field, answer_field, prompt_template, on_error, timeout):
    from entropy_dynamics.tasks.math import MathConfig, MathTask, load_problems

    if preset not in PRESETS:
        raise ValueError(f"--preset: must be one of {', '.join(PRESETS)}, got {preset!r}")
    if on_error not in ("skip", "refuse"):
        raise ValueError(f"--on-error: must be skip or refuse, got {on_error!r}")
    if preset == "custom" and not (prompt_field and answer_field):
        raise ValueError("--preset custom needs --prompt-field and --answer-field")
    config = MathConfig(
        path=str(data),
        preset=preset,
        prompt_field=prompt_field,
        answer_field=answer_field,
        prompt_template=prompt_template,
        on_error=on_error,
        grading_timeout=timeout,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problems, _ = load_problems(data, preset, prompt_field, answer_field, on_error)
    for warning in caught:  # the skipped records, each with file:line and why
        console.print(f"[yellow]warning:[/] {escape(str(warning.message))}", highlight=False)
    return MathTask(config), problems


def _load_model(model: str, dtype: str, device: str, chat_template: str, task):
    from entropy_dynamics.models import default_model_path
    from entropy_dynamics.models.loading import load_model_and_tokenizer
    from entropy_dynamics.training.prompts import ChatTemplateTask, uses_chat

    path = Path(model).expanduser() if model else default_model_path()
    model_obj, tokenizer = load_model_and_tokenizer(path, dtype, device)
    if uses_chat(tokenizer, chat_template):
        task = ChatTemplateTask(task, tokenizer)
    return model_obj, tokenizer, task
