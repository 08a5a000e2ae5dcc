"""``entropy-dynamics analyze``: per-token entropy diagnostics and the one-step check."""

from __future__ import annotations

import warnings

from rich.table import Table

from entropy_dynamics.cli._console import console, fail, notice, warn
from entropy_dynamics.cli._option_commands import options_command
from entropy_dynamics.dynamics import QUADRANT_LABELS
from entropy_dynamics.study.command_options import AnalyzeOptions

__all__ = ["analyze_command"]


def _problems(setup, options: AnalyzeOptions) -> list:
    """The first ``--problems`` problems of Countdown's validation split (a diagnostic: never the
    test split), or of the ``--data`` file (each skipped record reported)."""
    if options.data is None:
        return setup.validation_problems[: options.problems]
    from entropy_dynamics.tasks.math import load_problems

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problems, issues = load_problems(options.data, options.preset)
    for warning in caught:
        warn(str(warning.message))
    if issues:
        notice(f"{len(issues)} unusable record(s) of {options.data} skipped", label="")
    return problems[: options.problems]


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


def analyze(options: AnalyzeOptions) -> None:
    """Sample responses; write per-token S_k − E_p[S] (CSV/Parquet, HTML) and the one-step check."""
    from entropy_dynamics.study.analysis import analyze as run_analysis
    from entropy_dynamics.training.setup import RunSetup

    try:
        setup = RunSetup.build(options.run_config())
        problems = _problems(setup, options)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    source = str(options.data) if options.data else "the Countdown validation split"
    if not problems:
        fail(f"no problems to analyse in {source}")
    task = setup.task
    prompts = [task.prompt(problem) for problem in problems]

    def scorer(index: int, completion: str) -> float:
        return float(task.score(problems[index], completion).reward)

    with console.status(f"sampling {len(prompts)} × {options.samples} responses, one SGD step"):
        result = run_analysis(
            setup.model,
            setup.tokenizer,
            prompts,
            num_samples=options.samples,
            temperature=options.temperature,
            max_new_tokens=options.max_new_tokens,
            scorer=None if options.constant_advantage else scorer,
            advantage_sign=options.advantage_sign,
            lr=options.lr,
            output_dir=options.output,
            seed=options.seed,
            forecast=options.forecast,
            problems_from=source,
        )
    console.print(f"problems: the first {len(problems)} of {source}")
    console.print(_summary(result, options.lr))
    for name, file in result.paths.items():
        console.print(f"{name}: {file}")


analyze_command = options_command(AnalyzeOptions, analyze, "analyze_command")
