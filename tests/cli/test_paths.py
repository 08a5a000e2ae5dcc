"""No command writes over a file it reads (cli/_paths.check_outputs)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.cli._paths import check_outputs


def test_outputs_over_inputs_are_refused(tmp_path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(ValueError, match=r"--output: .* is .*data\.jsonl, which --data reads"):
        check_outputs({"--output": tmp_path / "sub" / ".." / "data.jsonl"}, {"--data": data})
    with pytest.raises(ValueError, match="lies inside"):
        check_outputs({"--output": model / "config.json"}, {"--model": model})
    with pytest.raises(ValueError, match="--a and --b are one file"):
        check_outputs({"--a": tmp_path / "x", "--b": tmp_path / "." / "x"}, {})
    (tmp_path / "link.jsonl").symlink_to(data)  # another name, the same inode
    with pytest.raises(ValueError, match="never writes over its input"):
        check_outputs({"--output": tmp_path / "link.jsonl"}, {"--data": data})
    check_outputs({"--output": tmp_path / "out.jsonl", "--none": None}, {"--data": data})


def test_eval_never_writes_its_scores_into_the_model(random_model_dir, tmp_path) -> None:
    config = random_model_dir / "config.json"
    before = config.read_bytes()
    result = CliRunner().invoke(
        app, ["eval", "--model", str(random_model_dir), "--problems", "1", "-o", str(config)]
    )
    assert result.exit_code == 2, result.output
    assert "never writes over its input" in " ".join(result.output.split())
    assert config.read_bytes() == before
