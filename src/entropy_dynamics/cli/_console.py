"""The console every command prints to, and the one way a command stops on bad input."""

from __future__ import annotations

import shlex

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["console", "fail", "print_command"]

console = Console()


def fail(message: str) -> None:
    """Print ``error: message`` (markup in ``message`` shown as typed) and exit with status 2."""
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def print_command(label: str, argv: list[str]) -> None:
    """``label`` on one line, then ``argv`` as one shell-quoted line (:func:`shlex.join`) that is
    never wrapped, on a terminal or off it: copied or run as printed, it does what it says."""
    console.print(label, highlight=False)
    console.print(shlex.join(argv), soft_wrap=True, markup=False, highlight=False)
