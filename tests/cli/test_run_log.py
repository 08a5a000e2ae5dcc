"""``run_dir/console.log``: what ``train`` prints, kept in the run, without terminal codes."""

from __future__ import annotations

import io
import sys

from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.cli._run_log import CONSOLE_LOG, start_console_log
from run_helpers import run_args


def test_the_log_gets_what_is_printed_without_control_codes(tmp_path, monkeypatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    path = start_console_log(tmp_path, ["entropy-dynamics", "train", "steps=2"])
    print("\x1b[1;32mok\x1b[0m step 1")
    print("warning: careful", file=sys.stderr)
    sys.stdout.flush()
    assert out.getvalue() == "\x1b[1;32mok\x1b[0m step 1\n"  # the terminal sees it as before
    assert err.getvalue() == "warning: careful\n"
    lines = path.read_text().splitlines()
    assert path.name == CONSOLE_LOG and lines[0].startswith("--- ")
    assert lines[0].endswith("entropy-dynamics train steps=2")
    assert lines[1:] == ["ok step 1", "warning: careful"]


def test_train_keeps_its_console_and_provenance_in_the_run(tmp_path, random_model_dir) -> None:
    args = run_args(random_model_dir, tmp_path, "logged", 1)
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    run = tmp_path / "logged"
    log = (run / CONSOLE_LOG).read_text()
    assert "run directory:" in log and "metrics:" in log and "\x1b[" not in log
    header = [line for line in (run / "config.yaml").read_text().splitlines() if line[:1] == "#"]
    assert header[0].startswith("# entropy-dynamics ") and "torch " in header[0]
    assert header[1].startswith("# command: ")
    assert "algorithm.loss resolved from method" in header[2]
