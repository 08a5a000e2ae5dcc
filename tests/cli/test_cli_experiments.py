"""The grid commands (``cli/experiments.py``): ``--seeds``, ``validate-signs`` end to end (with
its progress lines off a terminal), and the report written beside its runs. ``compare`` and
``report`` over a grid: ``test_experiments.py``; the commands' tables: ``test_tables.py``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.cli.experiments import parse_seeds
from run_helpers import FAST, train_one_step


def test_parse_seeds() -> None:
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,5,7") == [0, 5, 7]
    assert parse_seeds("0,") == [0]  # a list of one seed
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds("two")
    with pytest.raises(ValueError, match=r"for seed 0 alone write --seeds 1 \(or the list"):
        parse_seeds("0")


def test_cli_validate_signs_runs_four_interventions(tmp_path, random_model_dir) -> None:
    overrides = [f"model.path={random_model_dir}", *FAST, "steps=1"]
    result = CliRunner().invoke(
        app, ["validate-signs", "-o", str(tmp_path), *overrides], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "signs.json").read_text())
    assert [(r["sample_sign"], r["keep"]) for r in rows] == [
        ("positive", "s_positive"),
        ("positive", "s_negative"),
        ("negative", "s_positive"),
        ("negative", "s_negative"),
    ]
    lines = (tmp_path / "signs.md").read_text().splitlines()
    assert sum(line.startswith("| ") for line in lines) == 5  # header + 4 rows
    # off a terminal the grid says what it does as it goes (it used to print nothing for minutes)
    events = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert sum(line.endswith(": started") for line in events) == 4
    assert sum(line.endswith(": done") for line in events) == 4 and events[-1].startswith("[4/4]")


def test_report_defaults_to_a_folder_beside_the_runs(tmp_path, random_model_dir, monkeypatch):
    train_one_step(tmp_path / "runs", random_model_dir, "a")
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["report", str(tmp_path / "runs" / "a")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "runs" / "report" / "report.md").is_file()
    assert not (tmp_path / "report").exists()
