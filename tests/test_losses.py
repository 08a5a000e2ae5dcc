"""Policy losses: the GRPO logit update of Theorem 3.3, clipping, aggregation, bonuses, methods."""

from __future__ import annotations

import math

import pytest
import torch

from entropy_dynamics import theory
from entropy_dynamics.losses import (
    AGG_MODES,
    PolicyLossConfig,
    PolicyLossInputs,
    aggregate,
    available_methods,
    compute_policy_loss,
    get_policy_loss,
    resolve_method,
)
from entropy_dynamics.stats import TokenStats, token_stats


def _inputs(logprobs, old, adv, mask, entropy=None) -> PolicyLossInputs:
    zeros = torch.zeros_like(old)
    stats = TokenStats(logprobs, zeros if entropy is None else entropy, zeros, zeros)
    return PolicyLossInputs(logprobs, old, adv, mask, stats)


def test_descent_direction_is_theorem_3_3_logit_update() -> None:
    # At ratio 1, -∂(token-mean loss)/∂z_t = A_t (e_k - p_t) / n_tokens at every valid position.
    gen = torch.Generator().manual_seed(0)
    b, t, v = 3, 4, 11
    logits = torch.randn(b, t, v, generator=gen, dtype=torch.float64).requires_grad_(True)
    tokens = torch.randint(0, v, (b, t), generator=gen)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([1.5, -0.7, 0.3], dtype=torch.float64)[:, None].expand(b, t) * mask
    stats = token_stats(logits, tokens, chunk_size=5)
    inputs = PolicyLossInputs(stats.logprobs, stats.logprobs.detach(), adv, mask, stats)
    out = compute_policy_loss(PolicyLossConfig(), inputs)
    (grad,) = torch.autograd.grad(out.loss, logits)
    n_tokens = int(mask.sum())
    expected = theory.grpo_logit_update(logits.detach(), tokens, adv, lr=1.0 / n_tokens)
    expected = expected * mask[..., None]  # padding gets no gradient
    torch.testing.assert_close(-grad, expected, rtol=0, atol=1e-10)


def _grad_per_token(config: PolicyLossConfig, log_ratio: list[float], adv: list[float]):
    old = torch.zeros(1, len(log_ratio), dtype=torch.float64)
    logprobs = torch.tensor([log_ratio], dtype=torch.float64, requires_grad=True)
    adv_t = torch.tensor([adv], dtype=torch.float64)
    mask = torch.ones(1, len(adv), dtype=torch.bool)
    out = compute_policy_loss(config, _inputs(logprobs, old, adv_t, mask))
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    return grad[0], out.metrics


def test_ppo_clipping_zeroes_gradient_outside_the_trust_region() -> None:
    # Tokens: (r=1.5, A>0) clipped; (r=0.5, A>0) not clipped; (r=0.5, A<0) clipped;
    # (r=1.5, A<0) not clipped; (r=1, A>0) not clipped.
    ratios = [1.5, 0.5, 0.5, 1.5, 1.0]
    adv = [1.0, 1.0, -1.0, -1.0, 2.0]
    grad, metrics = _grad_per_token(PolicyLossConfig(), [math.log(r) for r in ratios], adv)
    # Unclipped token: d(-A r / n)/d log p = -A r / n with n = 5.
    expected = [0.0, -1.0 * 0.5 / 5, 0.0, 1.0 * 1.5 / 5, -2.0 / 5]
    torch.testing.assert_close(grad, torch.tensor(expected, dtype=torch.float64))
    assert metrics["actor/pg_clipfrac"].item() == pytest.approx(2 / 5)


def test_clip_higher_keeps_low_probability_positive_updates() -> None:
    log_ratio, adv = [math.log(1.25)], [1.0]
    grad_sym, _ = _grad_per_token(PolicyLossConfig(), log_ratio, adv)
    grad_high, _ = _grad_per_token(resolve_method("clip_higher"), log_ratio, adv)
    assert grad_sym.item() == 0.0  # 1.25 > 1 + 0.2: clipped
    assert grad_high.item() == pytest.approx(-1.25)  # 1.25 < 1 + 0.28: trained


def test_dual_clip_bounds_negative_advantage_loss() -> None:
    # A = -1, r = 5, c = 3: pg = min(max(5, 1.2), 3) = 3, a constant -> no gradient.
    grad, metrics = _grad_per_token(PolicyLossConfig(dual_clip_c=3.0), [math.log(5.0)], [-1.0])
    assert grad.item() == 0.0
    assert metrics["actor/pg_clipfrac_lower"].item() == 1.0
    # r = 2 < c: the ordinary surrogate, gradient -A r = 2.
    grad, metrics = _grad_per_token(PolicyLossConfig(dual_clip_c=3.0), [math.log(2.0)], [-1.0])
    assert grad.item() == pytest.approx(2.0)
    assert metrics["actor/pg_clipfrac_lower"].item() == 0.0


def test_aggregation_modes_match_hand_computation() -> None:
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    # Valid: row 0 {1, 2}, row 1 {4}, row 2 empty (ignored by sequence means).
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(7 / 3)
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx((1.5 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-sum").item() == pytest.approx((3 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx(7 / 3)
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", norm=14).item() == pytest.approx(0.5)
    assert aggregate(loss, torch.zeros_like(mask), "token-mean").item() == 0.0
    assert set(AGG_MODES) == {
        "token-mean",
        "seq-mean-token-mean",
        "seq-mean-token-sum",
        "seq-mean-token-sum-norm",
    }


def test_dropped_tokens_leave_the_token_mean_denominator() -> None:
    old = torch.zeros(1, 4, dtype=torch.float64)
    logprobs = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    inputs = _inputs(logprobs, old, adv, mask)
    inputs.keep_mask = torch.tensor([[True, True, False, True]])
    out = compute_policy_loss(PolicyLossConfig(), inputs)
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    # Three kept tokens: gradient -A/3 on kept tokens, 0 on the dropped one.
    torch.testing.assert_close(
        grad[0], torch.tensor([-1 / 3, -1 / 3, 0.0, 1 / 3], dtype=torch.float64)
    )
    assert out.metrics["actor/frac_kept"].item() == pytest.approx(0.75)


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


def test_entropy_bonus_step_raises_entropy() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(2, 5, 7, generator=gen, dtype=torch.float64)).requires_grad_(True)
    tokens = torch.randint(0, 7, (2, 5), generator=gen)
    mask = torch.ones(2, 5, dtype=torch.bool)
    stats = token_stats(logits, tokens, entropy_grad=True)
    zeros = torch.zeros(2, 5, dtype=torch.float64)
    inputs = PolicyLossInputs(stats.logprobs, stats.logprobs.detach(), zeros, mask, stats)
    out = compute_policy_loss(resolve_method("entropy_bonus", entropy_coef=0.5), inputs)
    (grad,) = torch.autograd.grad(out.loss, logits)
    before = theory.entropy(logits.detach()).mean()
    after = theory.entropy(logits.detach() - 0.1 * grad).mean()
    assert after > before


def test_kl_cov_penalty_applies_only_to_selected_tokens() -> None:
    # Four tokens, ratio 1 ± δ; covariance (A - Ā)(log p - mean) is largest for token 0.
    logprobs = torch.tensor([[2.0, 0.0, 0.0, -2.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[1.9, 0.0, 0.0, -2.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, 0.0, 0.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    config = resolve_method("kl_cov", kl_cov_ratio=0.25, kl_cov_coef=2.0)
    out = compute_policy_loss(config, _inputs(logprobs, old, adv, mask))
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    ratio0 = math.exp(0.1)
    # Token 0: d(-A r + 2 |Δ|)/d log p / 4 = (-ratio0 + 2) / 4; token 3: -A r / 4 = 1/4.
    torch.testing.assert_close(
        grad[0], torch.tensor([(-ratio0 + 2.0) / 4, 0.0, 0.0, 0.25], dtype=torch.float64)
    )
    assert out.metrics["kl_cov/frac_selected"].item() == pytest.approx(0.25)


@pytest.mark.parametrize("method", available_methods())
def test_every_method_runs_and_backpropagates(method: str) -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 6, 9, generator=gen).requires_grad_(True)
    tokens = torch.randint(0, 9, (4, 6), generator=gen)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])[:, None] * mask
    stats = token_stats(logits, tokens, entropy_grad=True)
    inputs = PolicyLossInputs(stats.logprobs, stats.logprobs.detach(), adv, mask, stats)
    out = compute_policy_loss(resolve_method(method), inputs)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(logits.grad).all()
    assert out.keep_mask.shape == (4, 6) and not out.keep_mask[1, 4:].any()
    assert all(value.dim() == 0 for value in out.metrics.values())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"agg_mode": "mean"}, "agg_mode"),
        ({"dual_clip_c": 0.5}, "dual_clip_c"),
        ({"eps_low": -0.1}, "eps_low"),
        ({"filter": "nope"}, "registered filters"),
        ({"filter": "clip_b", "filter_options": {"muu": 1}}, "no option 'muu'"),
        ({"loss": "nope"}, "registered"),
        ({"kl_cov_ratio": 2.0}, "kl_cov_ratio"),
    ],
)
def test_invalid_config_is_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PolicyLossConfig(**kwargs)


def test_registry_and_method_errors_list_the_names() -> None:
    with pytest.raises(KeyError, match="ppo"):
        get_policy_loss("missing")
    with pytest.raises(KeyError, match="clip_b"):
        resolve_method("missing")
    with pytest.raises(ValueError, match="unknown loss option 'eps'"):
        resolve_method("grpo", eps=0.1)


def test_shape_mismatch_is_refused() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages has shape"):
        compute_policy_loss(PolicyLossConfig(), _inputs(x, x, torch.zeros(2, 4), x.bool()))
