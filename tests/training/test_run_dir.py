"""Run directories that never lose a run (``training/run_dir.py``): a rerun refused byte for byte,
``--overwrite`` moving the old run aside (or refusing under a read-only parent), ``--resume``
checking the config, and what a directory without a usable checkpoint says."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.metrics import read_metrics
from entropy_dynamics.training.run_dir import RunDirectoryError
from entropy_dynamics.training.trainer import Trainer
from run_helpers import one_line, run_args, snapshot


def test_a_rerun_is_refused_and_leaves_every_file_byte_identical(tmp_path, random_model_dir):
    runner = CliRunner()
    args = ["train", *run_args(random_model_dir, tmp_path, "r", 2)]
    assert runner.invoke(app, args).exit_code == 0
    before = snapshot(tmp_path / "r")
    done = runner.invoke(app, args)
    assert done.exit_code == 2
    assert "already holds a run" in one_line(done.output)
    assert "--resume" in done.output and "--overwrite" in done.output
    assert snapshot(tmp_path / "r") == before


def test_overwrite_moves_the_old_run_aside(tmp_path, random_model_dir):
    runner = CliRunner()
    args = ["train", *run_args(random_model_dir, tmp_path, "r", 2)]
    assert runner.invoke(app, args).exit_code == 0
    before = snapshot(tmp_path / "r")
    done = runner.invoke(app, [*args, "--overwrite"])
    assert done.exit_code == 0, done.output
    (old,) = tmp_path.glob("r.old-*")
    assert snapshot(old) == before and "moved the previous run" in one_line(done.output)
    assert [row["step"] for row in read_metrics(tmp_path / "r" / "metrics.jsonl")] == [1, 2]


def test_resume_checks_the_config_and_says_where_it_continues(tmp_path, random_model_dir):
    runner = CliRunner()
    base = ["train", *run_args(random_model_dir, tmp_path, "r", 2)]
    assert runner.invoke(app, base).exit_code == 0
    changed = runner.invoke(app, [*base, "optim.lr=5e-4", "--resume"])
    assert changed.exit_code == 2 and "optim.lr" in changed.output
    more = runner.invoke(app, ["train", *run_args(random_model_dir, tmp_path, "r", 3), "--resume"])
    assert more.exit_code == 0, more.output
    assert "from step 2 of 3" in one_line(more.output)
    assert [row["step"] for row in read_metrics(tmp_path / "r" / "metrics.jsonl")] == [1, 2, 3]


@pytest.mark.parametrize("how", ["parent not writable", "rename refused"])
def test_overwrite_under_a_read_only_parent_exits_2_and_moves_nothing(
    tmp_path, random_model_dir, monkeypatch, how
):
    import errno

    from entropy_dynamics.training import run_dir as run_dir_module

    runner = CliRunner()
    args = ["train", *run_args(random_model_dir, tmp_path / "parent", "r", 2)]
    assert runner.invoke(app, args).exit_code == 0
    before = snapshot(tmp_path / "parent")
    parent = str((tmp_path / "parent").absolute())
    if how == "parent not writable":  # as for a user without write permission there
        real_access = os.access
        monkeypatch.setattr(
            run_dir_module.os, "access", lambda p, mode: str(p) != parent and real_access(p, mode)
        )
    else:  # a read-only file system: the rename itself fails (root included)
        def refuse(*_args):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(run_dir_module.os, "replace", refuse)
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "not writable" in text or "Read-only file system" in text
    assert "--overwrite" in text and "name=<name>" in text
    assert snapshot(tmp_path / "parent") == before


def test_every_checkpoint_damaged_is_said_with_the_list(tmp_path, random_model_dir):
    config = load_config(None, run_args(random_model_dir, tmp_path, "r", 2, "checkpoint_every=1"))
    Trainer(config, config.run_dir).train()
    for step in ("step_000001", "step_000002"):
        (config.run_dir / "checkpoints" / step / "trainer_state.pt").write_bytes(b"damaged")
    with pytest.raises(RunDirectoryError) as refused:
        Trainer(config, config.run_dir, resume=True)
    message = str(refused.value)
    assert "every checkpoint of" in message and "is damaged" in message
    assert "step_000001" in message and "step_000002" in message


def test_resume_without_a_checkpoint_names_the_reason(tmp_path, random_model_dir):
    config = load_config(None, run_args(random_model_dir, tmp_path, "r", 2))
    (config.run_dir).mkdir(parents=True)
    (config.run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(RunDirectoryError, match="no complete checkpoint"):
        Trainer(config, config.run_dir, resume=True)


def test_a_run_saved_before_new_options_existed_resumes(tmp_path, random_model_dir) -> None:
    # config.yaml of an older version: no optim.schedule, optim.min_lr_ratio, algorithm.kl
    import yaml

    config = load_config(None, run_args(random_model_dir, tmp_path, "old", 1))
    Trainer(config, config.run_dir).train()
    path = config.run_dir / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    del saved["optim"]["schedule"], saved["optim"]["min_lr_ratio"], saved["algorithm"]["kl"]
    saved["name"] = ""  # older versions wrote the name unresolved
    path.write_text(yaml.safe_dump(saved))
    more = load_config(None, run_args(random_model_dir, tmp_path, "old", 2))
    trainer = Trainer(more, more.run_dir, resume=True)
    assert trainer.step == 1
    trainer.close()
