"""The per-token policy losses (``losses/token.py``): PPO-clip's trust region, clip-higher and the
dual clip, on hand-made ratios whose gradients are derived in the comments; the estimators of
the KL to a reference policy in float64."""

from __future__ import annotations

import math

import pytest
import torch
from loss_helpers import grad_per_token

from entropy_dynamics.losses import PolicyLossConfig, kl_to_reference, ppo_clip_token_loss
from entropy_dynamics.methods import resolve_method


def test_ppo_clipping_zeroes_gradient_outside_the_trust_region() -> None:
    # Tokens: (r=1.5, A>0) clipped; (r=0.5, A>0) not clipped; (r=0.5, A<0) clipped;
    # (r=1.5, A<0) not clipped; (r=1, A>0) not clipped.
    ratios = [1.5, 0.5, 0.5, 1.5, 1.0]
    adv = [1.0, 1.0, -1.0, -1.0, 2.0]
    grad, metrics = grad_per_token(PolicyLossConfig(), [math.log(r) for r in ratios], adv)
    # Unclipped token: d(-A r / n)/d log p = -A r / n with n = 5.
    expected = [0.0, -1.0 * 0.5 / 5, 0.0, 1.0 * 1.5 / 5, -2.0 / 5]
    torch.testing.assert_close(grad, torch.tensor(expected, dtype=torch.float64))
    assert metrics["actor/pg_clipfrac"].item() == pytest.approx(2 / 5)
    assert metrics["actor/pg_clipfrac_lower"].item() == 0.0  # no dual clip by default
    # ppo_kl = mean(log p_old - log p) = -mean(log r) = -log(1.5 · 0.5 · 0.5 · 1.5) / 5.
    assert metrics["actor/ppo_kl"].item() == pytest.approx(-math.log(0.5625) / 5)


def test_clip_higher_keeps_low_probability_positive_updates() -> None:
    log_ratio, adv = [math.log(1.25)], [1.0]
    grad_sym, _ = grad_per_token(PolicyLossConfig(), log_ratio, adv)
    grad_high, _ = grad_per_token(resolve_method("clip_higher"), log_ratio, adv)
    assert grad_sym.item() == 0.0  # 1.25 > 1 + 0.2: clipped
    assert grad_high.item() == pytest.approx(-1.25)  # 1.25 < 1 + 0.28: trained
    # The lower side is unchanged: r = 0.75 < 1 - 0.2 with A < 0 is clipped in both.
    for config in (PolicyLossConfig(), resolve_method("clip_higher")):
        grad, _ = grad_per_token(config, [math.log(0.75)], [-1.0])
        assert grad.item() == 0.0


def test_dual_clip_bounds_negative_advantage_loss() -> None:
    # A = -1, r = 5, c = 3: pg = min(max(5, 1.2), 3) = 3, a constant -> no gradient.
    grad, metrics = grad_per_token(PolicyLossConfig(dual_clip_c=3.0), [math.log(5.0)], [-1.0])
    assert grad.item() == 0.0
    assert metrics["actor/pg_clipfrac_lower"].item() == 1.0
    # r = 2 < c: the ordinary surrogate, gradient -A r = 2.
    grad, metrics = grad_per_token(PolicyLossConfig(dual_clip_c=3.0), [math.log(2.0)], [-1.0])
    assert grad.item() == pytest.approx(2.0)
    assert metrics["actor/pg_clipfrac_lower"].item() == 0.0
    # A > 0 is untouched by the dual clip: r = 5 is clipped by 1 + eps as usual (zero gradient).
    grad, _ = grad_per_token(PolicyLossConfig(dual_clip_c=3.0), [math.log(5.0)], [1.0])
    assert grad.item() == 0.0
    # Without dual clip the A < 0, r = 5 token is trained: gradient -A r = 5.
    grad, _ = grad_per_token(PolicyLossConfig(), [math.log(5.0)], [-1.0])
    assert grad.item() == pytest.approx(5.0)


def test_ppo_clip_token_loss_by_hand() -> None:
    # A = (1, 1, -1, -1), r = (1.5, 0.9, 0.5, 5), eps 0.2, c = 3:
    # max(-A r, -A clamp(r, 0.8, 1.2)) = (-1.2, -0.9, 0.8, 5); the dual clip caps A < 0 at
    # -A c = 3: (-1.2, -0.9, 0.8, 3). Clipped where the clamped term is the active one: token 0
    # (r > 1.2, A > 0) and token 2 (r < 0.8, A < 0); dual-clipped: token 3.
    ratio = torch.tensor([[1.5, 0.9, 0.5, 5.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    loss, clipped, dual = ppo_clip_token_loss(
        ratio, adv, eps_low=0.2, eps_high=0.2, dual_clip_c=3.0
    )
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -0.9, 0.8, 3.0]], dtype=torch.float64))
    assert clipped.tolist() == [[True, False, True, False]]
    assert dual.tolist() == [[False, False, False, True]]


def test_kl_estimators_by_hand_in_float64() -> None:
    # log π_θ = log 0.5, log π_ref = log 0.25: log r = log(0.25 / 0.5) = -log 2, r = 1/2;
    # k1 = -log r = log 2, k2 = (log 2)² / 2, k3 = r - 1 - log r = log 2 - 1/2
    logprobs = torch.tensor([[math.log(0.5), math.log(0.3)]], dtype=torch.float64)
    ref = torch.tensor([[math.log(0.25), math.log(0.3)]], dtype=torch.float64)
    ln2 = math.log(2.0)
    expected = {"k1": ln2, "k2": ln2**2 / 2, "k3": ln2 - 0.5}
    for name, value in expected.items():
        got = kl_to_reference(logprobs, ref, name)
        assert got.dtype == torch.float64
        assert got[0, 0].item() == pytest.approx(value, rel=1e-15)
        assert got[0, 1].item() == 0.0  # same probability: every estimator is 0
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_to_reference(logprobs, ref, "low_var_kl")


def test_kl_estimators_gradients_and_expectations() -> None:
    # d/d log π_θ at log r: k1 → 1, k2 → -log r, k3 → 1 - r; and over the exact distribution
    # π_θ = (0.5, 0.3, 0.2), E_θ[k1] = E_θ[k3] = KL(π_θ ‖ π_ref) (both unbiased)
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    logp = p.log().requires_grad_(True)
    kl = (p * (p / q).log()).sum().item()
    for name in ("k1", "k3"):
        assert (p * kl_to_reference(p.log(), q.log(), name)).sum().item() == pytest.approx(kl)
    log_r = (q.log() - p.log()).detach()
    grads = {"k1": torch.ones(3, dtype=torch.float64), "k2": -log_r, "k3": 1 - log_r.exp()}
    for name, grad in grads.items():
        (g,) = torch.autograd.grad(kl_to_reference(logp, q.log(), name).sum(), logp)
        torch.testing.assert_close(g, grad, rtol=1e-12, atol=1e-15)
