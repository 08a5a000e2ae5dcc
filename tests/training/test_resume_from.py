"""``--resume-from``: a chosen checkpoint continues exactly, into a new run or as ``--resume``;
an older checkpoint of the run itself, a damaged one or another config is refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.metrics import read_metrics
from entropy_dynamics.training.resume_from import resolve_checkpoint
from entropy_dynamics.training.run_dir import RunDirectoryError
from entropy_dynamics.training.trainer import Trainer

SMALL = [
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.max_new_tokens=6",
    "eval.every=0",
    "tensorboard=false",
    "task.countdown.n_train=40",
    "task.countdown.n_validation=10",
    "task.countdown.n_test=10",
    "algorithm.method=entropy_bonus",
    "algorithm.loss={entropy_coef: 0.05}",
    "optim.lr=1e-3",
    "checkpoint_every=1",
    "keep_checkpoints=10",
]


def _config(tmp_path, model_dir, name: str, *extra: str):
    return load_config(
        None, [f"model.path={model_dir}", f"output_dir={tmp_path}", f"name={name}", *SMALL, *extra]
    )


def _comparable(rows):
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def test_a_chosen_checkpoint_continues_exactly_into_a_new_run(tmp_path, random_model_dir) -> None:
    full = _config(tmp_path, random_model_dir, "full", "steps=4")
    Trainer(full, full.run_dir).train()
    step2 = full.run_dir / "checkpoints" / "step_000002"

    branch = _config(tmp_path, random_model_dir, "branch", "steps=4")
    trainer = Trainer(branch, branch.run_dir, resume_from=step2)
    assert trainer.step == 2 and "continuing from checkpoint" in trainer.notice
    trainer.train()
    rows = _comparable(read_metrics(branch.run_dir / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # the source's steps 1-2, then its own
    assert rows == _comparable(read_metrics(full.run_dir / "metrics.jsonl"))
    a = load_file(full.run_dir / "model" / "model.safetensors")
    b = load_file(branch.run_dir / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the source run is untouched: its checkpoints and metrics are all still there
    assert len(list((full.run_dir / "checkpoints").glob("step_*"))) == 4


def test_older_checkpoints_of_the_run_itself_are_refused(tmp_path, random_model_dir) -> None:
    config = _config(tmp_path, random_model_dir, "run", "steps=2")
    Trainer(config, config.run_dir).train()
    checkpoints = config.run_dir / "checkpoints"
    with pytest.raises(RunDirectoryError, match=r"older checkpoint.*name=<new name>"):
        Trainer(config, config.run_dir, resume_from=checkpoints / "step_000001")
    # the newest one is --resume; a run directory names its newest checkpoint
    assert resolve_checkpoint(config.run_dir) == checkpoints / "step_000002"
    more = _config(tmp_path, random_model_dir, "run", "steps=3")
    trainer = Trainer(more, more.run_dir, resume_from=config.run_dir)
    assert trainer.step == 2
    trainer.close()


def test_bad_checkpoints_and_other_configs_are_refused(tmp_path, random_model_dir) -> None:
    config = _config(tmp_path, random_model_dir, "src", "steps=1")
    Trainer(config, config.run_dir).train()
    checkpoint = config.run_dir / "checkpoints" / "step_000001"
    other = _config(tmp_path, random_model_dir, "dst", "steps=2", "optim.lr=5e-4")
    with pytest.raises(RunDirectoryError, match=r"another config.*optim\.lr"):
        Trainer(other, other.run_dir, resume_from=checkpoint)
    with pytest.raises(RunDirectoryError, match="neither a checkpoint"):
        Trainer(other, other.run_dir, resume_from=tmp_path / "nope")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    (checkpoint / "trainer_state.json").write_text(json.dumps({**state, "step": 9}))
    same = _config(tmp_path, random_model_dir, "dst2", "steps=2")
    with pytest.raises(RunDirectoryError, match="checksums"):
        Trainer(same, same.run_dir, resume_from=checkpoint)


def test_train_resume_from_on_the_command_line(tmp_path, random_model_dir) -> None:
    from typer.testing import CliRunner

    from entropy_dynamics.cli import app
    from run_helpers import run_args

    first = run_args(random_model_dir, tmp_path, "a", 2, "checkpoint_every=1")
    assert CliRunner().invoke(app, ["train", *first]).exit_code == 0
    checkpoint = tmp_path / "a" / "checkpoints" / "step_000001"
    second = run_args(random_model_dir, tmp_path, "b", 2, "checkpoint_every=1")
    args = ["train", *second, "--resume-from", str(checkpoint)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    said = "".join(done.output.split())  # wrapped at 80 columns off a terminal
    assert "continuingfromcheckpoint" in said and "fromstep1of2" in said
    assert [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")] == [1, 2]
    refused = CliRunner().invoke(app, [*args[:-2], "--resume-from", str(tmp_path / "nope")])
    assert refused.exit_code == 2 and "--resume-from" in refused.output
