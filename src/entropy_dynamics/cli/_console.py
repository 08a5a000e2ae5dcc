"""The consoles every command prints to, and the one way a command stops on bad input.

Results (tables, paths, progress) go to :data:`console`, on stdout. Diagnostics — ``error:``,
``internal error:``, ``warning:`` and notices — go to :data:`err_console`, on stderr, so
``> log`` keeps what went wrong in sight, and are never wrapped (``soft_wrap``): a line copied
out of a log or a terminal, such as the fix an error suggests, is the line as written. Python
warnings raised while a command runs (skipped data records, an incomplete run in a report) are
shown as one ``warning:`` line each, without a source line (:func:`warnings_as_lines`).
"""

from __future__ import annotations

import shlex
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

__all__ = [
    "console",
    "err_console",
    "fail",
    "notice",
    "print_command",
    "warn",
    "warnings_as_lines",
]

console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


def fail(message: str) -> None:
    """Print ``error: message`` on stderr (markup in ``message`` shown as typed) and exit with
    status 2."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr (``message`` shown as typed)."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}")


def notice(message: str, label: str = "note", style: str = "yellow") -> None:
    """Print ``label: message`` on stderr (``message`` shown as typed); an empty ``label`` prints
    the message alone."""
    head = f"[{style}]{escape(label)}:[/] " if label else ""
    err_console.print(f"{head}[{style}]{escape(message)}[/]")


def print_command(label: str, argv: list[str], err: bool = False) -> None:
    """``label``, then ``argv`` as one shell-quoted line (:func:`shlex.join`), neither ever
    wrapped, on a terminal or off it: copied or run as printed, it does what it says. With
    ``err`` both go to stderr, beside the diagnostic they belong to."""
    out = err_console if err else console
    out.print(label, highlight=False, markup=False, soft_wrap=True)
    out.print(shlex.join(argv), soft_wrap=True, markup=False, highlight=False)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    kind = "" if issubclass(category, UserWarning) else f"{category.__name__}: "
    warn(f"{kind}{message}")


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Within, each Python warning shown is one ``warning:`` line on stderr (a ``UserWarning``
    with its message only, another category with its name), never a source line; the usual
    filters decide which are shown."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield
