"""The PPO-clip policy loss straight from hidden states, its gradient formed during the forward.

Same loss as the registered ``ppo`` loss (:mod:`entropy_dynamics.losses`) on the statistics of
``softmax((hidden @ weightᵀ + bias) / T)`` — PPO-clip with clip-higher and dual clip, a keep-mask
from any registered filter, the four aggregation modes, an optional entropy bonus — computed by
:func:`entropy_dynamics.kernels.fused_loss.fused_linear_loss` in one pass of three matmuls that
never holds ``[N, V]`` logits.

Why it can be fused: at training time everything the loss needs besides the current policy's
``log p_k`` and ``H`` is known before the forward — old log-probs, advantages, the keep-mask
(decided from the rollout policy's statistics, as the trainer and the reference code do), the
clip range and the aggregation. Every aggregation mode is linear in the per-token losses,
``agg(l, mask) = Σ_t w_t l_t``, with weights ``w`` that depend on the mask only; they are taken as
the gradient of :func:`~entropy_dynamics.aggregation.aggregate` itself, so the fused loss is
``Σ_t w_t ppo_clip_token_loss(...)_t - entropy_coef · Σ_t w'_t H_t``, summed block by block, with
the per-token loss being :func:`~entropy_dynamics.losses.ppo_clip_token_loss` (no second copy).

Not fusable: ``kl_cov`` (its selection ranks the *current* log-probs of the whole batch) and a
filter run inside the loss on the current statistics; pass ``keep_mask`` computed beforehand with
:func:`~entropy_dynamics.losses.select_tokens`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropy_dynamics.aggregation import aggregate
from entropy_dynamics.kernels import Chunking, LMHead, fused_linear_loss
from entropy_dynamics.kernels.lm_head import compute_dtype
from entropy_dynamics.losses.base import (
    PolicyLossConfig,
    PolicyLossInputs,
    PolicyLossOutput,
    get_policy_loss,
)
from entropy_dynamics.losses.tail import LOG_RATIO_BOUND
from entropy_dynamics.losses.token import ppo_clip_token_loss
from entropy_dynamics.stats import TokenStats

__all__ = ["aggregation_weights", "fused_policy_loss"]


def aggregation_weights(mask: Tensor, agg_mode: str, norm: float | None, dtype) -> Tensor:
    """``w`` ``(B, T)`` with ``aggregate(l, mask, agg_mode, norm) = Σ_t w_t l_t`` for every ``l``
    (finite on the mask): the gradient of the aggregation, which is linear in ``l``."""
    with torch.enable_grad():
        probe = torch.zeros(mask.shape, dtype=dtype, device=mask.device, requires_grad=True)
        (weights,) = torch.autograd.grad(aggregate(probe, mask, agg_mode, norm), probe)
    return weights


def _weighted_sum(values: Tensor, weights: Tensor) -> Tensor:
    """``Σ w·v``, exactly 0 where ``w = 0`` (padding may hold anything)."""
    return torch.where(weights != 0, values * weights, 0.0).sum()


def fused_policy_loss(
    config: PolicyLossConfig,
    hidden: Tensor,
    head: LMHead,
    tokens: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    keep_mask: Tensor,
    *,
    chunking: Chunking | None = None,
    pg_scale: float | Tensor = 1.0,
    entropy_scale: float | Tensor = 1.0,
    expected_discriminator: bool = False,
) -> tuple[PolicyLossOutput, TokenStats]:
    """The ``ppo`` policy loss of ``config`` on the positions of ``hidden``, fused with its lm_head.

    Args:
        config: the loss options (``config.loss`` must be ``"ppo"``).
        hidden: ``(B, T, d)`` final hidden states predicting each response token.
        head: the lm_head (:class:`~entropy_dynamics.kernels.LMHead`: weight ``(V, d)`` of
            ``hidden``'s dtype and device, optional bias ``(V,)``, sampling temperature ``T``,
            valid vocabulary).
        tokens: ``(B, T)`` sampled ids in ``[0, valid_vocab)`` (padding too).
        old_logprobs, advantages: ``(B, T)`` of the rollout policy (constants).
        response_mask: ``(B, T)`` bool or 0/1, the valid response tokens.
        keep_mask: ``(B, T)`` bool, the filter's choice (:func:`losses.select_tokens` on the
            rollout policy's statistics); all-true for no filter.
        chunking: ``row_chunk`` positions per block (``None``: about 128 MiB of logits, 1 GiB on
            CUDA) and ``backend``: ``"auto"`` (Triton block kernels on CUDA), ``"torch"``,
            ``"triton"`` or ``"triton-matmul"`` (opt-in;
            :func:`~entropy_dynamics.kernels.fused_linear_loss`). ``None``: every default.
        pg_scale, entropy_scale: constant factors of the two terms, known before the forward
            (the trainer's micro-batch shares, :func:`losses.aggregation_share`).
        expected_discriminator: also compute ``E_p[S]`` of the current policy (else 0).

    Returns:
        ``(output, stats)``: ``output.loss = pg_scale·pg_loss - entropy_coef·entropy_scale·H̄``
        (0-d, its gradient to ``hidden``, ``weight``, ``bias`` already formed), its metrics,
        keep-mask and the detached ``pg_loss`` and ``entropy`` terms, exactly as the registered
        loss gives them; ``stats``: detached ``TokenStats`` of the current policy on the valid
        positions (0 on padding, which is never computed).
    """
    if config.loss != "ppo":
        raise ValueError(
            f"the fused policy loss computes loss 'ppo' only, got {config.loss!r}: kl_cov ranks "
            "the current log-probs of the whole batch; use losses.compute_policy_loss"
        )
    shape = response_mask.shape
    if response_mask.dim() != 2 or hidden.shape[:-1] != shape:
        raise ValueError(
            f"hidden must be (B, T, d) over response_mask's (B, T) = {tuple(shape)}, "
            f"got hidden {tuple(hidden.shape)}"
        )
    for name, value in (("tokens", tokens), ("old_logprobs", old_logprobs),
                        ("advantages", advantages), ("keep_mask", keep_mask)):  # fmt: skip
        if value is None or value.shape != shape:
            got = None if value is None else tuple(value.shape)
            raise ValueError(f"{name} must have response_mask's shape {tuple(shape)}, got {got}")
    dtype = compute_dtype(hidden.dtype)
    valid = response_mask != 0
    keep = keep_mask.bool() & valid
    w_pg = aggregation_weights(keep, config.agg_mode, config.loss_agg_norm, dtype).reshape(-1)
    coef = config.entropy_coef
    w_h = aggregation_weights(valid, config.agg_mode, config.loss_agg_norm, dtype).reshape(-1)
    flat_valid = valid.reshape(-1)
    old = old_logprobs.reshape(-1).to(dtype)
    adv = torch.where(valid, advantages, 0.0).reshape(-1).to(dtype)

    def block_loss(rows: slice, log_p: Tensor, entropy: Tensor) -> Tensor:
        """``Σ_t w_t ℓ_t`` over the block: the registered loss's per-token terms, weighted."""
        log_ratio = torch.where(flat_valid[rows], log_p - old[rows], 0.0)
        ratio = log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND).exp()  # (r,)
        pg_losses, _, _ = ppo_clip_token_loss(
            ratio,
            adv[rows],
            eps_low=config.eps_low,
            eps_high=config.eps_high,
            dual_clip_c=config.dual_clip_c,
        )
        loss = pg_scale * _weighted_sum(pg_losses, w_pg[rows])
        if coef != 0:
            loss = loss - coef * entropy_scale * _weighted_sum(entropy, w_h[rows])
        return loss

    loss, log_p_k, entropy, s_k, e_s = fused_linear_loss(
        hidden.reshape(-1, hidden.shape[-1]),  # (B·T, d)
        head,
        tokens.reshape(-1),  # (B·T,)
        block_loss,
        chunking=chunking,
        expected_discriminator=expected_discriminator,
        positions=flat_valid,  # padding costs nothing
    )
    stats = TokenStats(*(x.reshape(shape) for x in (log_p_k, entropy, s_k, e_s)))
    with torch.no_grad():  # values and metrics as the registered loss gives them
        inputs = PolicyLossInputs(
            stats.logprobs, old_logprobs, advantages, response_mask, stats, keep
        )
        reference = get_policy_loss("ppo")(config, inputs)
    output = PolicyLossOutput(loss, reference.metrics, reference.keep_mask, reference.pg_loss,
                              reference.entropy)  # fmt: skip
    return output, stats
