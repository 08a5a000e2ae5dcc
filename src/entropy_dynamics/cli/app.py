"""The ``entropy-dynamics`` application: one Typer app, each command registered from its group."""

from __future__ import annotations

import typer

from entropy_dynamics.cli.analyze import analyze_command
from entropy_dynamics.cli.data import filter_data_command
from entropy_dynamics.cli.experiments import (
    compare_command,
    report_command,
    validate_signs_command,
    verify_theory_command,
)
from entropy_dynamics.cli.train import eval_command, pretrain_command, train_command

__all__ = ["app", "main"]

app = typer.Typer(
    help="Study and control entropy in reinforcement fine-tuning of LLMs (arXiv 2602.03392).",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Study and control entropy in reinforcement fine-tuning of LLMs (arXiv 2602.03392)."""


app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("pretrain")(pretrain_command)
app.command("compare")(compare_command)
app.command("validate-signs")(validate_signs_command)
app.command("report")(report_command)
app.command("verify-theory")(verify_theory_command)
app.command("analyze")(analyze_command)
app.command("filter-data")(filter_data_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
