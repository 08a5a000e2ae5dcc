"""``entropy-dynamics compare``, ``validate-signs`` and ``report``: grids of runs, their report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from entropy_dynamics.cli._console import console, err_console, fail, notice
from entropy_dynamics.cli._help import live_help
from entropy_dynamics.cli._progress import grid_display
from entropy_dynamics.cli._reporting import (
    check_selectable,
    check_selection,
    evaluate_missing_finals,
    print_report,
    print_selections,
)
from entropy_dynamics.cli.methods import method_help
from entropy_dynamics.errors import ConfigError

__all__ = [
    "compare_command",
    "methods_list_help",
    "parse_ks",
    "parse_seeds",
    "report_command",
    "signs_table",
    "validate_signs_command",
    "verify_theory_command",
]

_OVERRIDES_HELP = (
    "key=value overrides for every run; key=v1,v2,... sweeps over the values (commas inside "
    "[...] or {...} do not split); method:key=v1,v2 sweeps for that method only."
)
_BASELINE_HELP = (
    "Group (its label, e.g. 'clip_b (mu=2.0)', or a method: its first group) the vs-baseline "
    "tables compare with; default the group of method grpo."
)
_SELECT_HELP = (
    "Choose each swept method's value by the highest mean of this metric over its seeds on the "
    "validation split (pass@K, e.g. pass@8, or entropy); printed and recorded in the report's "
    "summary.json under 'selection'."
)
_SELECT_SPLIT_HELP = "Split --select chooses on; only validation (the test split is refused)."


def _baseline_option():
    return typer.Option(None, "--baseline", help=_BASELINE_HELP)


def _select_option():
    return typer.Option(None, "--select", help=_SELECT_HELP, metavar="METRIC")


def _select_split_option():
    return typer.Option("validation", "--select-split", help=_SELECT_SPLIT_HELP)


def methods_list_help() -> str:
    """The ``--methods`` help: a comma list of the table's methods."""
    return "Comma list. " + method_help()


def parse_seeds(text: str) -> list[int]:
    """``"3"`` → seeds 0, 1, 2; ``"0,5,7"`` → those seeds; ``"0,"`` → seed 0."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        message = f"--seeds: expected a count or a comma list of integers, got {text!r}"
        raise ValueError(message) from None
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise ValueError(
                f"--seeds: a single number is a count of seeds (0..N-1) and must be >= 1, got "
                f"{values[0]}; for seed 0 alone write --seeds 1 (or the list --seeds 0,)"
            )
        return list(range(values[0]))
    return values


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"--ks: expected comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"--ks: need positive integers, got {text!r}")
    return ks


def _results_table(results) -> Table:
    table = Table(title="Runs")
    for column in ("run", "status", "directory"):
        table.add_column(column)
    for r in results:
        style = "red" if r.status == "failed" else ""
        table.add_row(r.name, f"[{style}]{r.status}[/]" if style else r.status, str(r.run_dir))
    return table


def compare_command(
    overrides: list[str] = typer.Argument(None, help=_OVERRIDES_HELP),
    methods: str = typer.Option(
        "grpo,clip_b,clip_v", "--methods", "-m", help=live_help(methods_list_help)
    ),
    seeds: str = typer.Option("3", "--seeds", help="Number of seeds (0..N-1) or a comma list."),
    output_dir: Path = typer.Option(
        Path("runs/compare"), "--output-dir", "-o", help="Parent of the run directories."
    ),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config all runs start from."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Parallel worker processes."),
    final_eval: bool = typer.Option(
        True, "--final-eval/--no-final-eval", help="Evaluate final models (final_eval.json)."
    ),
    report: bool = typer.Option(
        True, "--report/--no-report", help="Write OUTPUT_DIR/report when the grid is done."
    ),
    ks: str = typer.Option("1,8", "--ks", help="Pass@k values of the report."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and their state only."),
    baseline: str = _baseline_option(),
    select: str = _select_option(),
    select_split: str = _select_split_option(),
) -> None:
    """Run a grid of methods × seeds × swept values (resumable), then report it."""
    from entropy_dynamics.study.experiments import run_grid, run_status
    from entropy_dynamics.study.grid import parse_grid_args, plan_grid

    try:
        metric = check_selection(select, select_split)
        fixed, sweeps = parse_grid_args(list(overrides or []))
        method_list = [m.strip() for m in methods.split(",") if m.strip()]
        seed_list = parse_seeds(seeds)
        k_list = parse_ks(ks)
        specs = plan_grid(method_list, seed_list, sweeps, fixed, output_dir, config)
        if metric is not None:
            check_selectable(specs, metric, final_eval)
        states = [run_status(spec) for spec in specs]
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    if dry_run:
        table = Table(title=f"{len(specs)} runs under {output_dir}")
        for column in ("run", "state", "steps"):
            table.add_column(column)
        for spec, state in zip(specs, states, strict=True):
            table.add_row(spec.name, state, str(spec.config.steps))
        console.print(table)
        return
    console.print(f"{len(specs)} runs under [bold]{output_dir}[/] with {workers} worker(s)")
    try:
        with grid_display(len(specs)) as display:
            results = run_grid(
                method_list,
                seed_list,
                sweeps,
                fixed,
                output_dir,
                workers,
                display,
                config_path=config,
                final_eval=final_eval,
            )
    except KeyboardInterrupt:
        notice("rerun the same command to resume the grid", label="interrupted")
        raise typer.Exit(130) from None
    console.print(_results_table(results))
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        err_console.print(f"[red]{escape(r.name)}[/]:\n{escape(r.error)}", soft_wrap=False)
    try:
        if report and not failed:
            out = output_dir / "report"
            _write_report([output_dir], out, k_list, baseline, metric, select_split)
        elif metric is not None and not failed:
            from entropy_dynamics.study.runs import group_runs, load_runs
            from entropy_dynamics.study.selection import select as select_values

            groups = group_runs(load_runs([output_dir]))
            print_selections(select_values(groups, metric, select_split))
    except ValueError as exc:
        fail(str(exc))
    if failed:
        raise typer.Exit(1)


def validate_signs_command(
    overrides: list[str] = typer.Argument(
        None,
        help="key=value overrides for the four runs; they win over the sign defaults "
        "optim.lr=2e-5 steps=10 eval.every=0, which win over --config.",
    ),
    seeds: str = typer.Option("1", "--seeds", help="Number of seeds (0..N-1) or a comma list."),
    output_dir: Path = typer.Option(
        Path("runs/signs"), "--output-dir", "-o", help="Parent of the four run directories."
    ),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config the runs start from."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Parallel worker processes."),
) -> None:
    """The paper's §4 sign intervention: observed entropy direction vs Theorem 3.2 (4 runs)."""
    from entropy_dynamics.study.signs import validate_signs

    try:
        seed_list = parse_seeds(seeds)
        with grid_display(4 * len(seed_list)) as display:
            rows = validate_signs(
                list(overrides or []), output_dir, seed_list, workers, display, config
            )
    except (ConfigError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    console.print(signs_table(rows))
    console.print(
        f"{sum(r.agrees for r in rows)}/{len(rows)} directions agree with Theorem 3.2 "
        "at the trained tokens"
    )
    console.print(f"table: {output_dir / 'signs.md'}, numbers: {output_dir / 'signs.json'}")


SIGNS_LEGEND = (
    "A: advantage sign of the trained samples · S_k: sign of S_k of the tokens trained · "
    "pred.: entropy direction by Theorem 3.2 · obs.: that of ΣΔH kept · ΣΔH kept, all: entropy "
    "change summed over steps at the trained tokens, over the whole batch (mean over seeds) · "
    "H: rollout entropy at the first and last step · ok: obs. = pred."
)


def signs_table(rows) -> Table:
    """validate-signs' console table: short columns that fit 80 columns, explained in the
    caption (the full table is ``signs.md``)."""
    table = Table(title="Sign intervention vs Theorem 3.2", caption=SIGNS_LEGEND)
    for column in ("A", "S_k", "pred.", "obs.", "ΣΔH kept", "ΣΔH all", "H first→last", "ok"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(
            "+" if r.sample_sign == "positive" else "−",
            "> 0" if r.keep == "s_positive" else "< 0",
            r.predicted,
            r.observed,
            f"{r.trained_sum:+.2e}",
            f"{r.batch_sum:+.2e}",
            f"{r.entropy_first:.3f}→{r.entropy_last:.3f}",
            "[green]yes[/]" if r.agrees else "[red]NO[/]",
        )
    return table


def _write_report(
    run_dirs: list[Path],
    out: Path,
    ks: list[int],
    baseline: str | None = None,
    select_metric: str | None = None,
    select_split: str = "validation",
) -> None:
    from entropy_dynamics.study.report import write_report

    with console.status("writing the report"):
        result = write_report(
            run_dirs,
            out,
            ks,
            baseline=baseline,
            select_metric=select_metric,
            select_split=select_split,
        )
    print_report(result)


def report_command(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories or folders of runs."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Report directory (default: report/ beside the first run)."
    ),
    ks: str = typer.Option("1,8", "--ks", help="Pass@k values, e.g. 1,8."),
    evaluate_missing: bool = typer.Option(
        False,
        "--evaluate-missing",
        help="Evaluate final checkpoints of runs without final_eval.json first (needs the "
        "checkpoints; used for the per-problem pass-rate histogram); with --select, also those "
        "whose final_eval.json has no validation record.",
    ),
    baseline: str = _baseline_option(),
    select: str = _select_option(),
    select_split: str = _select_split_option(),
) -> None:
    """Markdown + self-contained HTML report comparing runs (grouped by config, over seeds)."""
    try:
        metric = check_selection(select, select_split)
        k_list = parse_ks(ks)
        if evaluate_missing:
            evaluate_missing_finals(run_dirs, validation=metric is not None)
        if output is None:  # beside the runs, not in whatever directory the shell is in
            from entropy_dynamics.study.runs import find_runs

            output = find_runs(run_dirs)[0].parent / "report"
        _write_report(run_dirs, output, k_list, baseline, metric, select_split)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))


def verify_theory_command(
    vocab_size: int = typer.Option(1000, min=2, help="Vocabulary size V of the random logits."),
    positions: int = typer.Option(64, min=1, help="Number of random positions."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Check Theorems 3.2 and 3.3 numerically: first-order error must shrink as O(ε²)."""
    from entropy_dynamics.study.verification import convergence_table

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
