"""The tail every registered policy loss shares (``losses/tail.py``): the token filter by name and
its metrics, the aggregation's per-token weights and micro-batch shares, the entropy bonus."""

from __future__ import annotations

import math

import pytest
import torch
from loss_helpers import loss_inputs

from entropy_dynamics import theory
from entropy_dynamics.filters import available_filters, register_filter
from entropy_dynamics.losses import (
    AGG_MODES,
    PolicyLossConfig,
    PolicyLossInputs,
    aggregation_share,
    compute_policy_loss,
)
from entropy_dynamics.methods import resolve_method
from entropy_dynamics.stats import TokenStats, token_stats

if "_test_drop_negative" not in available_filters():

    @register_filter("_test_drop_negative")
    def _drop_negative(stats, advantages, response_mask, *, threshold: float = 0.0):
        """Test filter: drop valid tokens with A < threshold; metric: the dropped count."""
        valid = response_mask != 0
        dropped = valid & (advantages < threshold)
        return valid & ~dropped, {"_test_drop_negative/n_dropped": dropped.sum().float()}


def test_dropped_tokens_leave_the_token_mean_denominator() -> None:
    old = torch.zeros(1, 4, dtype=torch.float64)
    logprobs = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    inputs = loss_inputs(logprobs, old, adv, mask)
    inputs.keep_mask = torch.tensor([[True, True, False, True]])
    out = compute_policy_loss(PolicyLossConfig(), inputs)
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    # Three kept tokens: gradient -A/3 on kept tokens, 0 on the dropped one.
    torch.testing.assert_close(
        grad[0], torch.tensor([-1 / 3, -1 / 3, 0.0, 1 / 3], dtype=torch.float64)
    )
    assert out.metrics["actor/frac_kept"].item() == pytest.approx(0.75)


def test_aggregation_mode_sets_per_token_gradient_weights() -> None:
    # With ratio 1 and A = 1 the gradient on log p_t is -(weight of token t) in the mode:
    # lengths 1 and 3 (T = 4): token-mean 1/4 each; seq-mean-token-mean 1/2 and 1/6;
    # seq-mean-token-sum 1/2; seq-mean-token-sum-norm with norm 8: 1/8.
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    adv = mask.double()
    expected = {
        "token-mean": [[1 / 4, 0, 0, 0], [1 / 4, 1 / 4, 1 / 4, 0]],
        "seq-mean-token-mean": [[1 / 2, 0, 0, 0], [1 / 6, 1 / 6, 1 / 6, 0]],
        "seq-mean-token-sum": [[1 / 2, 0, 0, 0], [1 / 2, 1 / 2, 1 / 2, 0]],
        "seq-mean-token-sum-norm": [[1 / 8, 0, 0, 0], [1 / 8, 1 / 8, 1 / 8, 0]],
    }
    for mode, weights in expected.items():
        norm = 8.0 if mode == "seq-mean-token-sum-norm" else None
        config = PolicyLossConfig(agg_mode=mode, loss_agg_norm=norm)
        logprobs = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
        out = compute_policy_loss(config, loss_inputs(logprobs, logprobs.detach(), adv, mask))
        (grad,) = torch.autograd.grad(out.loss, logprobs)
        torch.testing.assert_close(-grad, torch.tensor(weights, dtype=torch.float64))


@pytest.mark.parametrize("agg_mode", AGG_MODES)
def test_micro_batch_shares_reassemble_the_whole_batch_gradient(agg_mode) -> None:
    # Gradient accumulation as the trainer does it: each micro-batch's pg and entropy terms,
    # weighted by aggregation_share, must give the one-shot gradient of the whole batch.
    gen = torch.Generator().manual_seed(0)
    b, t = 6, 5
    logprobs = (-torch.rand(b, t, generator=gen, dtype=torch.float64)).requires_grad_()
    entropy = torch.rand(b, t, generator=gen, dtype=torch.float64).requires_grad_()
    old = logprobs.detach() + 0.05 * torch.randn(b, t, generator=gen, dtype=torch.float64)
    advantages = torch.randn(b, 1, generator=gen, dtype=torch.float64).expand(b, t)
    mask = torch.rand(b, t, generator=gen) < 0.8
    mask[2] = False  # a row without tokens
    keep = torch.rand(b, t, generator=gen) < 0.7
    norm = 7.0 if agg_mode == "seq-mean-token-sum-norm" else None
    config = PolicyLossConfig(agg_mode=agg_mode, entropy_coef=0.3, loss_agg_norm=norm)

    def inputs(rows):
        stats = TokenStats(logprobs[rows], entropy[rows], torch.zeros(len(rows), t), None)
        return PolicyLossInputs(
            logprobs[rows], old[rows], advantages[rows], mask[rows], stats, keep[rows]
        )

    whole = compute_policy_loss(config, inputs(torch.arange(b))).loss
    expected = torch.autograd.grad(whole, (logprobs, entropy))
    total = 0.0
    trained = keep & mask
    for rows in (torch.tensor([0, 1]), torch.tensor([2, 3, 4]), torch.tensor([5])):
        out = compute_policy_loss(config, inputs(rows))
        pg_share = aggregation_share(agg_mode, trained[rows], trained)
        entropy_share = aggregation_share(agg_mode, mask[rows], mask)
        total = total + pg_share * out.pg_loss - config.entropy_coef * entropy_share * out.entropy
    got = torch.autograd.grad(total, (logprobs, entropy))
    torch.testing.assert_close(total, whole)
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e)


def test_filter_composed_by_name_drops_tokens_and_reports_its_metrics() -> None:
    # Registered test filter drops A < 0. Tokens (ratio 1): A = (2, -1, 1 | 3, pad).
    # Kept: 2, 1, 3 -> token-mean loss = -(2 + 1 + 3) / 3 = -2; without the filter
    # -(2 - 1 + 1 + 3) / 4 = -1.25.
    adv = torch.tensor([[2.0, -1.0, 1.0], [3.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    logprobs = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    inputs = loss_inputs(logprobs, logprobs.detach(), adv, mask)
    out = compute_policy_loss(PolicyLossConfig(filter="_test_drop_negative"), inputs)
    assert out.loss.item() == pytest.approx(-2.0)
    assert out.metrics["_test_drop_negative/n_dropped"].item() == 1.0
    assert out.metrics["actor/frac_kept"].item() == pytest.approx(3 / 4)
    assert out.keep_mask.tolist() == [[True, False, True], [True, False, False]]
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    assert grad[0, 1].item() == 0.0
    assert compute_policy_loss(PolicyLossConfig(), inputs).loss.item() == pytest.approx(-1.25)
    # Options reach the filter: threshold 1.5 also drops A = 1 -> -(2 + 3) / 2.
    config = PolicyLossConfig(filter="_test_drop_negative", filter_options={"threshold": 1.5})
    assert compute_policy_loss(config, inputs).loss.item() == pytest.approx(-2.5)


def test_filter_by_name_drops_negative_outliers() -> None:
    # clip_b: S = (0,0,0,0,0,0,0,0,0,-1), A < 0 on the last token: m = -0.1, σ = 0.3,
    # S - m = -0.9: dropped iff -0.9 < -μ·0.3, i.e. μ < 3: kept at μ = 3.5, dropped at 2.5.
    s = torch.tensor([[0.0] * 9 + [-1.0]])
    zeros = torch.zeros_like(s)
    adv = torch.tensor([[1.0] * 9 + [-1.0]])
    mask = torch.ones_like(s, dtype=torch.bool)
    stats = TokenStats(zeros, zeros, s, zeros)
    for mu, kept in ((3.5, 1.0), (2.5, 0.9)):
        config = resolve_method("clip_b", filter_options={"mu": mu})
        out = compute_policy_loss(config, PolicyLossInputs(zeros, zeros, adv, mask, stats))
        assert out.metrics["actor/frac_kept"].item() == pytest.approx(kept)
        assert "clip_b/frac_clipped" in out.metrics


def test_clip_cov_never_drops_a_token_whose_ratio_is_already_clipped() -> None:
    # cov_t = (A - mean A)(log p - mean log p) with A = (2, 0, -2), log p = (1.5, 0, 0):
    # means 0 and 0.5 -> cov = (2, 0, 1); only token 0 lies strictly inside (1, 5), and
    # K = max(int(2e-4 · 3), 1) = 1, so clip_cov drops token 0 -- unless its PPO ratio is
    # clipped (r = 1.5 > 1.2 with A > 0), which verl excludes from the candidates.
    adv = torch.tensor([[2.0, 0.0, -2.0]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    logprobs = torch.tensor([[1.5, 0.0, 0.0]], dtype=torch.float64)
    config = resolve_method("clip_cov")
    for log_r0, kept in ((0.0, 2 / 3), (math.log(1.5), 1.0)):
        old = logprobs - torch.tensor([[log_r0, 0.0, 0.0]], dtype=torch.float64)
        out = compute_policy_loss(config, loss_inputs(logprobs, old, adv, mask))
        assert out.metrics["actor/frac_kept"].item() == pytest.approx(kept)


def test_entropy_bonus_gradient_is_minus_coef_times_entropy_gradient() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(2, 5, 7, generator=gen, dtype=torch.float64)).requires_grad_(True)
    tokens = torch.randint(0, 7, (2, 5), generator=gen)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 3:] = False
    stats = token_stats(logits, tokens, entropy_grad=True)
    zeros = torch.zeros(2, 5, dtype=torch.float64)  # A = 0: only the bonus has a gradient
    inputs = PolicyLossInputs(stats.logprobs, stats.logprobs.detach(), zeros, mask, stats)
    out = compute_policy_loss(resolve_method("entropy_bonus", entropy_coef=0.5), inputs)
    (grad,) = torch.autograd.grad(out.loss, logits)
    # Independent reference: theory.entropy, token-mean over the 8 valid positions.
    logits_ref = logits.detach().requires_grad_(True)
    mean_h = (theory.entropy(logits_ref) * mask).sum() / mask.sum()
    (grad_h,) = torch.autograd.grad(mean_h, logits_ref)
    torch.testing.assert_close(grad, -0.5 * grad_h, rtol=0, atol=1e-12)
    assert out.metrics["actor/entropy"].item() == pytest.approx(mean_h.item())
    assert out.metrics["actor/pg_loss"].item() == 0.0  # the bonus is not in pg_loss
    # A small step along -grad raises the entropy.
    after = (theory.entropy(logits.detach() - 0.1 * grad) * mask).sum() / mask.sum()
    assert after > mean_h


def test_entropy_bonus_without_differentiable_entropy_is_refused() -> None:
    logits = torch.randn(1, 3, 5, dtype=torch.float64, requires_grad=True)
    stats = token_stats(logits, torch.zeros(1, 3, dtype=torch.long))  # entropy detached
    zeros = torch.zeros(1, 3, dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    inputs = PolicyLossInputs(stats.logprobs, stats.logprobs.detach(), zeros, mask, stats)
    with pytest.raises(ValueError, match="entropy_grad=True"):
        compute_policy_loss(resolve_method("entropy_bonus"), inputs)
