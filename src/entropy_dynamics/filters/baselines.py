"""Baseline token filters that the paper's unified lens explains (§4.2): plain GRPO, the top-entropy
"forking" tokens, and Cui et al.'s covariance-based Clip-Cov and KL-Cov selections.

The contract and the shared helpers are in :mod:`entropy_dynamics.filters.base`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropy_dynamics.filters.base import (
    cap,
    descending_rank,
    fraction,
    masked_moments,
    masked_quantile,
    prepare,
    register_filter,
)
from entropy_dynamics.stats import TokenStats

__all__ = ["clip_cov", "high_entropy", "keep_all", "kl_cov", "kl_cov_selection"]


@register_filter("none")
@torch.no_grad()
def keep_all(
    stats: TokenStats, advantages: Tensor, response_mask: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Plain GRPO: keep every valid token; no metrics."""
    valid, _, _ = prepare(stats, advantages, response_mask)
    return valid, {}


@register_filter("high_entropy")
@torch.no_grad()
def high_entropy(
    stats: TokenStats, advantages: Tensor, response_mask: Tensor, *, rho: float = 0.2
) -> tuple[Tensor, dict[str, Tensor]]:
    """Train only the top-``rho`` "forking" tokens by entropy (arXiv 2506.01939, the 80/20 rule).

    Threshold ``τ`` = the ``(1 - rho)`` quantile (linear interpolation, ``torch.quantile``) of
    the entropies of all valid tokens of the batch; a valid token is kept iff ``H_t ≥ τ``. The
    same rule as TRL's ``top_entropy_quantile``; ``rho = 0.2`` is the paper's value.

    Returns:
        ``keep_mask (B, T)`` and metrics ``high_entropy/frac_kept`` (over valid tokens) and
        ``high_entropy/threshold`` = ``τ`` (NaN if no token is valid).
    """
    if not 0 < rho <= 1:
        raise ValueError(f"high_entropy: rho (the fraction kept) must lie in (0, 1], got {rho}")
    valid, _, dtype = prepare(stats, advantages, response_mask)
    h = stats.entropy.detach().to(dtype)
    threshold = masked_quantile(h, valid, 1.0 - rho)
    keep = valid & (h >= threshold)
    return keep, {
        "high_entropy/frac_kept": fraction(keep, valid, dtype),
        "high_entropy/threshold": threshold,
    }


def _token_covariance(
    stats: TokenStats, advantages: Tensor, valid: Tensor
) -> tuple[Tensor, Tensor]:
    """Cui et al. (arXiv 2505.22617) per-token centred covariance
    ``cov_t = (A_t - mean A)(log p_t - mean log p)``, means over valid tokens, ``log p`` detached.

    Returns ``cov (B, T)`` (meaningless on padding) and its mean over valid tokens (0-d), the
    batch covariance ``Cov(A, log p)`` whose sign drives the entropy change in their analysis."""
    a = advantages
    logp = stats.logprobs.detach().to(a.dtype)
    a_mean, _ = masked_moments(a, valid)
    logp_mean, _ = masked_moments(logp, valid)
    cov = (a - a_mean) * (logp - logp_mean)  # (B, T)
    cov_mean, _ = masked_moments(cov, valid)
    return cov, cov_mean


@register_filter("clip_cov")
@torch.no_grad()
def clip_cov(
    stats: TokenStats,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    clip_ratio: float = 2e-4,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    exclude_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clip-Cov token selection (arXiv 2505.22617; defaults as verl's ``clip_cov`` loss).

    Candidates: valid tokens with ``clip_cov_lb < cov_t < clip_cov_ub`` (strict, as in verl),
    ``cov_t`` from :func:`_token_covariance` with ``stats.logprobs``, and not in
    ``exclude_mask``. A uniformly random subset of ``min(K, #candidates)`` candidates is
    dropped, ``K = max(int(clip_ratio · n_valid), 1)``.

    Args:
        exclude_mask: optional ``(B, T)`` bool, tokens that may not be candidates. verl excludes
            tokens whose PPO ratio is already clipped; a loss that knows the ratio passes them.
        generator: random source for reproducible selection (CPU or the tensors' device).

    Returns:
        ``keep_mask (B, T)`` and metrics ``clip_cov/frac_clipped``, ``clip_cov/frac_candidates``
        (over valid tokens) and ``clip_cov/cov_mean`` (``Cov(A, log p)`` over valid tokens).
    """
    if not 0 < clip_ratio <= 1:
        raise ValueError(f"clip_cov: clip_ratio must be > 0 and <= 1, got {clip_ratio}")
    if not clip_cov_lb < clip_cov_ub:
        raise ValueError(
            f"clip_cov: need clip_cov_lb < clip_cov_ub, got {clip_cov_lb} and {clip_cov_ub}"
        )
    valid, adv, dtype = prepare(stats, advantages, response_mask)
    if exclude_mask is not None and exclude_mask.shape != response_mask.shape:
        raise ValueError(
            f"clip_cov: exclude_mask has shape {tuple(exclude_mask.shape)} but response_mask "
            f"has shape {tuple(response_mask.shape)}"
        )
    cov, cov_mean = _token_covariance(stats, adv, valid)
    candidate = valid & (cov > clip_cov_lb) & (cov < clip_cov_ub)
    if exclude_mask is not None:
        candidate = candidate & (exclude_mask == 0)
    # a random permutation of the candidates: rank them by i.i.d. uniform keys
    device = generator.device if generator is not None else cov.device
    keys = torch.rand(cov.shape, generator=generator, device=device, dtype=torch.float64)
    keys = torch.where(candidate, keys.to(cov.device), -1.0)  # non-candidates rank last
    dropped = candidate & (descending_rank(keys) < cap(clip_ratio, valid))
    keep = valid & ~dropped
    return keep, {
        "clip_cov/frac_clipped": fraction(dropped, valid, dtype),
        "clip_cov/frac_candidates": fraction(candidate, valid, dtype),
        "clip_cov/cov_mean": cov_mean,
    }


@torch.no_grad()
def kl_cov_selection(
    stats: TokenStats,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    kl_cov_ratio: float = 2e-4,
) -> tuple[Tensor, dict[str, Tensor]]:
    """KL-Cov token selection (arXiv 2505.22617; defaults as verl's ``kl_cov`` loss).

    Selects the ``K = max(int(kl_cov_ratio · n_valid), 1)`` valid tokens with the largest
    ``cov_t`` (see :func:`_token_covariance`; ties: lower flat index first); none if no token is
    valid. The KL-Cov loss adds ``|log p - log p_old|`` (times its coefficient) to the selected
    tokens' loss; nothing is dropped.

    Returns:
        ``selected_mask (B, T)`` bool (a subset of ``response_mask``) and metrics
        ``kl_cov/frac_selected`` (over valid tokens) and ``kl_cov/cov_mean``.
    """
    if not 0 < kl_cov_ratio <= 1:
        raise ValueError(f"kl_cov: kl_cov_ratio must be > 0 and <= 1, got {kl_cov_ratio}")
    valid, adv, dtype = prepare(stats, advantages, response_mask)
    cov, cov_mean = _token_covariance(stats, adv, valid)
    rank = descending_rank(torch.where(valid, cov, -torch.inf))
    selected = valid & (rank < cap(kl_cov_ratio, valid))
    return selected, {
        "kl_cov/frac_selected": fraction(selected, valid, dtype),
        "kl_cov/cov_mean": cov_mean,
    }


@register_filter("kl_cov")
@torch.no_grad()
def kl_cov(
    stats: TokenStats,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    kl_cov_ratio: float = 2e-4,
) -> tuple[Tensor, dict[str, Tensor]]:
    """KL-Cov as a filter: keeps every valid token (KL-Cov penalises, it does not drop) and
    returns :func:`kl_cov_selection`'s metrics. The loss gets the penalised tokens from
    :func:`kl_cov_selection` with the same arguments."""
    _, metrics = kl_cov_selection(stats, advantages, response_mask, kl_cov_ratio=kl_cov_ratio)
    return response_mask != 0, metrics
