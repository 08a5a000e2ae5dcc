"""Atomic, verified checkpoints (``training/checkpoint.py``): a crafted one refused before it runs
anything, a damaged one passed over for the previous good one, a full disk named with the last
good checkpoint."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.training.checkpoint import (
    CHECKSUM_FILE,
    CheckpointError,
    latest_checkpoint,
)
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.metrics import read_metrics
from entropy_dynamics.training.trainer import Trainer
from run_helpers import run_args


class _Payload:
    """Unpickling this would create ``marker``: what a crafted checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _rewrite_checksums(checkpoint: Path) -> None:
    from entropy_dynamics.training.checkpoint import _checksums

    (checkpoint / CHECKSUM_FILE).write_text(json.dumps(_checksums(checkpoint)))


def test_a_crafted_checkpoint_is_refused_without_running(tmp_path, random_model_dir):
    config = load_config(None, run_args(random_model_dir, tmp_path, "r", 2))
    Trainer(config, config.run_dir).train()
    checkpoint = latest_checkpoint(config.run_dir)
    marker = tmp_path / "pwned"
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    state["data"] = _Payload(marker)
    with (checkpoint / "trainer_state.pt").open("wb") as f:
        pickle.dump(state, f)
    _rewrite_checksums(checkpoint)  # checksums are about damage, not about trust
    with pytest.raises(CheckpointError, match="refused"):
        Trainer(config, config.run_dir, resume=True)
    assert not marker.exists()


def test_a_code_running_model_file_in_a_checkpoint_exits_2(tmp_path, random_model_dir):
    from models.test_loading import crafted_model_dir

    runner = CliRunner()
    args = ["train", *run_args(random_model_dir, tmp_path, "r", 2)]
    assert runner.invoke(app, args).exit_code == 0
    checkpoint = latest_checkpoint(tmp_path / "r")
    marker = tmp_path / "pwned"
    crafted_model_dir(checkpoint / "model", checkpoint / "model", marker)
    _rewrite_checksums(checkpoint)  # checksums are about damage, not about trust
    for command in ([*args, "steps=3", "--resume"], ["eval", "--run", str(tmp_path / "r")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert "would run code when loaded" in " ".join(result.output.split())
    assert not marker.exists()


@pytest.mark.parametrize(
    "error",
    [
        OSError(28, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 896 vs 790"),
    ],
    ids=["ENOSPC", "torch zip writer"],
)
def test_a_full_disk_names_the_device_and_the_last_good_checkpoint(
    tmp_path, random_model_dir, monkeypatch, error
):
    from entropy_dynamics.training import checkpoint as checkpoint_module

    real_save, calls = checkpoint_module.torch.save, []

    def save(*args, **kwargs):  # the disk fills up during the second checkpoint
        calls.append(1)
        if len(calls) == 2:
            raise error
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    runner = CliRunner()
    args = ["train", *run_args(random_model_dir, tmp_path, "r", 3, "checkpoint_every=1")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "no space left on the device mounted at" in text
    assert "the last good checkpoint is step_000001" in text and "--resume" in text
    assert [p.name for p in (tmp_path / "r" / "checkpoints").glob("step_*")] == ["step_000001"]
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert runner.invoke(app, [*args, "--resume"]).exit_code == 0
    assert [row["step"] for row in read_metrics(tmp_path / "r" / "metrics.jsonl")] == [1, 2, 3]


def test_a_damaged_checkpoint_falls_back_to_the_previous_good_one(tmp_path, random_model_dir):
    config = load_config(None, run_args(random_model_dir, tmp_path, "r", 2, "checkpoint_every=1"))
    Trainer(config, config.run_dir).train()
    newest = config.run_dir / "checkpoints" / "step_000002" / "model" / "model.safetensors"
    data = bytearray(newest.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the weights
    newest.write_bytes(bytes(data))
    more = load_config(None, run_args(random_model_dir, tmp_path, "r", 3, "checkpoint_every=1"))
    trainer = Trainer(more, more.run_dir, resume=True)
    assert trainer.step == 1
    assert "passed over checkpoint step_000002" in trainer.notice


def test_readable_state_keeps_rows_up_to_its_step_with_nan_as_null(tmp_path):
    from entropy_dynamics.training.checkpoint import config_hash, readable_state

    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": 0, "eval/acc": 0.5}, {"step": 1, "x": float("nan")}, {"step": 2, "x": 1.0}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "x"')  # torn
    state = readable_state(1, {"b": 1, "a": {"c": 2}}, metrics)
    assert state["step"] == 1 and [r["step"] for r in state["log_history"]] == [0, 1]
    assert state["config_hash"] == config_hash({"a": {"c": 2}, "b": 1})  # key order aside
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert readable_state(1, {}, tmp_path / "none.jsonl")["log_history"] == []


def test_train_help_names_resume_from():
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "--resume-from" in result.output
