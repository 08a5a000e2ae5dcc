"""The package's architecture (../shared/DESIGN.md, "Package layout"), checked on the source.

- Rooms import only downward: the mathematics at the top (the top-level modules and the packages
  ``filters``, ``losses``, ``control``) imports torch and ``kernels`` only;
  ``kernels`` nothing of the package; ``models`` and ``tasks`` the mathematics at most;
  ``training`` those; ``study`` ``training``; ``integrations`` the mathematics and
  ``training.forward``; ``cli`` anything; nothing imports ``cli``.
- No import circle, counting imports inside functions too (a lazy import hides a circle from the
  interpreter, not from a reader).
- Every module imports in a fresh interpreter state, whatever was imported before it.
- No module over 500 lines; every room's and mathematics package's ``__init__`` says what lives
  there and what it imports.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

import entropy_dynamics

PACKAGE = "entropy_dynamics"
ROOT = Path(entropy_dynamics.__file__).parent

MATH = "mathematics"
MATH_PACKAGES = ("filters", "losses", "control")
"""Packages of the mathematics (a concept that outgrew a module), not rooms of their own."""
ROOMS = ("kernels", "models", "tasks", "training", "study", "integrations", "cli")
ALLOWED = {
    "kernels": {"kernels"},
    MATH: {MATH, "kernels"},
    "models": {MATH, "kernels", "models"},
    "tasks": {MATH, "kernels", "tasks"},
    "training": {MATH, "kernels", "models", "tasks", "training"},
    "study": {MATH, "kernels", "models", "tasks", "training", "study"},
    "integrations": {MATH, "kernels", "integrations"},
    "cli": {MATH, *ROOMS},
}
"""Room → the rooms its modules may import."""
EXTRA_ALLOWED = {"integrations": {f"{PACKAGE}.training.forward"}}
"""Room → single modules of other rooms it may import as well."""
THIRD_PARTY = {MATH: {"torch"}, "kernels": {"torch", "triton"}}
"""Rooms held to a short list of outside packages (the rest of the standard library is free)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] in MATH_PACKAGES:
        return MATH
    return parts[1] if len(parts) > 2 or parts[1] in ROOMS else MATH


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@cache
def _imports(module: str) -> tuple[frozenset[str], frozenset[str]]:
    """``(package modules, outside top-level packages)`` that ``module`` imports anywhere."""
    path = _modules()[module]
    ours, outside = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            # `from pkg import sub` imports the submodule pkg.sub where one exists
            names = [
                f"{target}.{a.name}" if f"{target}.{a.name}" in _modules() else target
                for a in node.names
            ]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top == PACKAGE:
                # `import a.b.c` binds the deepest module that exists
                while name not in _modules():
                    name = name.rsplit(".", 1)[0]
                if name != module:
                    ours.add(name)
            elif top != "__future__" and top not in sys.stdlib_module_names:
                outside.add(top)
    return frozenset(ours), frozenset(outside)


def _graph() -> dict[str, frozenset[str]]:
    return {m: _imports(m)[0] for m in _modules()}


def test_the_rooms_exist_and_the_mathematics_sits_at_the_top() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    rooms = packages - set(MATH_PACKAGES)
    assert {"kernels", "models", "tasks", "training", "study", "cli"} <= rooms
    assert rooms <= set(ROOMS), rooms - set(ROOMS)
    top = {m.split(".")[1] for m in _modules() if _room(m) == MATH and m != PACKAGE}
    assert {"theory", "stats", "advantages", "aggregation", "dynamics", "methods"} <= top
    assert set(MATH_PACKAGES) <= top & packages, "filters/, losses/, control/ are packages"
    stray = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name not in packages}
    assert stray <= {"__pycache__"}, f"folders that are not packages: {stray}"


def test_every_import_points_down_the_rooms() -> None:
    wrong = []
    for module, targets in _graph().items():
        room = _room(module)
        for target in sorted(targets):
            if _room(target) in ALLOWED[room] or target in EXTRA_ALLOWED.get(room, ()):
                continue
            wrong.append(f"{module} ({room}) imports {target} ({_room(target)})")
    assert not wrong, "imports against the room order:\n" + "\n".join(wrong)


def test_the_mathematics_and_kernels_need_only_torch() -> None:
    wrong = [
        f"{module} imports {package}"
        for module in _modules()
        if _room(module) in THIRD_PARTY
        for package in sorted(_imports(module)[1] - THIRD_PARTY[_room(module)])
    ]
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_circle() -> None:
    # the check below would pass vacuously if this helper could not see a circle
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    assert not _cycles(_graph()), _cycles(_graph())


def test_every_module_imports_in_a_fresh_interpreter_state() -> None:
    # One child process; before each module, every entropy_dynamics module is dropped from
    # sys.modules, so each import runs as if first (torch and transformers stay loaded).
    skip = set()
    try:
        import triton  # noqa: F401
    except ImportError:
        for name in ("triton_stats", "triton_loss", "triton_matmul"):
            skip.add(f"{PACKAGE}.kernels.{name}")  # imported only where triton exists
    try:
        import trl  # noqa: F401
    except ImportError:
        skip.add(f"{PACKAGE}.integrations.trl")  # needs the `trl` extra
    modules = [m for m in _modules() if m not in skip]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'entropy_dynamics']:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        print(f'{name}: {type(exc).__name__}: {exc}')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", done.stdout


def test_nothing_imports_cli() -> None:
    users = [
        m
        for m, targets in _graph().items()
        if _room(m) != "cli" and any(_room(t) == "cli" for t in targets)
    ]
    assert not users


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_over_500_lines(module: str) -> None:
    lines = _modules()[module].read_text().count("\n")
    assert lines <= 500, f"{module}: {lines} lines; split it by job"


@pytest.mark.parametrize(
    "room", [r for r in (*MATH_PACKAGES, *ROOMS) if (ROOT / r / "__init__.py").is_file()]
)
def test_each_room_says_what_lives_there_and_what_it_imports(room: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / room / "__init__.py").read_text()))
    assert doc and "Imports:" in doc, f"{room}/__init__.py needs a docstring with 'Imports:'"
