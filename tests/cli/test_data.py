"""``entropy-dynamics filter-data`` (``cli/data.py``): it filters, resumes and writes the kept view,
refuses bad options with exit 2, and never writes over its input. The filter itself:
``tests/study/test_filter_data.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from entropy_dynamics.cli.data import filter_data_command

DATA = Path(__file__).parents[1] / "data" / "math"


def test_cli_filters_resumes_and_writes_the_kept_view(random_model_dir, tmp_path):
    app = typer.Typer()
    app.command()(filter_data_command)
    runner = CliRunner()
    output = tmp_path / "out.jsonl"
    args = ["--model", str(random_model_dir), "--data", str(DATA / "gsm8k.jsonl")]
    args += ["--output", str(output)]
    args += ["--samples", "2", "--max-new-tokens", "1", "--max-problems", "3", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps at the console width
    assert "gsm8k.jsonl:4: invalid JSON" in text  # the skipped records are reported
    assert "3 problem(s) decided (0 from an earlier run)" in text
    assert len(output.read_text().splitlines()) == 3
    result = runner.invoke(app, [*args[:-4], "--max-problems", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "4 problem(s) decided (3 from an earlier run)" in " ".join(result.output.split())
    assert len(output.read_text().splitlines()) == 4
    result = runner.invoke(app, ["--data", "x", "--output", str(output), "--kept-only"])
    assert result.exit_code == 0 and "kept 0 problem(s)" in result.output
    result = runner.invoke(app, [*args, "--low", "half"])
    assert result.exit_code == 2 and "--low" in result.output
    result = runner.invoke(app, [*args, "--on-error", "refuse"])
    assert result.exit_code == 2
    assert "gsm8k.jsonl:4: invalid JSON" in " ".join(result.output.split())


@pytest.mark.parametrize("flag", ["--output", "--kept-output"])
def test_cli_never_writes_over_its_input(random_model_dir, tmp_path, flag):
    app = typer.Typer()
    app.command()(filter_data_command)
    data = tmp_path / "X.jsonl"
    lines = (DATA / "gsm8k.jsonl").read_bytes().rstrip(b"\n")  # no final newline, as reported
    data.write_bytes(lines)
    args = ["--model", str(random_model_dir), "--data", str(data), "--samples", "2"]
    args += ["--output", str(data if flag == "--output" else tmp_path / "out.jsonl")]
    if flag == "--kept-output":
        args += ["--kept-output", str(tmp_path / "." / "X.jsonl")]  # the same file, spelt apart
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "never writes over its input" in " ".join(result.output.split())
    assert data.read_bytes() == lines  # not a byte lost
