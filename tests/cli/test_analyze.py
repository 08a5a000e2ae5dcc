"""``entropy-dynamics analyze`` (``cli/analyze.py``) end to end: Countdown on the tiny model, a math
dataset through a chat model with a padded lm_head, a constant advantage, a bad option."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from entropy_dynamics.cli.analyze import analyze_command


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("analyze")(analyze_command)
    app.command("other")(lambda: None)  # two commands: typer keeps the sub-command name
    return app


def test_cli_analyze_end_to_end(random_model_dir, chat_model_dir, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "countdown"
    args = ["analyze", "--model", str(random_model_dir), "-n", "2", "--samples", "2"]
    args += ["--max-new-tokens", "4", "--device", "cpu", "-o", str(out)]
    result = runner.invoke(_app(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in ("tokens.csv", "tokens.parquet", "tokens.html", "one_step.json"):
        assert (out / name).is_file() and str(out / name) in result.output.replace("\n", "")
    assert "Pearson r first order vs actual" in result.output
    constant = runner.invoke(_app(), [*args, "--constant-advantage", "--advantage-sign", "-1"])
    assert constant.exit_code == 0, constant.output
    summary = json.loads((out / "one_step.json").read_text())
    assert summary["advantage_source"].startswith("constant -1")
    assert [s["advantage"] for s in summary["per_sequence"]] == [-1.0] * 4

    # a math dataset through a chat model with a padded lm_head
    data = tmp_path / "gsm8k.jsonl"
    records = [{"question": f"What is {a} + 2?", "answer": f"so #### {a + 2}"} for a in range(3)]
    data.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    out = tmp_path / "math"
    args = ["analyze", "--model", str(chat_model_dir), "--data", str(data), "-n", "2"]
    args += ["--samples", "2", "--max-new-tokens", "3", "--device", "cpu", "-o", str(out)]
    result = runner.invoke(_app(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "gsm8k.jsonl:4" in result.output  # the malformed line is reported, not hidden
    summary = json.loads((out / "one_step.json").read_text())
    assert {s["prompt"] for s in summary["per_sequence"]} == {0, 1}
    page = (out / "tokens.html").read_text()
    assert "&lt;|im_start|&gt;user" in page and "What is 0 + 2?" in page  # chat template applied

    bad = runner.invoke(_app(), ["analyze", "--advantage-sign", "2", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--advantage-sign" in bad.output
