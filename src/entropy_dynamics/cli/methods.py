"""``entropy-dynamics methods``: every method of the table with what it does and the options it runs
with; the ``--method`` help and the dry run's effective options, from the same table."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from entropy_dynamics.cli._console import console, fail

__all__ = ["config_command", "method_help", "methods_command", "show_effective_options"]


def method_help() -> str:
    """The ``--method`` help: every method of :data:`entropy_dynamics.methods.METHODS`."""
    from entropy_dynamics.methods import METHODS

    return f"Method: {', '.join(METHODS)} (entropy-dynamics methods says what each does)."


def _text(options: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in options.items())


def methods_command(
    names: list[str] = typer.Argument(None, help="Methods to show (default: every method)."),
) -> None:
    """List every method: what it does, its source, and the options it runs with (defaults)."""
    from entropy_dynamics.methods import METHODS, effective_options, get_method

    try:
        chosen = [get_method(name) for name in names or METHODS]
    except ValueError as exc:
        fail(str(exc))
    table = Table(title="Methods (algorithm.method; options: algorithm.loss, algorithm.control)")
    for column in ("method", "what it does", "options"):
        table.add_column(column, overflow="fold")
    for method in chosen:
        options = effective_options(method.name)
        lines = [
            f"{group}: {_text(options[group])}"
            for group in ("loss", "filter", "control")
            if options[group]
        ]
        if method.closed_loop:
            lines.append(f"controller: {method.controller.__name__}")
        table.add_row(method.name, escape(method.summary), escape("\n".join(lines) or "defaults"))
    console.print(table)


def show_effective_options(algorithm: Any) -> None:
    """The dry run's options in force: the filter's and the controller's, defaults included
    (``algorithm``: the run's :class:`~entropy_dynamics.training.config.AlgorithmConfig`)."""
    from entropy_dynamics.methods import effective_options, get_method

    loss = algorithm.policy_loss()
    options = effective_options(algorithm.method, loss, algorithm.control)
    if loss.filter != "none":
        console.print(f"filter {loss.filter} runs with {_text(options['filter']) or 'no options'}")
    if get_method(algorithm.method).closed_loop:
        console.print(f"controller of {algorithm.method} runs with {_text(options['control'])}")


def config_command() -> None:
    """Print the config reference: every option of train with its type, default, valid values and
    meaning, as Markdown (docs/config.md is this output)."""
    from entropy_dynamics.training.config_reference import config_reference

    typer.echo(config_reference(), nl=False)  # plain text: never wrapped, no markup
