"""The registered policy losses: ``ppo``, ``kl_cov`` and ``entropic``, each its per-token formula
(:mod:`entropy_dynamics.losses.token`) followed by the shared tail
(:func:`~entropy_dynamics.losses.tail.assemble`). Per response token ``t``, with the importance
ratio ``r_t = exp(log p_t - log p_old_t)`` and token-level advantage ``A_t``:

- ``ppo`` — the PPO-clip surrogate of GRPO (Schulman et al. 2017, arXiv 1707.06347):
  ``pg_loss1 = -A·r``, ``pg_loss2 = -A·clamp(r, 1 - eps_low, 1 + eps_high)``,
  ``pg_loss = max(pg_loss1, pg_loss2)``; for ``A < 0`` optionally ``min(pg_loss, -A·c)`` (dual
  clip, Ye et al. 2020, arXiv 1912.09729). Clipped tokens get zero gradient, as the paper's
  analysis assumes (§3).
- ``kl_cov`` — KL-Cov (Cui et al., arXiv 2505.22617, as in verl): the unclipped surrogate
  ``-A·r`` plus ``coef·|log p - log p_old|`` on the few tokens with the largest centred covariance
  ``(A - mean A)(log p - mean log p)``.
- ``entropic`` — EntroPIC (arXiv 2511.15248): ``ppo`` plus ``α · agg(-r·|A|)`` on the kept
  high-probability tokens; ``α`` is set each step by its controller
  (:class:`entropy_dynamics.control.Entropic`), and is 0 (plain ``ppo``) without one.

A new loss is one ``@register_policy_loss`` function; a new method built from it is one entry of
:data:`entropy_dynamics.methods.METHODS`.
"""

from __future__ import annotations

import torch

from entropy_dynamics.aggregation import masked_mean
from entropy_dynamics.filters import kl_cov_selection
from entropy_dynamics.losses.base import (
    PolicyLossConfig,
    PolicyLossInputs,
    PolicyLossOutput,
    register_policy_loss,
)
from entropy_dynamics.losses.tail import (
    LOG_RATIO_BOUND,
    assemble,
    valid_advantages,
    valid_log_ratio,
)
from entropy_dynamics.losses.token import (
    entropic_adjustment,
    kl_cov_token_loss,
    ppo_clip_token_loss,
)

__all__ = ["entropic_policy_loss", "kl_cov_policy_loss", "ppo_policy_loss"]


@register_policy_loss("ppo")
def ppo_policy_loss(config: PolicyLossConfig, inputs: PolicyLossInputs) -> PolicyLossOutput:
    """GRPO's PPO-clip surrogate (symmetric, clip-higher or dual-clip) with a token filter.

    At ratio 1 with token-mean aggregation, the descent direction on one position's logits is
    ``A (e_k - p) / n_tokens``: the GRPO logit update Theorem 3.3 analyses, with step
    ``η = 1 / n_tokens`` per unit learning rate.
    """
    log_ratio = valid_log_ratio(inputs).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    ratio = torch.exp(log_ratio)  # (B, T)
    pg_losses, clipped, dual_clipped = ppo_clip_token_loss(
        ratio,
        valid_advantages(inputs, ratio.dtype),
        eps_low=config.eps_low,
        eps_high=config.eps_high,
        dual_clip_c=config.dual_clip_c,
    )
    return assemble(config, inputs, pg_losses, clipped, dual_clipped, {})


@register_policy_loss("kl_cov")
def kl_cov_policy_loss(config: PolicyLossConfig, inputs: PolicyLossInputs) -> PolicyLossOutput:
    """KL-Cov (Cui et al., arXiv 2505.22617, as verl's ``kl_cov`` loss mode).

    Vanilla policy gradient ``-A·r`` (no ratio clipping) on every token, plus
    ``kl_cov_coef·|log p - log p_old|`` on the ``kl_cov_ratio`` fraction of valid tokens with the
    largest ``(A - mean A)(log p - mean log p)`` (:func:`filters.kl_cov_selection`, computed on
    ``stats.logprobs`` of this batch): it restrains exactly the updates that drive
    ``Cov(log p, A)``, hence entropy, down.
    """
    log_ratio = valid_log_ratio(inputs)  # (B, T)
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND))
    selected, metrics = kl_cov_selection(
        inputs.stats, inputs.advantages, inputs.response_mask, kl_cov_ratio=config.kl_cov_ratio
    )
    advantages = valid_advantages(inputs, ratio.dtype)
    pg_losses = kl_cov_token_loss(ratio, log_ratio, advantages, selected, coef=config.kl_cov_coef)
    never = torch.zeros_like(selected)
    return assemble(config, inputs, pg_losses, never, never, metrics)


@register_policy_loss("entropic")
def entropic_policy_loss(config: PolicyLossConfig, inputs: PolicyLossInputs) -> PolicyLossOutput:
    """EntroPIC (arXiv 2511.15248, its released ``entropic`` loss mode): ``ppo`` plus
    ``entropic_alpha · agg(-r·|A|)`` over the kept tokens with ``p > entropic_prob_threshold``
    (:func:`~entropy_dynamics.losses.token.entropic_adjustment`): positive high-probability tokens
    weigh more and negative ones less when ``α > 0``, which lowers the entropy (Theorem 3.2)."""
    out = ppo_policy_loss(config, inputs)
    ratio = torch.exp(valid_log_ratio(inputs).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND))
    term, high = entropic_adjustment(
        ratio, valid_advantages(inputs, ratio.dtype), inputs.logprobs, out.keep_mask,
        alpha=config.entropic_alpha, prob_threshold=config.entropic_prob_threshold,
        agg_mode=config.agg_mode, norm=config.loss_agg_norm,
    )  # fmt: skip
    out.metrics["entropic/frac_high_prob"] = masked_mean(high.float(), inputs.response_mask != 0)
    out.loss, out.pg_loss = out.loss + term, out.pg_loss + term
    return out
