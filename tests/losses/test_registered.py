"""The registered losses built on PPO-clip that have no home elsewhere yet (losses/registered.py):
EntroPIC's ``entropic`` loss against a hand-computed gradient, and its option checks."""

from __future__ import annotations

import pytest
import torch

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
