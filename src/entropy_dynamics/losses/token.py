"""Per-token policy losses: pure tensor functions, one formula each; the registered losses
(:mod:`entropy_dynamics.losses.registered`) are built from them.

- :func:`ppo_clip_token_loss`: PPO-clip with clip-higher and dual clip (GRPO, DAPO);
- :func:`kl_cov_token_loss`: KL-Cov's unclipped surrogate plus ``|log r|`` on selected tokens;
- :func:`entropic_adjustment`: EntroPIC's extra term on high-probability tokens;
- :func:`kl_to_reference`: the per-token estimators k1, k2, k3 of ``KL(π_θ ‖ π_ref)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from entropy_dynamics.aggregation import aggregate

__all__ = [
    "KL_ESTIMATORS",
    "entropic_adjustment",
    "kl_cov_token_loss",
    "kl_to_reference",
    "ppo_clip_token_loss",
]

KL_ESTIMATORS = ("k1", "k2", "k3")
"""The per-token KL estimators of :func:`kl_to_reference`."""


def ppo_clip_token_loss(
    ratio: Tensor,
    advantages: Tensor,
    *,
    eps_low: float,
    eps_high: float,
    dual_clip_c: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token PPO-clip loss (negated clipped surrogate), with optional dual clip.

    ``max(-A·r, -A·clamp(r, 1-eps_low, 1+eps_high))``, then for ``A < 0`` ``min(·, -A·c)``.

    Args:
        ratio: ``(B, T)`` importance ratio ``r = p / p_old`` (differentiable).
        advantages: ``(B, T)``.
        eps_low, eps_high: clip ranges; dual_clip_c: ``c > 1`` or ``None``.

    Returns:
        ``(pg_losses (B, T), clipped (B, T) bool, dual_clipped (B, T) bool)``: ``clipped`` where
        the clipped surrogate is the active (constant) one, ``dual_clipped`` where the dual clip
        is (both masks over all positions; restrict them to valid tokens yourself).
    """
    pg_loss1 = -advantages * ratio  # (B, T)
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)  # (B, T)
    pg_losses = torch.maximum(pg_loss1, pg_loss2)
    clipped = pg_loss2 > pg_loss1
    dual_clipped = torch.zeros_like(clipped)
    if dual_clip_c is not None:
        pg_loss3 = -advantages * dual_clip_c  # (B, T) constant
        negative = advantages < 0
        dual_clipped = negative & (pg_losses > pg_loss3)
        pg_losses = torch.where(negative, torch.minimum(pg_losses, pg_loss3), pg_losses)
    return pg_losses, clipped, dual_clipped


def kl_cov_token_loss(
    ratio: Tensor, log_ratio: Tensor, advantages: Tensor, selected: Tensor, *, coef: float
) -> Tensor:
    """Per-token KL-Cov loss (arXiv 2505.22617): ``-A·r``, plus ``coef·|log r|`` where
    ``selected``.

    Args:
        ratio: ``(B, T)`` importance ratio (differentiable).
        log_ratio: ``(B, T)`` ``log p - log p_old`` (differentiable).
        advantages: ``(B, T)``.
        selected: ``(B, T)`` bool, the penalised tokens.
        coef: penalty coefficient ``>= 0``.

    Returns:
        ``(B, T)`` per-token loss.
    """
    pg_losses = -advantages * ratio  # (B, T), no clipping
    return torch.where(selected, pg_losses + coef * log_ratio.abs(), pg_losses)


def entropic_adjustment(
    ratio: Tensor,
    advantages: Tensor,
    logprobs: Tensor,
    mask: Tensor,
    *,
    alpha: float,
    prob_threshold: float = 0.95,
    agg_mode: str = "token-mean",
    norm: float | None = None,
) -> tuple[Tensor, Tensor]:
    """EntroPIC's extra loss term: ``α · agg(-r · |A|)`` over the high-probability tokens
    (``p > prob_threshold``) in ``mask``, as the released ``entropic`` loss mode.

    Added to the PPO loss it weighs positive high-probability tokens by ``1 + α'`` and negative
    ones by ``1 - α'`` (``α'`` = ``α`` times the aggregation's ratio of denominators). By
    Theorem 3.2, rewarding a likely token lowers ``H`` and penalising one raises it, so ``α > 0``
    (entropy above target) lowers the entropy and ``α < 0`` raises it.

    Args:
        ratio: ``(B, T)`` importance ratio (differentiable; not clipped, as the released code).
        advantages: ``(B, T)``, 0 on padding.
        logprobs: ``(B, T)`` current ``log p`` of the sampled tokens (read detached).
        mask: ``(B, T)`` bool, the tokens that may carry the term (valid, kept).

    Returns:
        ``(term (0-d), high-probability mask (B, T) bool)``.
    """
    high = (mask != 0) & (logprobs.detach() > math.log(prob_threshold))  # (B, T)
    term = alpha * aggregate(-ratio * advantages.abs(), high, agg_mode, norm)
    return term, high


def kl_to_reference(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of ``KL(π_θ ‖ π_ref)`` at the sampled tokens (Schulman, "Approximating
    KL divergence", 2020), with ``log r = log π_ref(k) - log π_θ(k)``:

    - ``k1 = -log r``: unbiased, high variance, can be negative (verl ``kl_loss_type: kl``);
    - ``k2 = (log r)² / 2``: biased, low variance; its gradient is the true KL's in expectation
      (verl ``mse``);
    - ``k3 = r - 1 - log r``: unbiased, never negative, low variance (TRL's only estimator,
      verl's ``low_var_kl``, which also clamps it to ``[-10, 10]``; no clamp here).

    Args:
        logprobs: ``(B, T)`` ``log π_θ`` of the sampled tokens (differentiable).
        ref_logprobs: ``(B, T)`` ``log π_ref`` of the same tokens (no gradient needed); both
            finite, padding included (mask it before calling).
        estimator: ``k1``, ``k2`` or ``k3``.

    Returns:
        ``(B, T)`` the estimate at each token.
    """
    log_r = ref_logprobs - logprobs  # (B, T)
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r.square()
    if estimator == "k3":
        return torch.exp(log_r) - 1.0 - log_r
    raise ValueError(f"estimator: unknown {estimator!r}; use one of {', '.join(KL_ESTIMATORS)}")
