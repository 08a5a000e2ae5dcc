"""The ``entropy-dynamics`` application: one Typer app, each command registered from its group."""

from __future__ import annotations

import typer
from rich.markup import escape

from entropy_dynamics.cli._console import console, err_console, warnings_as_lines
from entropy_dynamics.cli._help import FlagsAsFlagsCommand, FlagsAsFlagsGroup
from entropy_dynamics.cli.analyze import analyze_command
from entropy_dynamics.cli.data import filter_data_command
from entropy_dynamics.cli.experiments import (
    compare_command,
    report_command,
    validate_signs_command,
    verify_theory_command,
)
from entropy_dynamics.cli.methods import config_command, methods_command
from entropy_dynamics.cli.pretrain import pretrain_command
from entropy_dynamics.cli.train import eval_command, train_command

__all__ = ["app", "main"]

app = typer.Typer(
    help="Study and control entropy in reinforcement fine-tuning of LLMs (arXiv 2602.03392).",
    no_args_is_help=True,
    add_completion=False,
    cls=FlagsAsFlagsGroup,
)


_OPTIONS = {"debug": False}


def _version(value: bool) -> None:
    if value:
        from entropy_dynamics import __version__

        console.print(f"entropy-dynamics {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of an unexpected error."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Study and control entropy in reinforcement fine-tuning of LLMs (arXiv 2602.03392)."""
    _OPTIONS["debug"] = debug
    ctx.with_resource(warnings_as_lines())  # for as long as the command runs


app.command("train", cls=FlagsAsFlagsCommand)(train_command)
app.command("eval", cls=FlagsAsFlagsCommand)(eval_command)
app.command("pretrain", cls=FlagsAsFlagsCommand)(pretrain_command)
app.command("compare", cls=FlagsAsFlagsCommand)(compare_command)
app.command("validate-signs", cls=FlagsAsFlagsCommand)(validate_signs_command)
app.command("report", cls=FlagsAsFlagsCommand)(report_command)
app.command("verify-theory", cls=FlagsAsFlagsCommand)(verify_theory_command)
app.command("analyze", cls=FlagsAsFlagsCommand)(analyze_command)
app.command("filter-data", cls=FlagsAsFlagsCommand)(filter_data_command)
app.command("methods", cls=FlagsAsFlagsCommand)(methods_command)
app.command("config", cls=FlagsAsFlagsCommand)(config_command)


def main() -> None:
    """The console script: bad input exits 2 with a message (each command's own checks); an
    unexpected error prints one line and exits 1, with the traceback only under ``--debug``."""
    try:
        app()
    except Exception as exc:  # a bug or an unforeseen environment problem
        if _OPTIONS["debug"]:
            raise
        err_console.print(
            f"[bold red]internal error:[/] {escape(f'{type(exc).__name__}: {exc}')}\n"
            "run again with --debug (before the command) for the traceback, and please report it"
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
