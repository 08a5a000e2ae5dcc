"""``--help`` that shows a flag as a flag (``cli/_help.py``): on the app and on every command, an
option that takes no value shows none, one that does says which kind."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from entropy_dynamics.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_flags_as_flags_and_values_with_their_type(command: str | None) -> None:
    # Typer prints `--resume <bool>` unless told otherwise, as if the flag took a value
    wide = {"COLUMNS": "160"}  # at 80 columns a long option name is cut short (`--constant-a…`)
    done = CliRunner().invoke(app, [*([command] if command else []), "--help"], env=wide)
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    group = typer.main.get_command(app)
    params = group.commands[command].params if command else group.params  # type: ignore[attr-defined]
    for param in params:
        if not param.opts[0].startswith("--"):
            continue
        line = next(x for x in lines if f" {param.opts[0]} " in x)  # the option's first line
        if param.is_flag:
            assert "<" not in line, line
        elif param.metavar is None:  # an option that takes a value says which kind
            assert "<" in line, line
    help_line = next(x for x in lines if " --help " in x)
    assert "<bool>" not in help_line
