"""Option dataclasses documented as ``TrainConfig`` is: an attribute docstring under each field.

- :func:`field_docs` reads those docstrings (a command's ``--help`` is built from them,
  :mod:`entropy_dynamics.cli._option_commands`; a config reference can be too);
- :func:`option` declares a field's command-line flags and bounds beside its default, once;
- :func:`check_bounds` enforces the declared bounds; call it in ``__post_init__``, so that an
  options object built in Python is checked like one built from the command line.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
from dataclasses import MISSING, Field, field, fields, is_dataclass
from typing import Any

from entropy_dynamics.finite import check_finite_fields

__all__ = ["check_bounds", "field_docs", "flags_of", "option"]


def field_docs(cls: type) -> dict[str, str]:
    """Field name → the docstring written under it (``inspect.cleandoc``-ed), for a dataclass
    and the dataclasses it derives from; fields without one are left out.

    A string statement right after ``x: int = 0`` documents ``x``; the class's source must be
    readable (``inspect.getsource``), else the class contributes nothing.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def option(
    default: Any = ...,
    *flags: str,
    min: float | None = None,
    max: float | None = None,
    min_open: bool = False,
) -> Any:
    """A dataclass field with its command-line ``flags`` (default ``--field-name``; a boolean
    field may give ``--name/--no-name``) and bounds ``min <= value <= max`` (``min < value``
    with ``min_open``). Without ``default`` (or with ``...``, as Typer writes it) the field is
    required."""
    metadata = {"flags": flags, "min": min, "max": max, "min_open": min_open}
    return field(default=MISSING if default is ... else default, metadata=metadata)


def flags_of(f: Field) -> tuple[str, ...]:
    """The command-line flags of a field: those :func:`option` declared, else ``--field-name``."""
    return f.metadata.get("flags") or (f"--{f.name.replace('_', '-')}",)


def check_bounds(options: Any) -> None:
    """Raise ``ValueError`` naming the flag when a field is outside its declared bounds (NaN is
    outside any), or a float field is not finite
    (:func:`~entropy_dynamics.finite.check_finite_fields`)."""
    flags = {f.name: max(flags_of(f), key=len).split("/")[0] for f in fields(options)}  # long
    for f in fields(options):
        low, high = f.metadata.get("min"), f.metadata.get("max")
        value = getattr(options, f.name)
        if value is None or (low is None and high is None):
            continue
        name = flags[f.name]
        if low is not None and f.metadata.get("min_open") and not value > low:
            raise ValueError(f"{name} must be > {low}, got {value}")
        if low is not None and not value >= low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
        if high is not None and not value <= high:
            raise ValueError(f"{name} must be <= {high}, got {value}")
    check_finite_fields(options, label=flags.__getitem__)
