"""The registered losses (``losses/registered.py``): KL-Cov's penalty on the selected tokens and
EntroPIC's ``entropic`` loss against hand-computed gradients, and EntroPIC's option checks. The
``ppo`` loss's formula: ``test_token.py``."""

from __future__ import annotations

import math

import pytest
import torch
from loss_helpers import loss_inputs

from entropy_dynamics.losses import PolicyLossInputs, compute_policy_loss
from entropy_dynamics.methods import resolve_method
from entropy_dynamics.stats import TokenStats


def test_entropic_loss_gradient_by_hand() -> None:
    # p = [0.97, 0.5, 0.99], A = [1, 1, -1], r = 1, token-mean over 3 tokens: the PPO part gives
    # d loss / d log p_t = -A_t / 3. EntroPIC's term α·mean_{p > 0.95}(-r·|A|) adds -α|A_t| / 2
    # on the two high-probability tokens 0 and 2. α = 0.5.
    logp = torch.log(torch.tensor([[0.97, 0.5, 0.99]], dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    zeros = torch.zeros(1, 3, dtype=torch.float64)
    inputs = PolicyLossInputs(logp, logp.detach(), adv, mask, TokenStats(logp, zeros, zeros, zeros))
    out = compute_policy_loss(resolve_method("entropic", entropic_alpha=0.5), inputs)
    (grad,) = torch.autograd.grad(out.loss, logp)
    expected = [-1 / 3 - 0.25, -1 / 3, 1 / 3 - 0.25]
    torch.testing.assert_close(grad[0], torch.tensor(expected, dtype=torch.float64))
    assert out.metrics["entropic/frac_high_prob"] == pytest.approx(2 / 3)
    # α = 0 is plain PPO.
    plain = compute_policy_loss(resolve_method("entropic"), inputs)
    torch.testing.assert_close(plain.loss, compute_policy_loss(resolve_method("grpo"), inputs).loss)


@pytest.mark.parametrize("options", [{"entropic_alpha": 1.5}, {"entropic_prob_threshold": 1.0}])
def test_entropic_options_are_checked(options) -> None:
    with pytest.raises(ValueError, match="entropic_"):
        resolve_method("entropic", **options)


def test_kl_cov_penalty_applies_only_to_selected_tokens_without_clipping() -> None:
    # log p = (2, 0, 0, -1), A = (2, 0, 0.5, -2.5): means 0.25 and 0, so
    # cov = (2·1.75, 0, 0.5·(-0.25), -2.5·(-1.25)) = (3.5, 0, -0.125, 3.125); with ratio 0.25
    # K = 1 token is selected: token 0. Ratios: e^0.1, 1, e^0.5, 1.
    logprobs = torch.tensor([[2.0, 0.0, 0.0, -1.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[1.9, 0.0, -0.5, -1.0]], dtype=torch.float64)
    adv = torch.tensor([[2.0, 0.0, 0.5, -2.5]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    config = resolve_method("kl_cov", kl_cov_ratio=0.25, kl_cov_coef=2.0)
    out = compute_policy_loss(config, loss_inputs(logprobs, old, adv, mask))
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    # d/d log p of (-A r + 2 |log r|) / 4 on token 0 (log r > 0): (-2 e^0.1 + 2) / 4;
    # token 2, not clipped under KL-Cov although r = e^0.5 > 1.2 with A > 0: -0.5 e^0.5 / 4;
    # token 3: 2.5 / 4.
    expected = [(-2 * math.exp(0.1) + 2.0) / 4, 0.0, -0.5 * math.exp(0.5) / 4, 2.5 / 4]
    torch.testing.assert_close(grad[0], torch.tensor(expected, dtype=torch.float64))
    assert out.metrics["kl_cov/frac_selected"].item() == pytest.approx(0.25)
    assert out.metrics["actor/pg_clipfrac"].item() == 0.0
    # The same batch under PPO-clip: token 2 is clipped, token 0 has no penalty.
    out = compute_policy_loss(resolve_method("grpo"), loss_inputs(logprobs, old, adv, mask))
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    expected = [-2 * math.exp(0.1) / 4, 0.0, 0.0, 2.5 / 4]
    torch.testing.assert_close(grad[0], torch.tensor(expected, dtype=torch.float64))
