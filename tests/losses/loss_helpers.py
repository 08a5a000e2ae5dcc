"""Hand-built inputs of the policy-loss tests: the loss inputs from tensors, and the gradient of a
loss on each token of one sequence."""

from __future__ import annotations

import torch

from entropy_dynamics.losses import PolicyLossConfig, PolicyLossInputs, compute_policy_loss
from entropy_dynamics.stats import TokenStats

__all__ = ["grad_per_token", "loss_inputs"]


def loss_inputs(logprobs, old, adv, mask, entropy=None) -> PolicyLossInputs:
    """``PolicyLossInputs`` whose statistics are ``logprobs`` and ``entropy`` (else zeros)."""
    zeros = torch.zeros_like(old)
    stats = TokenStats(logprobs, zeros if entropy is None else entropy, zeros, zeros)
    return PolicyLossInputs(logprobs, old, adv, mask, stats)


def grad_per_token(config: PolicyLossConfig, log_ratio: list[float], adv: list[float]):
    """``(d loss / d log p_t of one sequence, metrics)`` at the given ``log r_t`` and ``A_t``."""
    old = torch.zeros(1, len(log_ratio), dtype=torch.float64)
    logprobs = torch.tensor([log_ratio], dtype=torch.float64, requires_grad=True)
    adv_t = torch.tensor([adv], dtype=torch.float64)
    mask = torch.ones(1, len(adv), dtype=torch.bool)
    out = compute_policy_loss(config, loss_inputs(logprobs, old, adv_t, mask))
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    return grad[0], out.metrics
