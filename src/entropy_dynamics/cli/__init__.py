"""The ``entropy-dynamics`` command line: one module per command group.

``train`` (train, eval, pretrain), ``experiments`` (compare, validate-signs, report,
verify-theory), ``analyze`` (analyze), ``data`` (filter-data); ``app`` registers them on one Typer
app and ``_console`` holds the console and the error exit they share. Commands parse options, show
progress and print; the work itself lives in the rooms below.

Imports: anything in the package (heavy rooms lazily, inside the command, so ``--help`` is fast).
Nothing imports ``cli``.
"""

import os

# transformers' per-load progress bars and advisory notices are not the user's business here
# (set before transformers is imported; a user's own setting wins)
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from entropy_dynamics.cli.app import app, main

__all__ = ["app", "main"]
