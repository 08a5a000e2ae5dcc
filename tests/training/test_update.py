"""The gradient of one optimizer step: micro-batches and their shares, fused and unfused loss,
the trainer's optimizer."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.advantages import broadcast_to_tokens
from entropy_dynamics.aggregation import AGG_MODES, aggregation_share
from entropy_dynamics.losses import PolicyLossConfig, select_tokens
from entropy_dynamics.training.config import OptimConfig
from entropy_dynamics.training.forward import ResponseStats
from entropy_dynamics.training.rollout import generate
from entropy_dynamics.training.update import (
    UpdateBatch,
    accumulate_gradients,
    adamw,
    micro_batches,
)

PROMPTS = ["7 3 2 -> 23: ", "1 9 -> 10: ", "4 4 8 -> 2: "]


@pytest.fixture(scope="module")
def batch(tiny_lm):
    model, tokenizer = tiny_lm
    torch.manual_seed(0)
    rollout = generate(model, tokenizer, PROMPTS, num_samples=2, max_new_tokens=6)
    stats = ResponseStats(model, 1.0)
    with torch.no_grad():
        old = stats.stats(stats.features(rollout), rollout.response_ids)
    advantages = broadcast_to_tokens(torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0]),
                                     rollout.response_mask)  # fmt: skip
    keep, _ = select_tokens(PolicyLossConfig(), old, advantages, rollout.response_mask)
    return UpdateBatch(rollout, old, advantages, keep)


def test_micro_batches() -> None:
    rows = torch.arange(5)
    assert [c.tolist() for c in micro_batches(rows, 2)] == [[0, 1], [2, 3], [4]]
    assert [c.tolist() for c in micro_batches(rows, 0)] == [[0, 1, 2, 3, 4]]
    assert [c.tolist() for c in micro_batches(rows, 5)] == [[0, 1, 2, 3, 4]]


def _gradient(model, batch, config, micro, fused=False):
    model.zero_grad(set_to_none=True)
    stats = ResponseStats(model, 1.0)
    loss, metrics = accumulate_gradients(
        stats, config, batch, torch.arange(6), micro, fused=fused and stats.fuses_loss(config)
    )
    assert loss.shape == () and "actor/pg_loss" in metrics
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return loss, grads


@pytest.mark.parametrize("agg_mode", AGG_MODES)
def test_micro_batches_give_the_one_shot_gradient(tiny_lm, batch, agg_mode) -> None:
    # both loss terms (an entropy bonus too) weighted by their micro-batch's share
    model, _ = tiny_lm
    config = PolicyLossConfig(agg_mode=agg_mode, entropy_coef=0.01)
    whole_loss, whole = _gradient(model, batch, config, 0)
    micro_loss, micro = _gradient(model, batch, config, 4)
    assert any(g.abs().sum() > 0 for g in whole)
    torch.testing.assert_close(micro_loss, whole_loss, rtol=1e-5, atol=1e-7)
    for a, b in zip(micro, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_the_fused_loss_gives_the_unfused_gradient(tiny_lm, batch) -> None:
    model, _ = tiny_lm
    config = PolicyLossConfig()
    assert ResponseStats(model, 1.0).fuses_loss(config)
    _, plain = _gradient(model, batch, config, 4)
    _, fused = _gradient(model, batch, config, 4, fused=True)
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_shares_in_float64_are_exact_and_float32_as_before() -> None:
    part, whole = torch.ones(1, 1, dtype=torch.bool), torch.ones(3, 1, dtype=torch.bool)
    assert aggregation_share("token-mean", part, whole).dtype == torch.float32
    assert aggregation_share("token-mean", part, whole) == torch.tensor(1) / torch.tensor(3)
    assert aggregation_share("token-mean", part, whole, torch.float64).item() == 1 / 3


def test_adamw_warms_up_then_holds(tiny_lm) -> None:
    model, _ = tiny_lm
    optimizer, scheduler = adamw(model, OptimConfig(lr=1e-3, warmup_steps=4, weight_decay=0.1))
    assert optimizer.param_groups[0]["weight_decay"] == 0.1
    lrs = []
    for _ in range(6):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
