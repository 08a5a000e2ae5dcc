"""The gradient of one optimizer step: micro-batches and their shares, fused and unfused loss,
the trainer's optimizer."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch

from entropy_dynamics.advantages import broadcast_to_tokens
from entropy_dynamics.aggregation import AGG_MODES, aggregation_share
from entropy_dynamics.losses import PolicyLossConfig, select_tokens
from entropy_dynamics.training.config import OptimConfig
from entropy_dynamics.training.forward import ResponseStats
from entropy_dynamics.training.rollout import generate
from entropy_dynamics.training.update import (
    PreUpdate,
    UpdateBatch,
    accumulate_gradients,
    adamw,
    idle_rows,
    lr_multiplier,
    micro_batches,
    skips_idle_rows,
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


def test_micro_batches_packed_by_length() -> None:
    rows = torch.tensor([0, 1, 2, 3, 4, 5])
    lengths = torch.tensor([9, 2, 5, 2, 30, 4])
    chunks = micro_batches(rows, 0, lengths, max_tokens=12)
    # ascending lengths, each chunk's rows × its longest ≤ 12, a longer row alone
    assert [c.tolist() for c in chunks] == [[1, 3, 5], [2], [0], [4]]
    assert [c.tolist() for c in micro_batches(rows, 2, lengths, 100)] == [[1, 3], [5, 2], [0, 4]]
    assert [c.tolist() for c in micro_batches(rows[:3], 0, lengths, 0)] == [[0, 1, 2]]  # off
    packed = micro_batches(rows[[4, 0, 2]], 0, lengths, 10**6)  # a subset, one chunk
    assert [c.tolist() for c in packed] == [[2, 0, 4]]


def _gradient(model, batch, config, micro, fused=False, tokens=0):
    model.zero_grad(set_to_none=True)
    stats = ResponseStats(model, 1.0)
    loss, metrics = accumulate_gradients(
        stats, config, batch, torch.arange(6), micro, fused=fused and stats.fuses_loss(config),
        micro_batch_tokens=tokens,
    )  # fmt: skip
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
    assert any(g.abs().sum() > 0 for g in whole)
    lengths = batch.rollout.response_mask.sum(1)
    assert len(micro_batches(torch.arange(6), 0, lengths, 12)) > 1
    for micro_size, tokens in ((4, 0), (0, 12), (2, 12)):  # by rows; packed by length
        micro_loss, micro = _gradient(model, batch, config, micro_size, tokens=tokens)
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


def _lrs(model, optim: OptimConfig, total: int) -> list[float]:
    optimizer, scheduler = adamw(model, optim, total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])  # the rate this optimizer step uses
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_schedules_follow_their_closed_forms(tiny_lm, schedule) -> None:
    # 10 optimizer steps, 2 of warm-up, floor 0.1: step s (0-based) after the warm-up is at
    # progress q = (s - 2) / 8; linear m + (1 - m)(1 - q), cosine m + (1 - m)(1 + cos(pi q)) / 2
    model, _ = tiny_lm
    lr, m, warmup, total = 1e-3, 0.1, 2, 10
    optim = OptimConfig(lr=lr, warmup_steps=warmup, schedule=schedule, min_lr_ratio=m)
    expected = []
    for s in range(total):
        q = (s - warmup) / (total - warmup)
        expected.append(lr * {
            "constant": 1.0,
            "linear": m + (1 - m) * (1 - q),
            "cosine": m + (1 - m) * 0.5 * (1 + math.cos(math.pi * q)),
        }[schedule] if s >= warmup else lr * (s + 1) / warmup)  # fmt: skip
    assert _lrs(model, optim, total) == pytest.approx(expected, rel=1e-12)
    if schedule != "constant":  # halfway through the decay: the mean of peak and floor
        assert lr_multiplier(6, schedule=schedule, total_steps=10, warmup_steps=2,
                             min_lr_ratio=m) == pytest.approx((1 + m) / 2)  # fmt: skip


def test_a_decay_ends_at_its_floor_and_stays_there() -> None:
    for schedule in ("linear", "cosine"):
        values = [lr_multiplier(s, schedule=schedule, total_steps=5, warmup_steps=0,
                                min_lr_ratio=0.2) for s in range(8)]  # fmt: skip
        assert values[0] == 1.0 and values[5:] == [pytest.approx(0.2)] * 3
        assert all(a >= b for a, b in itertools.pairwise(values))  # never rises


def test_the_default_schedule_is_the_former_constant_one(tiny_lm) -> None:
    model, _ = tiny_lm
    assert OptimConfig().schedule == "constant" and OptimConfig().min_lr_ratio == 0.0
    assert _lrs(model, OptimConfig(lr=1e-3, warmup_steps=3), 6) == pytest.approx(
        [1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3, 1e-3, 1e-3]
    )


def _kl_gradient(model, batch, config, kl, micro):
    model.zero_grad(set_to_none=True)
    loss, metrics = accumulate_gradients(ResponseStats(model, 1.0), config, batch,
                                         torch.arange(6), micro, kl=kl)  # fmt: skip
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return loss, metrics, grads


@pytest.mark.parametrize("agg_mode", ["token-mean", "seq-mean-token-mean"])
def test_the_kl_penalty_joins_the_loss_and_its_gradient(tiny_lm, batch, agg_mode) -> None:
    # loss = pg + β · agg(k3) with log π_ref a fixed perturbation of the rollout policy's; the
    # accumulated gradient is that of the loss formed directly, one-shot or in micro-batches
    from dataclasses import replace

    from entropy_dynamics.aggregation import aggregate
    from entropy_dynamics.losses import compute_policy_loss, kl_to_reference
    from entropy_dynamics.training.reference import KLConfig
    from entropy_dynamics.training.update import loss_inputs

    model, _ = tiny_lm
    config, kl = PolicyLossConfig(agg_mode=agg_mode), KLConfig(coef=0.3, estimator="k3")
    mask = batch.rollout.response_mask
    generator = torch.Generator().manual_seed(1)
    ref = batch.old.logprobs + 0.2 * torch.randn(mask.shape, generator=generator)
    penalized = replace(batch, ref_logprobs=torch.where(mask, ref, float("nan")))

    model.zero_grad(set_to_none=True)
    inputs = loss_inputs(ResponseStats(model, 1.0), config, batch, torch.arange(6))
    per_token = kl_to_reference(inputs.logprobs, ref, "k3")  # (N, R)
    direct = compute_policy_loss(config, inputs).loss + 0.3 * aggregate(per_token, mask, agg_mode)
    direct.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    kl_mean = per_token.detach()[mask].mean()

    for micro in (0, 4):
        loss, metrics, grads = _kl_gradient(model, penalized, config, kl, micro)
        torch.testing.assert_close(loss, direct.detach(), rtol=1e-5, atol=1e-7)
        if micro == 0:  # the metric is averaged over micro-batches, as every loss metric
            torch.testing.assert_close(metrics["actor/kl_ref"], kl_mean, rtol=1e-4, atol=1e-7)
        for a, b in zip(grads, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    _, metrics, _ = _kl_gradient(model, batch, config, None, 0)
    assert "actor/kl_ref" not in metrics  # no penalty, no metric
    with pytest.raises(ValueError, match="unfused loss"):
        accumulate_gradients(ResponseStats(model, 1.0), config, penalized, torch.arange(6),
                             kl=kl, fused=True)  # fmt: skip


def _idle_batch(batch, rows_without_gradient=(2, 3)):
    """``batch`` with a group of equal rewards (advantage 0) and, in another group, one row whose
    every token the filter dropped."""
    advantages = batch.advantages.clone()
    advantages[list(rows_without_gradient)] = 0.0  # the group (2, 3): all rewards equal
    keep = batch.keep.clone()
    keep[5] = False  # a row dropped whole by the filter
    return UpdateBatch(batch.rollout, batch.old, advantages, keep)


def _skipping(model, batch, config, micro=0, fused=False, skip=True, pre=None):
    model.zero_grad(set_to_none=True)
    stats = ResponseStats(model, 1.0)
    loss, metrics = accumulate_gradients(
        stats, config, batch, torch.arange(6), micro, fused=fused and stats.fuses_loss(config),
        skip_idle=skip, pre_update=pre,
    )  # fmt: skip
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return loss, metrics, grads


def test_idle_rows_are_the_rows_without_a_kept_token_of_nonzero_advantage(batch) -> None:
    idle = idle_rows(_idle_batch(batch), torch.arange(6))
    assert idle.tolist() == [False, False, True, True, False, True]
    assert idle_rows(_idle_batch(batch), torch.tensor([0, 3])).tolist() == [False, True]


@pytest.mark.parametrize("agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("micro, fused", [(0, False), (0, True), (2, False)])
def test_skipping_idle_rows_keeps_the_gradient(tiny_lm, batch, agg_mode, micro, fused) -> None:
    model, _ = tiny_lm
    config = PolicyLossConfig(agg_mode=agg_mode)
    idle = _idle_batch(batch)
    whole_loss, whole_metrics, whole = _skipping(model, idle, config, micro, fused, skip=False)
    loss, metrics, grads = _skipping(model, idle, config, micro, fused)
    assert metrics["actor/frac_rows_skipped"] == pytest.approx(0.5)  # rows 2, 3 and 5
    assert whole_metrics["actor/frac_rows_skipped"] == 0.0
    torch.testing.assert_close(loss, whole_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(metrics["actor/frac_kept"], whole_metrics["actor/frac_kept"])
    for a, b in zip(grads, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_losses_that_need_every_row_run_every_row(tiny_lm, batch) -> None:
    model, _ = tiny_lm
    norm = PolicyLossConfig(agg_mode="seq-mean-token-sum-norm")  # divides by the forward's width
    assert skips_idle_rows(PolicyLossConfig()) and skips_idle_rows(replace(norm, loss_agg_norm=8.0))
    bonus, kl_cov = PolicyLossConfig(entropy_coef=0.01), PolicyLossConfig(loss="kl_cov")
    entropic = PolicyLossConfig(loss="entropic", entropic_alpha=0.5)  # a mean over its own tokens
    for config in (bonus, kl_cov, entropic, norm):
        assert not skips_idle_rows(config)
        _, metrics, _ = _skipping(model, _idle_batch(batch), config)
        assert metrics["actor/frac_rows_skipped"] == 0.0
    every = _idle_batch(batch, rows_without_gradient=range(6))  # nothing to learn: run as before
    _, metrics, grads = _skipping(model, every, PolicyLossConfig())
    assert metrics["actor/frac_rows_skipped"] == 0.0 and all(g is not None for g in grads)


@pytest.mark.parametrize("held", ["every row", "rows 0-2", "none"])
def test_the_policy_before_the_step_is_known_where_it_is_needed(tiny_lm, batch, held) -> None:
    # the idle rows are 2, 3 and 5: those holding a dynamics position run without gradient
    model, _ = tiny_lm
    idle = _idle_batch(batch)
    mask = idle.rollout.response_mask.clone()
    if held == "rows 0-2":
        mask[3:] = False
    positions = None if held == "none" else mask.nonzero(as_tuple=True)
    pres = [PreUpdate(idle.rollout, positions) for _ in range(2)]
    for pre, skip in zip(pres, (False, True), strict=True):
        _skipping(model, idle, PolicyLossConfig(), skip=skip, pre=pre)
    whole, skipped = pres
    expected = {"every row": [], "rows 0-2": [3, 5], "none": [2, 3, 5]}[held]
    assert skipped.skipped.nonzero()[:, 0].tolist() == expected
    if positions is not None:
        torch.testing.assert_close(skipped.logits, whole.logits, rtol=1e-5, atol=1e-5)
    ran = ~skipped.skipped  # log p is known on the rows that ran, with or without gradient
    torch.testing.assert_close(skipped.logprobs[ran], whole.logprobs[ran], rtol=1e-5, atol=1e-6)
