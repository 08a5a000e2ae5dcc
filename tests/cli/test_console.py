"""The consoles every command prints to (``cli/_console.py``): the one error exit, with the message
shown as typed, on stderr; a command printed as one line to copy; a diagnostic never wrapped off a
terminal, however narrow; a Python warning (skipped data records) as a clean ``warning:`` line."""

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


def test_a_suggested_fix_is_one_line_off_a_terminal_however_narrow(tmp_path) -> None:
    # COLUMNS=40 off a terminal (a log, a pipe): the error is one line on stderr, not wrapped, so
    # the fix it suggests can be copied whole; stdout says nothing of it
    done = CliRunner().invoke(
        app, ["train", "--dry-run", "algorithm.loss.filter_options={mu:2.0}"],
        env={"COLUMNS": "40"},
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: algorithm.loss.filter_options=")
    assert "write algorithm.loss.filter_options='{mu: 2.0}' or" in lines[0]
    assert done.stdout == ""


def test_skipped_data_records_reach_train_as_a_clean_warning(tmp_path, random_model_dir):
    data = tmp_path / "problems.jsonl"
    good = [f'{{"question": "{i} + 1", "answer": "#### {i + 1}"}}' for i in range(12)]
    data.write_text("\n".join([*good, "not json"]) + "\n")
    args = ["train", "--dry-run", f"model.path={random_model_dir}", f"output_dir={tmp_path}",
            "task.name=math", f"task.math.path={data}", "task.math.validation_size=2",
            "task.math.test_size=2"]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    head, *records = done.stderr.strip().splitlines()  # as filter-data says it: no source line
    assert head.startswith("warning: ") and "skipped 1 unusable record(s)" in head
    why = "invalid JSON: Expecting value (character 1)"
    assert [r.strip() for r in records] == [f"{data}:13: {why}"]
    assert "UserWarning" not in done.output and "warnings.warn" not in done.output
    assert "warning" not in done.stdout
