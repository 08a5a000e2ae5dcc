"""The console every command prints to (``cli/_console.py``): the one error exit, with the message
shown as typed, and a command printed as one line to copy."""

from __future__ import annotations

import shlex

import pytest
import typer
from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.cli._console import console, fail, print_command


def test_a_bad_value_exits_2_with_the_message_shown_verbatim(tmp_path) -> None:
    # the shared fail(): markup-like text in a message (a path with brackets) is printed as typed
    missing = tmp_path / "[not-there].yaml"
    done = CliRunner().invoke(app, ["train", "--config", str(missing), "--dry-run"])
    assert done.exit_code == 2
    assert "error:" in done.output and "[not-there].yaml" in done.output


def test_fail_exits_2_and_a_command_prints_as_one_shell_line(capsys) -> None:
    with pytest.raises(typer.Exit) as stop:
        fail("no [bold]such[/bold] file")
    assert stop.value.exit_code == 2
    assert "error: no [bold]such[/bold] file" in capsys.readouterr().err
    argv = ["entropy-dynamics", "train", "name=a b", *[f"x{i}=1" for i in range(40)]]
    with console.capture() as captured:
        print_command("resume with:", argv)
    label, line = captured.get().rstrip("\n").split("\n")  # never wrapped, however long
    assert label == "resume with:" and shlex.split(line) == argv
