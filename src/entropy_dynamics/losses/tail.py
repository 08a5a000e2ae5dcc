"""The tail every registered policy loss shares: the token filter, the aggregation, the entropy
bonus and the ``actor/`` metrics (:func:`assemble`), and the per-token inputs it starts from.

- a token filter by name (Clip_B, Clip_V, ...; :mod:`entropy_dynamics.filters`) zeroes the loss
  weight of dropped tokens, so under token-mean they also leave the denominator (paper §5);
- aggregation as verl's ``agg_loss`` (:func:`~entropy_dynamics.aggregation.aggregate`; default
  token-mean, DAPO);
- an optional entropy bonus ``loss -= entropy_coef · agg(H)`` over all valid tokens;
- no KL-to-reference term (the trainer adds it, :mod:`entropy_dynamics.training.reference`), no
  ``.item()``: metrics are 0-d tensors under ``actor/`` plus the filter's own namespace.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropy_dynamics.aggregation import aggregate, masked_mean
from entropy_dynamics.filters import filter_options, get_filter
from entropy_dynamics.losses.base import PolicyLossConfig, PolicyLossInputs, PolicyLossOutput
from entropy_dynamics.stats import TokenStats

__all__ = ["LOG_RATIO_BOUND", "assemble", "select_tokens", "valid_advantages", "valid_log_ratio"]

LOG_RATIO_BOUND = 20.0
"""``exp(±20)`` keeps the ratio finite in float32 (verl clamps the same way)."""


def select_tokens(
    config: PolicyLossConfig,
    stats: TokenStats,
    advantages: Tensor,
    response_mask: Tensor,
    ratio_clipped: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run ``config.filter`` with ``config.filter_options``: ``(keep_mask (B, T) bool, metrics)``.

    Filters that take an ``exclude_mask`` (Clip-Cov) receive ``ratio_clipped`` ``(B, T)``, the
    tokens whose PPO ratio is already clipped, as verl does (unless the options set one).
    """
    options = dict(config.filter_options)
    if ratio_clipped is not None and "exclude_mask" in filter_options(config.filter):
        options.setdefault("exclude_mask", ratio_clipped)
    return get_filter(config.filter)(stats, advantages, response_mask, **options)


def valid_log_ratio(inputs: PolicyLossInputs) -> Tensor:
    """``log p - log p_old`` ``(B, T)``, 0 on padding. ``torch.where`` rather than a product, so
    whatever padding holds (NaN, ``-inf - -inf``) reaches no loss, metric or gradient."""
    return torch.where(inputs.response_mask != 0, inputs.logprobs - inputs.old_logprobs, 0.0)


def valid_advantages(inputs: PolicyLossInputs, dtype: torch.dtype) -> Tensor:
    """``A`` ``(B, T)`` in ``dtype``, 0 on padding (as :func:`valid_log_ratio`)."""
    return torch.where(inputs.response_mask != 0, inputs.advantages, 0.0).to(dtype)


def assemble(
    config: PolicyLossConfig,
    inputs: PolicyLossInputs,
    pg_losses: Tensor,
    clipped: Tensor,
    dual_clipped: Tensor,
    metrics: dict[str, Tensor],
) -> PolicyLossOutput:
    """Filter, aggregate, add the entropy bonus and the ``actor/`` metrics (shared tail)."""
    valid = inputs.response_mask != 0  # (B, T)
    clipped, dual_clipped = clipped & valid, dual_clipped & valid
    if inputs.keep_mask is None:
        keep, filter_metrics = select_tokens(
            config, inputs.stats, inputs.advantages, inputs.response_mask, clipped
        )
        metrics = {**metrics, **filter_metrics}
    else:
        keep = inputs.keep_mask.bool()
    keep = keep & valid  # dropped tokens: weight 0, out of the token-mean denominator

    pg_loss = aggregate(pg_losses, keep, config.agg_mode, config.loss_agg_norm)
    # The bonus covers every valid token (filters select policy-gradient tokens only), as verl.
    entropy = aggregate(inputs.stats.entropy, valid, config.agg_mode, config.loss_agg_norm)
    loss = pg_loss - config.entropy_coef * entropy if config.entropy_coef != 0 else pg_loss
    with torch.no_grad():  # diagnostics, as verl's actor metrics
        metrics.update(
            {
                "actor/pg_loss": pg_loss.detach(),
                "actor/pg_clipfrac": masked_mean(clipped.float(), valid),
                "actor/pg_clipfrac_lower": masked_mean(dual_clipped.float(), valid),
                "actor/ppo_kl": masked_mean(-valid_log_ratio(inputs).detach(), valid),
                "actor/entropy": entropy.detach(),
                "actor/frac_kept": masked_mean(keep.float(), valid),
            }
        )
    return PolicyLossOutput(loss, metrics, keep, pg_loss, entropy)
