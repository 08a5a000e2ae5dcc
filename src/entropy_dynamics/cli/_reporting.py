"""The reporting side of ``report`` and ``compare``: what they print of a report's statistics
(the vs-baseline tables with their method sentence, the notes on idle filters or a skipped
baseline, the values chosen on the validation split), the checks of ``--select`` /
``--select-split`` made before any run, and the evaluation of runs a report lacks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.markup import escape
from rich.table import Table

from entropy_dynamics.cli._console import console, notice

__all__ = [
    "check_selectable",
    "check_selection",
    "evaluate_missing_finals",
    "print_report",
    "print_selections",
]


def check_selection(select: str | None, select_split: str) -> str | None:
    """The ``--select`` metric, normalised (``Pass@8`` → ``pass@8``), or ``None``; refuses the
    test split (whether or not ``--select`` is given) and an unknown metric.

    Raises:
        ValueError: the message names the flag to use.
    """
    from entropy_dynamics.study.selection import check_select_split, parse_select_metric

    check_select_split(select_split)
    return None if select is None else parse_select_metric(select)


def print_selections(selections: Sequence) -> None:
    """One line per method: the value chosen, on which split, by what."""
    for selection in selections:
        console.print(f"[bold]selected[/] {escape(selection.sentence)}", soft_wrap=True)


def print_report(result) -> None:
    """A :class:`~entropy_dynamics.study.report.ReportResult`'s tables, notes and selections."""
    for t in result.baseline_tables:
        table = Table(
            title=t.title, caption=t.sentence, caption_justify="left", box=box.SIMPLE_HEAD
        )
        for column in t.HEADER:  # the numbers whole; the names wrap
            text = column in ("group", "metric")
            table.add_column(column, justify="left" if text else "right", no_wrap=not text)
        for row in t.rows():
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
    for note in result.notes:
        notice(note)
    print_selections(result.selections)
    console.print(f"report: [bold]{result.markdown}[/] and [bold]{result.html}[/]")


def check_selectable(specs, metric: str, final_eval: bool) -> None:
    """``--select`` before any run: a sweep to choose in, final evaluations that will hold the
    validation record, and enough samples per problem for ``pass@k``."""
    swept = [spec for spec in specs if spec.sweep]
    if not swept:
        raise ValueError(
            "--select chooses among the values of a sweep: give one (key=v1,v2 or "
            "method:key=v1,v2), or leave --select out"
        )
    if not final_eval:
        raise ValueError("--select reads each run's final evaluation: drop --no-final-eval")
    if metric.startswith("pass@"):
        k = int(metric[5:])
        short = [spec for spec in swept if spec.config.eval.k < k]
        if short:
            raise ValueError(
                f"--select {metric}: run {short[0].name} draws eval.k={short[0].config.eval.k} "
                f"samples per problem, fewer than {k}; raise eval.k or select on a smaller k"
            )


def _needs_evaluation(path: Path, validation: bool) -> bool:
    """No final evaluation, or (``validation``) one without the validation record."""
    if not path.is_file():
        return True
    try:
        return validation and not isinstance(json.loads(path.read_text()).get("validation"), dict)
    except ValueError:
        return True


def evaluate_missing_finals(run_dirs: list[Path], validation: bool = False) -> None:
    """Evaluate the final checkpoint of every run without ``final_eval.json`` (``validation``:
    or with one that lacks the validation record, written before the splits existed)."""
    from entropy_dynamics.study.evaluation import FINAL_EVAL_FILE, final_evaluation
    from entropy_dynamics.study.runs import find_runs
    from entropy_dynamics.training.config import load_config

    for run_dir in find_runs(run_dirs):
        if not _needs_evaluation(run_dir / FINAL_EVAL_FILE, validation):
            continue
        with console.status(f"evaluating {run_dir}"):
            final_evaluation(run_dir, load_config(run_dir / "config.yaml"))
