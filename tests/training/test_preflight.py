"""The one pre-flight (``training/preflight.py``) of ``train`` and ``train --dry-run``: whatever
the real start refuses, the dry run refuses too, with the same message, on stderr, exit 2 (an
existing run, an ``output_dir`` that cannot be created, ``model.device=cuda`` without a GPU); a
resume finds its checkpoint, and a finished run's resume says it is complete."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.preflight import checkpoint_step, preflight
from run_helpers import SMALL, train_one_step


def _args(model_dir, out, name: str, *extra: str) -> list[str]:
    where = [f"model.path={model_dir}", f"output_dir={out}", f"name={name}", "steps=1"]
    return ["train", *where, *SMALL, *extra]


@pytest.mark.parametrize("case", ["existing run", "uncreatable output_dir", "cuda without a GPU"])
def test_the_dry_run_refuses_what_the_start_refuses(case, tmp_path, random_model_dir,
                                                     monkeypatch) -> None:  # fmt: skip
    out, extra, said = tmp_path, [], ""
    if case == "existing run":
        train_one_step(tmp_path, random_model_dir, "r")
        said = "already holds a run"
    elif case == "uncreatable output_dir":
        out, said = "/proc/nope", "cannot create"  # writable to root by its mode, yet refused
    else:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        extra, said = ["model.device=cuda"], "no CUDA device is available"
    messages = []
    for dry in (["--dry-run"], []):
        done = CliRunner().invoke(app, [*_args(random_model_dir, out, "r", *extra), *dry])
        assert done.exit_code == 2, (dry, done.output)
        assert done.stderr.startswith("error:") and said in done.stderr
        assert "error" not in done.stdout
        messages.append(done.stderr)
    assert messages[0] == messages[1]  # one pre-flight: the same words for both


def test_a_dry_run_into_a_fresh_directory_writes_nothing(tmp_path, random_model_dir) -> None:
    done = CliRunner().invoke(app, [*_args(random_model_dir, tmp_path, "new"), "--dry-run"])
    assert done.exit_code == 0, done.output
    assert "a fresh start" in done.stdout and not (tmp_path / "new").exists()


def test_a_resume_finds_its_checkpoint_and_a_finished_run_is_complete(tmp_path,
                                                                      random_model_dir) -> None:
    train_one_step(tmp_path, random_model_dir, "r")
    overrides = [f"model.path={random_model_dir}", f"output_dir={tmp_path}", "name=r", *SMALL]
    plan = preflight(load_config(None, [*overrides, "steps=1"]), resume=True)
    assert plan.checkpoint is not None and plan.step == checkpoint_step(plan.checkpoint) == 1
    assert plan.complete
    further = preflight(load_config(None, [*overrides, "steps=3"]), resume=True)
    assert further.step == 1 and not further.complete
    # the command says so and trains nothing (it used to say "resuming ... from step 1 of 1")
    done = CliRunner().invoke(app, [*_args(random_model_dir, tmp_path, "r"), "--resume"])
    assert done.exit_code == 0, done.output
    assert "is complete" in done.stdout and "resuming" not in done.stdout
    assert "nothing to resume (to train further, raise steps)" in done.stdout


def test_resume_from_is_checked_by_the_preflight_too(tmp_path, random_model_dir) -> None:
    train_one_step(tmp_path, random_model_dir, "r")
    overrides = [f"model.path={random_model_dir}", f"output_dir={tmp_path}", *SMALL, "steps=3"]
    source = tmp_path / "r"
    # the run's own newest checkpoint: a resume of it, not "already holds a run"
    own = preflight(load_config(None, [*overrides, "name=r"]), resume_from=source)
    assert own.step == 1 and own.checkpoint.parent.parent == source and not own.complete
    # into a new run: a fresh directory, from the chosen checkpoint's step
    new = preflight(load_config(None, [*overrides, "name=s"]), resume_from=own.checkpoint)
    assert new.step == 1 and not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="neither a checkpoint"):
        preflight(load_config(None, [*overrides, "name=s"]), resume_from=tmp_path / "nothing")
    done = CliRunner().invoke(app, [*_args(random_model_dir, tmp_path, "s"), "--dry-run",
                                    "--resume-from", str(source)])  # fmt: skip
    assert done.exit_code == 0, done.output
