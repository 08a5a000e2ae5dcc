"""``entropy-dynamics methods`` (``cli/methods.py``): every method with its one line and options, an
unknown name refused with the known ones, and the ``--method`` help from the same table. A toy
method shown by the command: ``tests/test_methods.py``."""

from __future__ import annotations

from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.cli.methods import method_help
from entropy_dynamics.methods import METHODS

WIDE = {"COLUMNS": "200"}


def test_every_method_is_listed_with_its_line() -> None:
    done = CliRunner().invoke(app, ["methods"], env=WIDE)
    assert done.exit_code == 0, done.output
    rows = [line for line in done.output.splitlines() if line.startswith("│ ") and "│ " in line[2:]]
    first = {line.split("│")[1].strip(): line.split("│")[2].split() for line in rows}
    for name, method in METHODS.items():  # each method's row starts with its line's first words
        assert first[name][:2] == method.summary.split()[:2], name
    assert all(name in method_help() for name in METHODS)


def test_one_method_and_an_unknown_one() -> None:
    done = CliRunner().invoke(app, ["methods", "clip_b"], env=WIDE)
    assert done.exit_code == 0 and "mu=" in done.output and "grpo " not in done.output
    unknown = CliRunner().invoke(app, ["methods", "clip_z"], env=WIDE)
    assert unknown.exit_code == 2 and "clip_b" in unknown.output
