"""Loading model directories: a weights pickle that would run code is refused, never run."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from typer.testing import CliRunner

from entropy_dynamics.cli import app


class _Payload:
    """Unpickling this creates ``marker``: what a crafted ``pytorch_model.bin`` could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def crafted_model_dir(source: Path, target: Path, marker: Path) -> Path:
    """A copy of the model directory ``source`` whose weights are a code-running pickle."""
    if source != target:
        shutil.copytree(source, target)
    from safetensors.torch import load_file

    weights = target / "model.safetensors"
    state = load_file(weights)
    weights.unlink()
    torch.save({**state, "payload": _Payload(marker)}, target / "pytorch_model.bin")
    return target


def test_a_code_running_weights_file_is_refused(tmp_path, random_model_dir) -> None:
    marker = tmp_path / "pwned"
    model = crafted_model_dir(random_model_dir, tmp_path / "model", marker)
    result = CliRunner().invoke(app, ["eval", "--model", str(model), "--problems", "1"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "pytorch_model.bin would run code when loaded" in text and "safetensors" in text
    assert not marker.exists()
