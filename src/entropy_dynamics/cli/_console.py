"""The console every command prints to, and the one way a command stops on bad input."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["console", "fail"]

console = Console()


def fail(message: str) -> None:
    """Print ``error: message`` (markup in ``message`` shown as typed) and exit with status 2."""
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)
