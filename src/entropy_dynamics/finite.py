"""Finite floats: every ``float`` field of a config or options dataclass holds a finite number.

A rate, a coefficient, a threshold or a temperature of ``inf`` or ``nan`` passes most range checks
(``lr > 0`` holds for ``inf``) and fails much later, mid-run. :func:`check_finite_fields` refuses
them when the dataclass is built, for every field whose annotation is ``float`` (or includes it,
``float | None``), read from the annotations: no per-field code. A field that may legitimately be
infinite declares ``metadata={"finite": False}``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Any

__all__ = ["check_finite_fields", "float_fields"]


def _is_float(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_float(arg) for arg in typing.get_args(annotation))
    return annotation is float


@cache
def float_fields(cls: type) -> tuple[str, ...]:
    """The fields of dataclass ``cls`` annotated ``float`` (alone or in a union) that must be
    finite."""
    hints = typing.get_type_hints(cls)
    return tuple(
        f.name
        for f in dataclasses.fields(cls)
        if _is_float(hints[f.name]) and f.metadata.get("finite", True)
    )


def check_finite_fields(
    instance: Any,
    prefix: str = "",
    error: type[Exception] = ValueError,
    nested: bool = False,
    label: Callable[[str], str] | None = None,
) -> None:
    """Raise ``error`` naming ``prefix + field`` (or ``label(field)``: a command-line flag) when a
    float field of dataclass ``instance`` is ``inf``, ``-inf``, ``nan`` or not a number at all
    (``None`` passes: an unset optional field); with ``nested``, the dataclasses in its fields too
    (names joined with dots, ``optim.lr``)."""
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if nested and dataclasses.is_dataclass(value):
            check_finite_fields(value, f"{prefix}{f.name}.", error, nested)
    for name in float_fields(type(instance)):
        value = getattr(instance, name)
        if value is None:
            continue  # an optional field left unset
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and math.isfinite(value)):
            where = label(name) if label else prefix + name
            raise error(f"{where} must be a finite number, got {value!r}")
