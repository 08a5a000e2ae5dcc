"""Nothing lost, nothing half-written: run directories, checkpoints, interrupts and kills.

The kill tests run the real command line in a subprocess, stop it at seeded random moments —
during rollouts, updates and checkpoint writes alike — and resume until the run is complete;
the final weights and every non-timing metric must equal those of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import statistics
import subprocess
import sys
import time
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
from entropy_dynamics.training.run_dir import RunDirectoryError
from entropy_dynamics.training.trainer import Trainer

TINY = [
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.max_new_tokens=6",
    "eval.every=0",
    "tensorboard=false",
    "threads=1",
    "task.countdown.n_train=40",
    "task.countdown.n_eval=10",
    "algorithm.method=entropy_bonus",  # gradients even without reward on a random model
    "algorithm.loss={entropy_coef: 0.05}",
    "optim.lr=1e-3",
]


def _args(model_dir, out, name: str, steps: int, *extra: str) -> list[str]:
    where = [f"model.path={model_dir}", f"output_dir={out}", f"name={name}", f"steps={steps}"]
    return [*where, *TINY, *extra]


def _snapshot(directory: Path) -> dict[str, bytes]:
    files = (p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


def _text(output: str) -> str:
    return " ".join(output.split())  # the console wraps long lines


def _comparable(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in row.items() if not k.startswith("perf/")}
        for row in read_metrics(run_dir / "metrics.jsonl")
    ]


def _weights(run_dir: Path) -> bytes:
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None
    return (checkpoint / "model" / "model.safetensors").read_bytes()


# ------------------------------------------------------------------ run directories


def test_a_rerun_is_refused_and_leaves_every_file_byte_identical(tmp_path, random_model_dir):
    runner = CliRunner()
    args = ["train", *_args(random_model_dir, tmp_path, "r", 2)]
    assert runner.invoke(app, args).exit_code == 0
    before = _snapshot(tmp_path / "r")
    done = runner.invoke(app, args)
    assert done.exit_code == 2
    assert "already holds a run" in _text(done.output)
    assert "--resume" in done.output and "--overwrite" in done.output
    assert _snapshot(tmp_path / "r") == before


def test_overwrite_moves_the_old_run_aside(tmp_path, random_model_dir):
    runner = CliRunner()
    args = ["train", *_args(random_model_dir, tmp_path, "r", 2)]
    assert runner.invoke(app, args).exit_code == 0
    before = _snapshot(tmp_path / "r")
    done = runner.invoke(app, [*args, "--overwrite"])
    assert done.exit_code == 0, done.output
    (old,) = tmp_path.glob("r.old-*")
    assert _snapshot(old) == before and "moved the previous run" in _text(done.output)
    assert [row["step"] for row in read_metrics(tmp_path / "r" / "metrics.jsonl")] == [1, 2]


def test_resume_checks_the_config_and_says_where_it_continues(tmp_path, random_model_dir):
    runner = CliRunner()
    base = ["train", *_args(random_model_dir, tmp_path, "r", 2)]
    assert runner.invoke(app, base).exit_code == 0
    changed = runner.invoke(app, [*base, "optim.lr=5e-4", "--resume"])
    assert changed.exit_code == 2 and "optim.lr" in changed.output
    more = runner.invoke(app, ["train", *_args(random_model_dir, tmp_path, "r", 3), "--resume"])
    assert more.exit_code == 0, more.output
    assert "from step 2 of 3" in _text(more.output)
    assert [row["step"] for row in read_metrics(tmp_path / "r" / "metrics.jsonl")] == [1, 2, 3]


# ------------------------------------------------------------------ checkpoints


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
    config = load_config(None, _args(random_model_dir, tmp_path, "r", 2))
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
    args = ["train", *_args(random_model_dir, tmp_path, "r", 2)]
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


def test_every_checkpoint_damaged_is_said_with_the_list(tmp_path, random_model_dir):
    config = load_config(None, _args(random_model_dir, tmp_path, "r", 2, "checkpoint_every=1"))
    Trainer(config, config.run_dir).train()
    for step in ("step_000001", "step_000002"):
        (config.run_dir / "checkpoints" / step / "trainer_state.pt").write_bytes(b"damaged")
    with pytest.raises(RunDirectoryError) as refused:
        Trainer(config, config.run_dir, resume=True)
    message = str(refused.value)
    assert "every checkpoint of" in message and "is damaged" in message
    assert "step_000001" in message and "step_000002" in message


@pytest.mark.parametrize("how", ["parent not writable", "rename refused"])
def test_overwrite_under_a_read_only_parent_exits_2_and_moves_nothing(
    tmp_path, random_model_dir, monkeypatch, how
):
    import errno

    from entropy_dynamics.training import run_dir as run_dir_module

    runner = CliRunner()
    args = ["train", *_args(random_model_dir, tmp_path / "parent", "r", 2)]
    assert runner.invoke(app, args).exit_code == 0
    before = _snapshot(tmp_path / "parent")
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
    assert _snapshot(tmp_path / "parent") == before


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
    args = ["train", *_args(random_model_dir, tmp_path, "r", 3, "checkpoint_every=1")]
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
    config = load_config(None, _args(random_model_dir, tmp_path, "r", 2, "checkpoint_every=1"))
    Trainer(config, config.run_dir).train()
    newest = config.run_dir / "checkpoints" / "step_000002" / "model" / "model.safetensors"
    data = bytearray(newest.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the weights
    newest.write_bytes(bytes(data))
    more = load_config(None, _args(random_model_dir, tmp_path, "r", 3, "checkpoint_every=1"))
    trainer = Trainer(more, more.run_dir, resume=True)
    assert trainer.step == 1
    assert "passed over checkpoint step_000002" in trainer.notice


def test_resume_without_a_checkpoint_names_the_reason(tmp_path, random_model_dir):
    config = load_config(None, _args(random_model_dir, tmp_path, "r", 2))
    (config.run_dir).mkdir(parents=True)
    (config.run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(RunDirectoryError, match="no complete checkpoint"):
        Trainer(config, config.run_dir, resume=True)


# ------------------------------------------------------------------ interrupts and kills


def _command(args: list[str]) -> list[str]:
    entry = "from entropy_dynamics.cli import main; main()"
    return [sys.executable, "-c", entry, "train", *args]


def _steps_logged(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if line.endswith("}"))


def _run(args: list[str], stop_after: int | None, delay: float, sig: int, run_dir: Path):
    """Start the CLI; once ``run_dir`` has logged ``stop_after`` steps, wait ``delay`` seconds and
    send ``sig`` (``None``: let it finish). Returns ``(exit code, output)``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _command(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    deadline = time.monotonic() + 600  # generous: a hung run fails loudly below
    while stop_after is not None and process.poll() is None and time.monotonic() < deadline:
        if _steps_logged(run_dir) >= stop_after:
            time.sleep(delay)
            process.send_signal(sig)
            break
        time.sleep(0.005)
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_interrupted_runs_resume_to_the_uninterrupted_result(tmp_path, random_model_dir, sig):
    steps = 24  # five stops of at most ~3 steps each leave the end unreached
    reference = tmp_path / "reference"
    code, output = _run(
        _args(random_model_dir, tmp_path, "reference", steps, "checkpoint_every=1"),
        None, 0.0, sig, reference,
    )  # fmt: skip
    assert code == 0, output
    step_time = statistics.median(
        r["perf/step_time"] for r in read_metrics(reference / "metrics.jsonl")
    )
    rng = random.Random(1234 + int(sig))
    victim = tmp_path / "victim"
    args = _args(random_model_dir, tmp_path, "victim", steps, "checkpoint_every=1")
    codes = []
    for _ in range(5):  # five stops, each at a random moment of the step after a logged one:
        # its rollout, its update, or the checkpoint write that follows its metrics line
        logged = _steps_logged(victim)
        resume = ["--resume"] if latest_checkpoint(victim) else []
        fresh = ["--overwrite"] if not resume and victim.exists() else []
        stop_after = logged + rng.randint(1, 2)  # a step this process runs itself
        delay = rng.uniform(0.0, step_time)
        code, output = _run([*args, *resume, *fresh], stop_after, delay, sig, victim)
        codes.append(code)
        if sig == signal.SIGINT:
            assert code == 130, output  # a clean stop, with a checkpoint and the way back
            assert "resume with:" in output and "--resume" in output
    assert 0 not in codes, codes  # all five stops landed before the end
    code, output = _run([*args, "--resume"], None, 0.0, sig, victim)
    assert code == 0, output
    assert _comparable(victim) == _comparable(reference)
    assert _weights(victim) == _weights(reference)


# ------------------------------------------------------------------ numerics


def test_non_finite_updates_are_skipped_then_stop_with_good_weights(
    tmp_path, random_model_dir, monkeypatch
):
    from entropy_dynamics.training import update as update_module  # the loss is called there
    from entropy_dynamics.training.guards import NonFiniteError

    config = load_config(None, _args(random_model_dir, tmp_path, "r", 6, "max_bad_steps=2"))
    trainer = Trainer(config, config.run_dir)
    trainer.train_step()  # one good update
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    real = update_module.compute_policy_loss

    def poisoned(loss_config, inputs):
        out = real(loss_config, inputs)
        out.loss = out.loss * float("nan")
        return out

    real_fused = trainer.forward.policy_loss  # the default loss path on the fused statistics

    def poisoned_fused(*args, **kwargs):
        out, stats = real_fused(*args, **kwargs)
        out.loss = out.loss * float("nan")
        return out, stats

    monkeypatch.setattr(update_module, "compute_policy_loss", poisoned)
    monkeypatch.setattr(trainer.forward, "policy_loss", poisoned_fused)
    with pytest.warns(UserWarning, match="step 2: non-finite loss"):
        metrics = trainer.train_step()
    assert metrics["actor/skipped_nonfinite"] == 1.0
    assert all(torch.equal(good[k], v) for k, v in trainer.model.state_dict().items())
    with pytest.warns(UserWarning), pytest.raises(NonFiniteError, match="2 updates in a row"):
        trainer.train_step()
    saved = latest_checkpoint(config.run_dir)
    assert saved is not None
    from safetensors.torch import load_file

    weights = load_file(saved / "model" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert all(torch.equal(good[k], weights[k]) for k in weights)

    monkeypatch.setattr(update_module, "compute_policy_loss", real)
    monkeypatch.setattr(trainer.forward, "policy_loss", real_fused)
    assert trainer.train_step()["actor/skipped_nonfinite"] == 0.0  # a good update resets it
    assert trainer.bad_updates == 0


def test_a_first_signal_is_recorded_and_a_second_stops_at_once() -> None:
    from entropy_dynamics.training.interrupts import StopRequests

    before = signal.getsignal(signal.SIGINT)
    with StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # let the handler run
        assert stop.requested == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # the default handler is back
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_batch_that_trains_no_token_is_a_zero_update(tmp_path, random_model_dir):
    # GRPO on a random model: no reward, so every advantage is 0 and no token carries loss
    overrides = _args(
        random_model_dir, tmp_path, "idle", 2, "algorithm.method=grpo", "algorithm.loss={}"
    )
    trainer = Trainer(load_config(None, overrides), tmp_path / "idle")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rows = trainer.train()
    assert all(row["actor/skipped_nonfinite"] == 0.0 for row in rows)
    assert all(row["actor/loss"] == 0.0 and row["actor/grad_norm"] == 0.0 for row in rows)
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
