"""Numerical guards (``training/guards.py``): a non-finite update is never applied, too many in a
row stop the run with good weights saved, and a batch that trains no token is a zero update, not a
non-finite one."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.training.checkpoint import latest_checkpoint
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.trainer import Trainer
from run_helpers import run_args


def test_non_finite_updates_are_skipped_then_stop_with_good_weights(
    tmp_path, random_model_dir, monkeypatch
):
    from entropy_dynamics.training import update as update_module  # the loss is called there
    from entropy_dynamics.training.guards import NonFiniteError

    config = load_config(None, run_args(random_model_dir, tmp_path, "r", 6, "max_bad_steps=2"))
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


def test_a_batch_that_trains_no_token_is_a_zero_update(tmp_path, random_model_dir):
    # GRPO on a random model: no reward, so every advantage is 0 and no token carries loss
    overrides = run_args(
        random_model_dir, tmp_path, "idle", 2, "algorithm.method=grpo", "algorithm.loss={}"
    )
    trainer = Trainer(load_config(None, overrides), tmp_path / "idle")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rows = trainer.train()
    assert all(row["actor/skipped_nonfinite"] == 0.0 for row in rows)
    assert all(row["actor/loss"] == 0.0 and row["actor/grad_norm"] == 0.0 for row in rows)
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
