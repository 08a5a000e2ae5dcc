"""The config reference, generated from the config dataclasses: every option of
:class:`~entropy_dynamics.training.config.TrainConfig` with its type, default, valid values and
meaning, as Markdown (``entropy-dynamics config``; ``docs/config.md``, which a test keeps current).

- meaning: the docstring under each field
  (:func:`~entropy_dynamics.training.option_fields.field_docs`), where an option is documented;
- valid values: a ``Literal``'s choices, and the comparisons of the field with constants that the
  class's ``__post_init__`` checks (``steps >= 1``), read from its source, so the reference says
  what the validation enforces;
- ``algorithm.loss`` holds overrides of the method's policy-loss options: they are listed from
  :class:`~entropy_dynamics.losses.PolicyLossConfig`, their default the method's.
"""

from __future__ import annotations

import ast
import copy
import inspect
import math
import sys
import textwrap
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Literal

import yaml

from entropy_dynamics.losses import PolicyLossConfig
from entropy_dynamics.training.config import TrainConfig
from entropy_dynamics.training.option_fields import field_docs

__all__ = ["config_reference", "field_bounds", "option_rows"]

_HEADER = """# Configuration reference

Every option of `entropy-dynamics train`, generated from the config dataclasses
(`src/entropy_dynamics/training/config.py` and the classes it nests) by `entropy-dynamics config`;
do not edit by hand — regenerate with `entropy-dynamics config > docs/config.md` (a test checks
that this file is current). Set an option with a dotted override (`train rollout.group_size=16`)
or in a YAML file (`train -c run.yaml`); a run's resolved options are in its `config.yaml`.
"""


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "str"
    if origin in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is dict or annotation is dict:
        return "mapping"
    if origin in (list, tuple):
        return "list"
    return getattr(annotation, "__name__", str(annotation))


def _self_fields(node: ast.AST) -> set[str]:
    return {
        n.attr
        for n in ast.walk(node)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
    }


def _checked(tree: ast.AST) -> list[ast.Compare]:
    """The comparisons a ``__post_init__`` enforces on their own: the condition of a
    ``*require(cond, message)`` call, or ``cond`` of ``if not cond: raise ...``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name.endswith("require") and isinstance(node.args[0], ast.Compare):
                found.append(node.args[0])
        elif isinstance(node, ast.If) and any(isinstance(b, ast.Raise) for b in node.body):
            test = node.test
            negated = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
            if negated and isinstance(test.operand, ast.Compare):
                found.append(test.operand)
    return found


def _range_table(tree: ast.AST, namespace: dict[str, Any]) -> dict[str, list[str]]:
    """A table ``{"field": (lowest, highest), ...}`` of bounds (``None``: unbounded), as
    :class:`~entropy_dynamics.tasks.countdown.CountdownConfig` checks its fields."""
    bounds: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values, strict=True):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                continue
            if not (isinstance(value, ast.Tuple) and len(value.elts) == 2):
                continue
            low, high = (_render(e, namespace) or "None" for e in value.elts)
            text = " <= ".join(
                part for part in (low if low != "None" else "", key.value,
                                  high if high != "None" else "") if part
            )  # fmt: skip
            if text != key.value:
                bounds.setdefault(key.value, []).append(text)
    return bounds


class _Constants(ast.NodeTransformer):
    """Names of module constants replaced by their values (``MIN_TEMPERATURE`` → ``0.01``,
    ``math.inf`` → ``inf``); :attr:`unresolved` when one is not a plain number, string or
    tuple of them (a registry: the docstring names its choices)."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace, self.unresolved = namespace, False

    def _value(self, node: ast.expr) -> ast.AST:
        try:
            value = eval(compile(ast.Expression(node), "<bound>", "eval"), self.namespace)
        except Exception:
            self.unresolved = True
            return node
        if isinstance(value, float) and math.isinf(value):
            return ast.Name("inf" if value > 0 else "-inf")
        if isinstance(value, int | float | str) or (
            isinstance(value, tuple) and all(isinstance(v, int | float | str) for v in value)
        ):
            return ast.Constant(value)
        self.unresolved = True
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return self._value(node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            return ast.Name(node.attr)
        return self._value(node)


def _render(node: ast.AST, namespace: dict[str, Any]) -> str | None:
    """``node`` as text, its constants resolved; ``None`` when one is not a constant."""
    constants = _Constants(namespace)
    text = ast.unparse(constants.visit(copy.deepcopy(node)))
    return None if constants.unresolved else text


def field_bounds(cls: type) -> dict[str, list[str]]:
    """Field → the ranges that ``cls.__post_init__`` enforces on it (``["steps >= 1"]``): its
    comparisons with constants (order and membership, not ``==``), constants resolved; empty
    when the source is not readable."""
    try:
        source = textwrap.dedent(inspect.getsource(cls.__post_init__))  # type: ignore[attr-defined]
    except (AttributeError, OSError, TypeError):
        return {}
    namespace = vars(sys.modules[cls.__module__])
    tree = ast.parse(source)
    bounds = _range_table(tree, namespace)
    for node in _checked(tree):
        named = _self_fields(node)
        if len(named) != 1 or any(isinstance(n, ast.Call) for n in ast.walk(node)):
            continue
        if any(isinstance(op, ast.Is | ast.IsNot | ast.Eq | ast.NotEq) for op in node.ops):
            continue
        text = _render(node, namespace)
        if text is not None:
            bounds.setdefault(named.pop(), []).append(text)
    return bounds


def _valid(annotation: Any, checks: list[str]) -> str:
    parts = []
    if typing.get_origin(annotation) is Literal:  # its choices; a membership check repeats them
        parts.append("one of " + ", ".join(f"`{a}`" for a in typing.get_args(annotation)))
        checks = [c for c in checks if " in " not in c]
    parts.extend(f"`{c}`" for c in dict.fromkeys(checks))
    return "; ".join(parts)


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _show(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return "`" + text.removesuffix("\n...").removesuffix("...").strip() + "`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def option_rows(cls: type, prefix: str = "") -> list[tuple[str, list[tuple[str, ...]]]]:
    """``[(section, rows)]`` of ``cls`` and the dataclasses it nests (a section each), each row
    ``(dotted key, type, default, valid values, meaning)``."""
    docs, hints, bounds = field_docs(cls), typing.get_type_hints(cls), field_bounds(cls)
    rows, nested = [], []
    for f in fields(cls):
        annotation, key = hints[f.name], f"{prefix}{f.name}"
        if is_dataclass(annotation):
            nested.extend(option_rows(annotation, f"{key}."))
            continue
        meaning = docs.get(f.name, "")
        valid = _valid(annotation, bounds.get(f.name, []))
        rows.append((f"`{key}`", _type_name(annotation), _show(_default(f)), valid, meaning))
    return [(prefix.rstrip(".") or "top level", rows), *nested]


def config_reference() -> str:
    """The reference as Markdown (the content of ``docs/config.md``)."""
    out = [_HEADER]
    loss_rows = [
        (f"`algorithm.loss.{key.strip('`')}`", kind, "the method's", valid, meaning)
        for key, kind, _, valid, meaning in option_rows(PolicyLossConfig)[0][1]
    ]
    sections = option_rows(TrainConfig)
    for name, rows in sections:
        doc = inspect.getdoc(_section_class(name)) or ""
        if doc.startswith(_section_class(name).__name__ + "("):  # dataclass's made-up docstring
            doc = ""
        out.append(f"\n## `{name}`\n" if name != "top level" else "\n## Top level\n")
        if doc and name != "top level":
            out.append(_cell(doc) + "\n")
        out.append("| option | type | default | valid | meaning |\n|---|---|---|---|---|")
        out.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
        if name == "algorithm":
            out.append(
                "\n### `algorithm.loss`: overrides of the method's policy-loss options\n\n"
                "Each method (`entropy-dynamics methods`) sets some of these; `algorithm.loss` "
                "overrides them (`algorithm.loss='{eps_high: 0.28}'`). A filter's own options "
                "go in `algorithm.loss.filter_options` (listed by `entropy-dynamics methods`).\n"
            )
            out.append("| option | type | default | valid | meaning |\n|---|---|---|---|---|")
            out.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in loss_rows)
    return "\n".join(out) + "\n"


def _section_class(name: str) -> type:
    cls: type = TrainConfig
    if name == "top level":
        return cls
    for part in name.split("."):
        cls = typing.get_type_hints(cls)[part]
    return cls
