"""Typer commands whose options are an options dataclass's fields, documented by their docstrings.

``options_command(FilterDataOptions, run, name)`` is a command with one ``--flag`` per field: its
help is the field's docstring (:func:`~entropy_dynamics.training.option_fields.field_docs`), its
flags, bounds and default are the field's (:func:`~entropy_dynamics.training.option_fields.option`).
It builds the dataclass from the values given, so the dataclass's ``__post_init__`` is the one
place they are checked (a refusal exits 2 with its message,
:func:`~entropy_dynamics.cli._console.fail`), and calls ``run`` with it; ``run``'s docstring is
the command's help."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, get_type_hints

import typer

from entropy_dynamics.cli._console import fail
from entropy_dynamics.training.option_fields import field_docs, flags_of

__all__ = ["options_command"]


def options_command(cls: type, run: Callable[[Any], None], name: str) -> Callable[..., None]:
    """A Typer command (function ``name``) taking ``cls``'s fields as options (module docstring)."""
    docs, hints = field_docs(cls), get_type_hints(cls)
    parameters = []
    for f in fields(cls):
        if not f.init:
            continue
        default = f.default
        if default is MISSING:
            default = ... if f.default_factory is MISSING else f.default_factory()
        bounds = {k: f.metadata[k] for k in ("min", "max") if f.metadata.get(k) is not None}
        if f.metadata.get("min_open"):  # click has no open bound: __post_init__ alone checks it
            bounds = {}
        help_text = " ".join(docs.get(f.name, "").split())
        info = typer.Option(default, *flags_of(f), help=help_text, **bounds)
        kind = inspect.Parameter.KEYWORD_ONLY
        parameters.append(inspect.Parameter(f.name, kind, default=info, annotation=hints[f.name]))

    def command(**values: Any) -> None:
        try:
            options = cls(**values)
        except ValueError as exc:
            fail(str(exc))
        run(options)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__name__ = command.__qualname__ = name
    command.__doc__ = run.__doc__
    return command
