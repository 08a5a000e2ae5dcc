"""The ``entropy-dynamics`` command line: one module per command group.

``train`` (train, eval, pretrain), ``experiments`` (compare, validate-signs, report,
verify-theory), ``analyze`` (analyze), ``data`` (filter-data); ``app`` registers them on one Typer
app and ``_console`` holds the console and the error exit they share. Commands parse options, show
progress and print; the work itself lives in the rooms below.

Imports: anything in the package (heavy rooms lazily, inside the command, so ``--help`` is fast).
Nothing imports ``cli``.
"""

from entropy_dynamics.cli.app import app, main

__all__ = ["app", "main"]
