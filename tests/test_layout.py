"""The package's architecture (docs/architecture.md), checked on the source.

- The map: the layout block of docs/architecture.md names every module and package of
  ``src/entropy_dynamics``, and nothing that does not exist.
- Rooms import only downward: the mathematics at the top (the top-level modules and the packages
  ``filters``, ``losses``, ``control``) imports torch and ``kernels`` only;
  ``kernels`` nothing of the package; ``models`` and ``tasks`` the mathematics at most;
  ``training`` those; ``study`` ``training``; ``integrations`` the mathematics; ``cli``
  anything; nothing imports ``cli``.
- No import circle, counting imports inside functions too (a lazy import hides a circle from the
  interpreter, not from a reader).
- No private name (``_x``, not a dunder) imported from another module.
- Every module imports in a fresh interpreter state, whatever was imported before it.
- No module over 500 lines (the hard cap; the aim, stated in the map, is 400); every package's
  ``__init__`` defines ``__all__``, and every room's and mathematics package's says what lives
  there and what it imports.
- Tests mirror modules: each module has its test file (``tests/<room>/test_<mod>.py``, named
  after the module, qualified by its package where that name is taken) or a reasoned exemption;
  test files' names are unique across ``tests/`` (its folders are not packages).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

import entropy_dynamics

PACKAGE = "entropy_dynamics"
ROOT = Path(entropy_dynamics.__file__).parent
TESTS = Path(__file__).resolve().parent
MAP = TESTS.parent / "docs" / "architecture.md"

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
            if _room(target) in ALLOWED[room]:
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
    except ImportError:  # the TRL plug-in needs the `trl` extra
        skip |= {m for m in _modules() if m.startswith(f"{PACKAGE}.integrations.trl")}
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


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    """``from <package module> import _name`` in ``source`` (a private module imported by name,
    ``from entropy_dynamics.tasks import _records``, is a module, not a name: allowed)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        target = _resolve(module, is_package, node)
        if target.split(".")[0] != PACKAGE:
            continue
        for alias in node.names:
            if _private(alias.name) and f"{target}.{alias.name}" not in _modules():
                found.append(f"{module} imports {alias.name} from {target}")
    return found


def test_the_private_import_finder_finds_one() -> None:
    # the check below would pass vacuously if this helper could not see a private import
    source = (
        "from entropy_dynamics.filters.base import _prepare, masked_moments\n"
        "from .base import __all__\n"  # a dunder is no private name
        "from entropy_dynamics.tasks import _records\n"  # a module
        "from torch import _C\n"  # not ours
    )
    found = _private_imports(f"{PACKAGE}.filters.paper", source)
    assert found == [f"{PACKAGE}.filters.paper imports _prepare from {PACKAGE}.filters.base"]


def test_no_private_name_is_imported_across_modules() -> None:
    found = [
        line
        for module, path in _modules().items()
        for line in _private_imports(module, path.read_text(), path.name == "__init__.py")
    ]
    assert not found, "make the name public in its home, or move its user there:\n" + "\n".join(
        found
    )


@pytest.mark.parametrize(
    "package", sorted(m for m, path in _modules().items() if path.name == "__init__.py")
)
def test_every_package_defines_all(package: str) -> None:
    tree = ast.parse(_modules()[package].read_text())
    targets = [
        target
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
    ]
    assert any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets), (
        f"{package}/__init__.py: define __all__ (the names it re-exports; [] for a room of modules)"
    )


# ------------------------------------------------------------------ the map in docs/architecture.md

ENTRY = re.compile(r"( *)([A-Za-z_][\w-]*(?:\.py|/))(?: {2,}\S.*)?$")
"""A line of the layout block naming a module or a folder, then (after two spaces) what it holds."""


def map_entries(block: str) -> set[str]:
    """The paths a layout block names, relative to the package (``filters/``, ``filters/base.py``).

    The block's first line is ``src/entropy_dynamics/``; an entry is indented two spaces per level
    below the folder it sits in; a line indented deeper than the next level (the description
    column) continues a description.
    """
    lines = block.splitlines()
    assert lines and lines[0] == f"src/{PACKAGE}/", "the layout block starts at the package"
    folders: list[str] = []
    entries: set[str] = set()
    for line in lines[1:]:
        match = ENTRY.fullmatch(line)
        depth, rest = divmod(len(line) - len(line.lstrip(" ")), 2)
        if not match or rest or not 1 <= depth <= len(folders) + 1:
            continue  # a description's continuation
        del folders[depth - 1 :]
        name = match.group(2)
        entries.add("".join(f"{f}/" for f in folders) + name)
        if name.endswith("/"):
            folders.append(name[:-1])
    return entries


def test_the_map_parser_reads_nesting_and_continuations() -> None:
    block = (
        "src/entropy_dynamics/\n"
        "  theory.py       formulas\n"
        "                  continued: stats.py here is no entry\n"
        "  kernels/        a room\n"
        "    streaming.py  a module of the room\n"
        "    inner/        a package in the room\n"
        "      deep.py     its module\n"
        "  cli/\n"
        "    app.py        back up two levels\n"
    )
    assert map_entries(block) == {
        "theory.py",
        "kernels/",
        "kernels/streaming.py",
        "kernels/inner/",
        "kernels/inner/deep.py",
        "cli/",
        "cli/app.py",
    }


def _layout_block() -> str:
    blocks = re.findall(rf"^```\n(src/{PACKAGE}/\n.*?)^```", MAP.read_text(), re.S | re.M)
    assert len(blocks) == 1, f"{MAP}: one layout block, starting with src/{PACKAGE}/"
    return blocks[0]


def test_the_map_names_every_module_and_room_and_nothing_else() -> None:
    named = map_entries(_layout_block())
    modules = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")}
    packages = {f"{p.parent.relative_to(ROOT).as_posix()}/" for p in ROOT.rglob("*/__init__.py")}
    missing = sorted((modules | packages) - named)
    assert not missing, f"docs/architecture.md's layout block lacks: {missing}"
    stale = sorted(n for n in named if not (ROOT / n).exists())
    assert not stale, f"docs/architecture.md's layout block names what does not exist: {stale}"


# ------------------------------------------------------------------ tests mirror modules

FACE = "__init__.py"
MIRROR_EXEMPT = {
    FACE: "a package's face (its re-exports and docstring): tested through the modules it "
    "re-exports; the checks above hold it to __all__",
    "kernels/triton_stats.py": "Triton kernels, run through Triton's CPU interpreter by "
    "tests/kernels/test_streaming.py",
    "kernels/triton_loss.py": "Triton block kernels, run through Triton's CPU interpreter by "
    "tests/kernels/test_fused_loss.py",
}
"""Modules (relative to the package; ``__init__.py``: every package's) without a test file of
their own, each with the reason and where it is tested."""


def mirror_names(module: str) -> list[str]:
    """The test files (relative to ``tests/``) that mirror ``module`` (relative to the package):
    named after it, qualified by its packages where a bare name is taken; a leading ``_`` of a
    private module dropped. ``integrations/verl/engine.py`` → ``integrations/test_engine.py``,
    ``integrations/test_verl_engine.py``, ``integrations/test_integrations_verl_engine.py``."""
    parts = [part.lstrip("_") for part in Path(module).with_suffix("").parts]
    folder = f"{parts[0]}/" if len(parts) > 1 else ""
    return [f"{folder}test_{'_'.join(parts[i:])}.py" for i in reversed(range(len(parts)))]


def test_mirror_names() -> None:
    assert mirror_names("theory.py") == ["test_theory.py"]
    assert mirror_names("_registry.py") == ["test_registry.py"]
    assert mirror_names("tasks/_records.py") == [
        "tasks/test_records.py",
        "tasks/test_tasks_records.py",
    ]
    assert mirror_names("integrations/verl/engine.py")[1] == "integrations/test_verl_engine.py"


def _unmirrored() -> list[str]:
    tests = {p.relative_to(TESTS).as_posix() for p in TESTS.rglob("test_*.py")}
    return sorted(
        rel
        for p in ROOT.rglob("*.py")
        if p.name != FACE
        and (rel := p.relative_to(ROOT).as_posix()) not in MIRROR_EXEMPT
        and not tests & set(mirror_names(rel))
    )


def test_every_module_has_its_test_file_or_a_reasoned_exemption() -> None:
    missing = _unmirrored()
    assert not missing, (
        "modules without tests/<room>/test_<module>.py (or an entry in MIRROR_EXEMPT with the "
        f"reason): {missing}"
    )


def test_the_exemptions_are_not_stale() -> None:
    tests = {p.relative_to(TESTS).as_posix() for p in TESTS.rglob("test_*.py")}
    for module in MIRROR_EXEMPT:
        if module == FACE:
            continue
        assert (ROOT / module).is_file(), f"MIRROR_EXEMPT names {module}, which does not exist"
        assert not tests & set(mirror_names(module)), f"{module} has its test file: drop it"


def test_test_files_have_unique_names() -> None:
    # tests/ folders are not packages: two test_x.py would collide on import
    names = [
        p.name
        for p in TESTS.rglob("*.py")
        if p.name != "conftest.py" and "__pycache__" not in p.parts
    ]
    assert not {n for n in names if names.count(n) > 1}
