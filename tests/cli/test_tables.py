"""Console tables fit an 80-column terminal without cutting a value short (no `…`)."""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.cli.experiments import signs_table
from entropy_dynamics.study.signs import SIGN_CASES, sign_row


def _fits_80_columns(text: str) -> None:
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text, text  # rich cuts a cell that does not fit with an ellipsis


def test_validate_signs_table_fits_80_columns_and_keeps_every_value() -> None:
    # two seeds of three steps with wide values: seven-digit sums, entropies above 1
    history = [
        {
            "entropy/mean": 1.5 + 0.25 * step,
            "dynamics/delta_h_kept": -1.2345e-3 * (step + 1),
            "dynamics/delta_h_actual": 2.5e-4,
            "dynamics/delta_h_first_order": 1e-4,
        }
        for step in range(3)
    ]
    rows = [sign_row(case, [history, history]) for case in SIGN_CASES]
    console = Console(width=80, record=True, color_system=None)
    console.print(signs_table(rows))
    text = console.export_text()
    _fits_80_columns(text)
    for row in rows:
        for value in (f"{row.trained_sum:+.2e}", f"{row.batch_sum:+.2e}", row.predicted):
            assert value in text
    assert "1.500→2.000" in text
    assert text.count("NO") == 2  # the two cases where the falling entropy contradicts Thm 3.2
    for column in ("A:", "S_k:", "pred.:", "obs.:", "ΣΔH kept, all:", "H:", "ok:"):
        assert column in " ".join(text.split()), column  # each short header is explained


@pytest.mark.parametrize("command", [["verify-theory", "--vocab-size", "50", "--positions", "4"]])
def test_command_tables_fit_80_columns(command: list[str]) -> None:
    done = CliRunner().invoke(app, command, env={"COLUMNS": "80"})
    assert done.exit_code == 0, done.output
    _fits_80_columns(done.output)
