"""A command built from an options dataclass: its fields are the flags, their docstrings the help,
and the dataclass checks the values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from typer.testing import CliRunner

from entropy_dynamics.cli._option_commands import options_command
from entropy_dynamics.training.option_fields import option


@dataclass
class _Options:
    data: Path = option(...)
    """The data file."""
    count: int = option(3, "-n", "--count", min=1)
    """How many to take."""
    loud: bool = False
    """Say more."""
    keep: bool = option(True, "--keep/--no-keep")
    """Keep the result."""

    def __post_init__(self) -> None:
        if self.data.name == "bad":
            raise ValueError("--data: bad is refused")


def _app(seen: list) -> typer.Typer:
    def run(options: _Options) -> None:
        """Take COUNT things from DATA."""
        seen.append(options)

    app = typer.Typer()
    app.command()(options_command(_Options, run, "toy"))
    return app


def test_the_fields_are_the_flags_and_their_docs_the_help() -> None:
    done = CliRunner().invoke(_app([]), ["--help"], env={"COLUMNS": "160"})
    assert done.exit_code == 0, done.output
    words = ["Take COUNT things from DATA.", "--data", "The data file.", "-n", "--count"]
    words += ["How many to take.", "--loud", "Say more.", "--no-keep", "[default: 3]"]
    for text in words:
        assert text in done.output, text


def test_the_values_build_the_dataclass() -> None:
    seen: list = []
    done = CliRunner().invoke(_app(seen), ["--data", "d", "-n", "5", "--loud", "--no-keep"])
    assert done.exit_code == 0, done.output
    assert seen == [_Options(Path("d"), 5, True, False)]


def test_bad_values_exit_2() -> None:
    missing = CliRunner().invoke(_app([]), ["-n", "2"])
    assert missing.exit_code == 2 and "--data" in missing.output
    below = CliRunner().invoke(_app([]), ["--data", "d", "-n", "0"])
    assert below.exit_code == 2  # click's range check: the bound of option()
    refused = CliRunner().invoke(_app([]), ["--data", "bad"])
    assert refused.exit_code == 2 and "--data: bad is refused" in refused.output
