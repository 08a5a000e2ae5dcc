"""``entropy-dynamics filter-data``: the paper's pass-rate filter over a math dataset file."""

from __future__ import annotations

import warnings

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from entropy_dynamics.cli._console import console, fail, warn
from entropy_dynamics.cli._option_commands import options_command
from entropy_dynamics.cli._paths import check_outputs
from entropy_dynamics.study.command_options import FilterDataOptions

__all__ = ["filter_data_command"]


def filter_data(options: FilterDataOptions) -> None:
    """Keep the problems whose pass rate under a model is strictly between LOW and HIGH.

    Samples SAMPLES completions per problem, grades them with math-verify and writes one line per
    problem to OUTPUT (resumable); when all are decided, the kept problems' original records go
    to the kept file, a dataset in the input's layout (paper: DAPO-Math-17k, 16 samples,
    1/16 < p < 15/16).
    """
    from entropy_dynamics.study.filter_data import filter_by_pass_rate, write_kept
    from entropy_dynamics.training.setup import RunSetup

    output, kept_path = options.output, options.kept_path
    outputs, inputs = {"--kept-output": kept_path}, {"--output": output}
    if not options.kept_only:  # kept-only reads the decisions and writes the kept records
        outputs, inputs = {"--output": output, **outputs}, {"--data": options.data}
    try:  # before anything is read or written: an output over the data would destroy it
        check_outputs(outputs, inputs)
    except ValueError as exc:
        fail(str(exc))
    if options.kept_only:
        if not output.is_file():
            fail(f"--output: {output} does not exist; run filter-data first")
        try:
            path, count = write_kept(output, kept_path)
        except ValueError as exc:
            fail(str(exc))
        console.print(f"kept {count} problem(s) of {output} → [bold]{path}[/]")
        return
    try:
        config = options.run_config()
        problems = _load_problems(options)
        setup = RunSetup.build(config)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    import torch

    torch.manual_seed(options.seed)
    columns = (TextColumn("[bold]filter"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("filter", total=len(problems))
        try:
            summary = filter_by_pass_rate(
                setup.model,
                setup.tokenizer,
                setup.task,
                problems,
                output=output,
                samples=options.samples,
                low=options.rates[0],
                high=options.rates[1],
                batch_prompts=options.batch_prompts,
                temperature=options.temperature,
                top_p=options.top_p,
                max_new_tokens=options.max_new_tokens,
                kept_output=kept_path,
                progress=lambda done, total: progress.update(bar, completed=done),
            )
        except ValueError as exc:
            fail(str(exc))
    console.print(
        f"{summary.decided} problem(s) decided ({summary.resumed} from an earlier run): "
        f"[bold]{summary.kept} kept[/], {summary.too_easy} with pass rate ≥ {options.high}, "
        f"{summary.too_hard} with pass rate ≤ {options.low}"
    )
    console.print(f"decisions: {summary.output}")
    if summary.kept_output is not None:
        console.print(f"kept records: [bold]{summary.kept_output}[/]")


def _load_problems(options: FilterDataOptions) -> list:
    """The dataset's usable problems (the first ``--max-problems``); each skipped record is
    reported with its file:line and why."""
    from entropy_dynamics.tasks.math import load_problems

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problems, _ = load_problems(
            options.data, options.preset, options.prompt_field, options.answer_field,
            options.on_error,
        )  # fmt: skip
    for warning in caught:  # the skipped records, each with file:line and why
        warn(str(warning.message))
    return problems[: options.max_problems] if options.max_problems else problems


filter_data_command = options_command(FilterDataOptions, filter_data, "filter_data_command")
