"""Token masks for entropy control: each filter decides which response tokens keep their gradient.

Contract shared by every filter (and relied on by :mod:`entropy_dynamics.losses` and the engine
plug-ins):

    filter_fn(stats, advantages, response_mask, **options) -> (keep_mask, metrics)

- ``stats``: :class:`~entropy_dynamics.stats.TokenStats` with fields of shape ``(B, T)``
  (detached use only; filters never backpropagate).
- ``advantages``: ``(B, T)`` token-level advantages (sequence advantages broadcast over tokens).
- ``response_mask``: ``(B, T)`` bool or 0/1, true on valid response tokens; padding is never
  counted in any statistic and is never kept.
- ``keep_mask``: ``(B, T)`` bool, a subset of ``response_mask``. Dropping a token means zeroing its
  loss weight, so under token-mean aggregation it also leaves the denominator (paper §5).
- ``metrics``: dict of 0-d tensors, keys namespaced by the filter name (``clip_b/frac_clipped``).

Filters are registered by name with :func:`register_filter` and looked up with :func:`get_filter`.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from entropy_dynamics._registry import Registry
from entropy_dynamics.stats import TokenStats

__all__ = [
    "FilterFn",
    "available_filters",
    "clip_b",
    "clip_cov",
    "clip_v",
    "get_filter",
    "high_entropy",
    "keep_all",
    "kl_cov",
    "kl_cov_selection",
    "register_filter",
    "sign_intervention",
]


class FilterFn(Protocol):
    def __call__(
        self, stats: TokenStats, advantages: Tensor, response_mask: Tensor, **options: object
    ) -> tuple[Tensor, dict[str, Tensor]]: ...


_FILTERS: Registry[FilterFn] = Registry("filter")
register_filter = _FILTERS.register
"""Decorator registering a filter under a name: ``@register_filter("clip_b")``."""
get_filter = _FILTERS.get
"""The filter registered under a name; the error lists the registered names."""
available_filters = _FILTERS.names


# ---------------------------------------------------------------------------------------------
# Shared helpers. Statistics use valid tokens only: padded entries are replaced with zeros by
# ``torch.where`` before any reduction, so even NaN/inf padding cannot leak into a statistic.
# Nothing here calls ``.item()``: every decision is a tensor op, so filters never sync a GPU.
# ---------------------------------------------------------------------------------------------

_SIGMA_FLOOR = 1e-12  # below this std the reference code keeps every token


def _check_inputs(stats: TokenStats, advantages: Tensor, response_mask: Tensor) -> None:
    if not isinstance(stats, TokenStats):
        raise ValueError(f"stats must be a TokenStats, got {type(stats).__name__}")
    shape = tuple(response_mask.shape)
    tensors = {
        "advantages": advantages,
        "stats.logprobs": stats.logprobs,
        "stats.entropy": stats.entropy,
        "stats.discriminator": stats.discriminator,
        "stats.expected_discriminator": stats.expected_discriminator,
    }
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but response_mask has shape {shape}; "
                "filters need token-level tensors of one shape (B, T) (broadcast sequence "
                "advantages with advantages.broadcast_to_tokens)"
            )


def _masked_moments(values: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population variance (denominator n) of ``values`` over ``valid``; 0-d each."""
    n = valid.sum().clamp_min(1).to(values.dtype)
    mean = torch.where(valid, values, 0.0).sum() / n
    var = torch.where(valid, (values - mean) ** 2, 0.0).sum() / n
    return mean, var


def _cap(ratio: float, valid: Tensor) -> Tensor:
    """``max(int(ratio · n_valid), 1)`` as a 0-d tensor, in float64 like the reference's Python
    ``int(ratio * n)`` (float32 could round 700.0 down to 699)."""
    n = valid.sum().to(torch.float64)
    return torch.floor(ratio * n).clamp_min(1.0)


def _descending_rank(scores: Tensor) -> Tensor:
    """Rank of each entry of ``scores`` in a stable descending sort of the flattened tensor:
    0 for the largest; ties go to the lower flat index. Same shape as ``scores``."""
    flat = scores.reshape(-1)
    order = torch.argsort(flat, descending=True, stable=True)  # (N,)
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(flat.numel(), device=flat.device))
    return rank.view(scores.shape)


def _fraction(part: Tensor, whole: Tensor, dtype: torch.dtype) -> Tensor:
    return part.sum().to(dtype) / whole.sum().clamp_min(1).to(dtype)


def _clip_fractions(
    prefix: str, valid: Tensor, keep: Tensor, advantages: Tensor, dtype: torch.dtype
) -> dict[str, Tensor]:
    """The reference code's metrics: dropped fraction of all valid tokens, of the valid tokens
    with ``A > 0`` and of those with ``A < 0`` (zero-advantage drops count only in the total)."""
    dropped = valid & ~keep
    pos, neg = valid & (advantages > 0), valid & (advantages < 0)
    return {
        f"{prefix}/frac_clipped": _fraction(dropped, valid, dtype),
        f"{prefix}/frac_clipped_pos": _fraction(dropped & pos, pos, dtype),
        f"{prefix}/frac_clipped_neg": _fraction(dropped & neg, neg, dtype),
    }


def _band(
    name: str, mu: float, mu_plus: float | None, mu_minus: float | None
) -> tuple[float, float] | None:
    """Validate the thresholds; ``(mu_plus, mu_minus)`` when the two-sided band (paper text) is
    requested, ``None`` for the reference one-sided rule."""
    if not mu >= 0:
        raise ValueError(f"{name}: mu must be >= 0, got {mu}")
    if mu_plus is None and mu_minus is None:
        return None
    if mu_plus is None or mu_minus is None:
        raise ValueError(
            f"{name}: give mu_plus and mu_minus together for the two-sided band (use "
            f"float('inf') for an open side), or neither for the reference one-sided rule; "
            f"got mu_plus={mu_plus}, mu_minus={mu_minus}"
        )
    if not (mu_plus >= 0 and mu_minus >= 0):
        raise ValueError(f"{name}: mu_plus and mu_minus must be >= 0, got {mu_plus}, {mu_minus}")
    return mu_plus, mu_minus


def _prepare(
    stats: TokenStats, advantages: Tensor, response_mask: Tensor
) -> tuple[Tensor, Tensor, torch.dtype]:
    """Validate; return ``(valid (B, T) bool, advantages in the compute dtype, dtype)``."""
    _check_inputs(stats, advantages, response_mask)
    dtype = torch.float64 if stats.discriminator.dtype == torch.float64 else torch.float32
    return response_mask != 0, advantages.detach().to(dtype), dtype


# ---------------------------------------------------------------------------------------------
# The paper's methods (arXiv 2602.03392, §5)
# ---------------------------------------------------------------------------------------------


@register_filter("clip_b")
@torch.no_grad()
def clip_b(
    stats: TokenStats,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    mu: float = 2.5,
    mu_plus: float | None = None,
    mu_minus: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clip_B: drop tokens whose discriminator is far from the batch mean.

    ``S_t = stats.discriminator``; over all valid tokens of the batch, mean ``m`` and population
    std ``σ``. If ``σ < 1e-12`` every valid token is kept.

    - Default (released code; ``mu_plus = mu_minus = None``): tokens with ``A ≥ 0`` are kept; a
      token with ``A < 0`` is dropped iff ``S_t - m < -mu·σ`` (penalising a very unlikely token
      would lower the entropy, Theorem 3.2). ``mu = 2.5`` as in the released run.
    - Two-sided band (paper text; both ``mu_plus`` and ``mu_minus`` given, ``mu`` unused): a
      valid token is kept iff ``-mu_minus·σ ≤ S_t - m ≤ mu_plus·σ``, **whatever the sign of its
      advantage** — the band applies to all tokens, as the paper's text states.

    Args:
        stats: :class:`TokenStats` with fields ``(B, T)``; only ``discriminator`` is read.
        advantages: ``(B, T)`` token-level advantages.
        response_mask: ``(B, T)`` bool or 0/1, true on valid response tokens.

    Returns:
        ``keep_mask (B, T)`` bool and metrics ``clip_b/frac_clipped`` (over valid tokens),
        ``clip_b/frac_clipped_pos`` / ``_neg`` (over valid tokens with ``A > 0`` / ``A < 0``, as in
        the reference code), ``clip_b/s_mean`` = ``m`` and ``clip_b/s_var`` = ``σ²``.
    """
    band = _band("clip_b", mu, mu_plus, mu_minus)
    valid, adv, dtype = _prepare(stats, advantages, response_mask)
    s = stats.discriminator.detach().to(dtype)  # (B, T)
    s_mean, s_var = _masked_moments(s, valid)
    sigma = s_var.sqrt()
    centred = s - s_mean  # (B, T)
    if band is not None:
        upper, lower = band
        keep = (centred >= -lower * sigma) & (centred <= upper * sigma)
    else:
        keep = (adv >= 0) | (centred >= -mu * sigma)
    keep = valid & (keep | (sigma < _SIGMA_FLOOR))
    metrics = _clip_fractions("clip_b", valid, keep, adv, dtype)
    metrics["clip_b/s_mean"] = s_mean
    metrics["clip_b/s_var"] = s_var
    return keep, metrics


@register_filter("clip_v")
@torch.no_grad()
def clip_v(
    stats: TokenStats,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    mu: float = 8.5,
    max_frac: float = 1e-4,
    mu_plus: float | None = None,
    mu_minus: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clip_V: drop tokens whose discriminator is far from its per-position centre ``E_p[S]``.

    ``x_t = E_p[S]_t - S_t`` (``stats.expected_discriminator - stats.discriminator``; Theorem 3.3's
    deviation with the sign flipped); ``σ`` = population std of ``x`` over valid tokens. The
    threshold is *not* centred on the mean of ``x`` (Corollary 3.4: that mean is ≈ 0 on-policy).
    If ``σ < 1e-12`` every valid token is kept.

    - Default (released code; ``mu_plus = mu_minus = None``): tokens with ``A > 0`` are kept.
      Candidates are valid tokens with ``A ≤ 0`` and ``x_t > mu·σ``. Zero-advantage candidates
      are always dropped (they carry no policy gradient; dropping them only removes them from
      the token-mean denominator). Negative-advantage candidates are capped: at most
      ``K = max(floor(max_frac·n_valid), 1)`` of them are dropped, those with the largest
      ``x_t`` (ties: lower flat index first). This is exactly the released code's rule; note that
      zero-advantage candidates do not count toward ``K``. ``mu = 8.5`` is the released run's
      value (the class default there is 2.0).
    - Two-sided band (paper text; both ``mu_plus`` and ``mu_minus`` given, ``mu`` and
      ``max_frac`` unused): a valid token is kept iff
      ``-mu_minus·σ ≤ S_t - E_p[S]_t ≤ mu_plus·σ``, whatever its advantage, with no cap.

    Args and shapes as in :func:`clip_b`; reads ``discriminator`` and ``expected_discriminator``.

    Returns:
        ``keep_mask (B, T)`` bool and metrics ``clip_v/frac_clipped``, ``clip_v/frac_clipped_pos``,
        ``clip_v/frac_clipped_neg`` (definitions as in :func:`clip_b`) and ``clip_v/x_std`` = σ.
    """
    band = _band("clip_v", mu, mu_plus, mu_minus)
    if not 0 <= max_frac <= 1:
        raise ValueError(f"clip_v: max_frac must lie in [0, 1], got {max_frac}")
    valid, adv, dtype = _prepare(stats, advantages, response_mask)
    x = (stats.expected_discriminator.detach() - stats.discriminator.detach()).to(dtype)  # (B, T)
    _, x_var = _masked_moments(x, valid)
    sigma = x_var.sqrt()
    if band is not None:
        upper, lower = band
        deviation = -x  # S - E_p[S]
        keep = (deviation >= -lower * sigma) & (deviation <= upper * sigma)
    else:
        candidate = valid & (adv <= 0) & (x > mu * sigma)
        negative = candidate & (adv < 0)
        rank = _descending_rank(torch.where(negative, x, -torch.inf))  # (B, T)
        dropped = (candidate & ~negative) | (negative & (rank < _cap(max_frac, valid)))
        keep = ~dropped
    keep = valid & (keep | (sigma < _SIGMA_FLOOR))
    metrics = _clip_fractions("clip_v", valid, keep, adv, dtype)
    metrics["clip_v/x_std"] = sigma
    return keep, metrics


@register_filter("sign_intervention")
@torch.no_grad()
def sign_intervention(
    stats: TokenStats,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    sample_sign: str = "positive",
    keep: str = "s_positive",
) -> tuple[Tensor, dict[str, Tensor]]:
    """The paper's §4 validation: train only one sign of ``S_k`` on samples of one advantage sign.

    A valid token is kept iff its advantage has the sign ``sample_sign`` (``"positive"``: ``A > 0``,
    ``"negative"``: ``A < 0``) and its discriminator the sign ``keep`` (``"s_positive"``:
    ``S_k > 0``, ``"s_negative"``: ``S_k < 0``). Every token of the other samples (including
    ``A = 0``) is dropped. Theorem 3.2 predicts: positive samples + ``S_k > 0`` → entropy falls;
    positive + ``S_k < 0`` → rises; negative + ``S_k > 0`` → rises; negative + ``S_k < 0`` → falls.
    The sign is read per token, which is the sample's sign for broadcast outcome advantages.

    Returns:
        ``keep_mask (B, T)`` and metrics ``sign_intervention/frac_kept`` (over valid tokens) and
        ``sign_intervention/frac_sample_tokens`` (valid tokens in samples of the chosen sign).
    """
    signs = {"positive": 1, "negative": -1}
    s_signs = {"s_positive": 1, "s_negative": -1}
    if sample_sign not in signs:
        raise ValueError(
            f"sign_intervention: sample_sign must be 'positive' or 'negative', got {sample_sign!r}"
        )
    if keep not in s_signs:
        raise ValueError(
            f"sign_intervention: keep must be 's_positive' or 's_negative', got {keep!r}"
        )
    valid, adv, dtype = _prepare(stats, advantages, response_mask)
    s = stats.discriminator.detach().to(dtype)
    in_samples = valid & (torch.sign(adv) == signs[sample_sign])
    keep_mask = in_samples & (torch.sign(s) == s_signs[keep])
    return keep_mask, {
        "sign_intervention/frac_kept": _fraction(keep_mask, valid, dtype),
        "sign_intervention/frac_sample_tokens": _fraction(in_samples, valid, dtype),
    }


# ---------------------------------------------------------------------------------------------
# Baselines the paper's unified lens explains (§4.2)
# ---------------------------------------------------------------------------------------------


@register_filter("none")
@torch.no_grad()
def keep_all(
    stats: TokenStats, advantages: Tensor, response_mask: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Plain GRPO: keep every valid token; no metrics."""
    valid, _, _ = _prepare(stats, advantages, response_mask)
    return valid, {}


def _masked_quantile(values: Tensor, valid: Tensor, q: float) -> Tensor:
    """``torch.quantile(values[valid], q)`` (linear interpolation) without boolean indexing, so
    without a host sync and without ``torch.quantile``'s 2^24-element limit; NaN if nothing is
    valid (a zero-size batch included). 0-d tensor."""
    if values.numel() == 0:
        return values.new_tensor(torch.nan)
    flat = torch.where(valid, values, torch.inf).reshape(-1)
    ordered = torch.sort(flat).values  # valid values first, ascending
    n = valid.sum()
    position = q * (n.to(torch.float64) - 1).clamp_min(0)
    lower = position.floor().long()
    upper = torch.minimum(lower + 1, (n - 1).clamp_min(0))
    weight = (position - lower).to(values.dtype)
    lo, hi = ordered[lower], ordered[upper]  # both +inf if nothing is valid
    return torch.where(n > 0, lo + weight * (hi - lo), torch.nan)


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
    valid, _, dtype = _prepare(stats, advantages, response_mask)
    h = stats.entropy.detach().to(dtype)
    threshold = _masked_quantile(h, valid, 1.0 - rho)
    keep = valid & (h >= threshold)
    return keep, {
        "high_entropy/frac_kept": _fraction(keep, valid, dtype),
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
    a_mean, _ = _masked_moments(a, valid)
    logp_mean, _ = _masked_moments(logp, valid)
    cov = (a - a_mean) * (logp - logp_mean)  # (B, T)
    cov_mean, _ = _masked_moments(cov, valid)
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
    valid, adv, dtype = _prepare(stats, advantages, response_mask)
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
    dropped = candidate & (_descending_rank(keys) < _cap(clip_ratio, valid))
    keep = valid & ~dropped
    return keep, {
        "clip_cov/frac_clipped": _fraction(dropped, valid, dtype),
        "clip_cov/frac_candidates": _fraction(candidate, valid, dtype),
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
    valid, adv, dtype = _prepare(stats, advantages, response_mask)
    cov, cov_mean = _token_covariance(stats, adv, valid)
    rank = _descending_rank(torch.where(valid, cov, -torch.inf))
    selected = valid & (rank < _cap(kl_cov_ratio, valid))
    return selected, {
        "kl_cov/frac_selected": _fraction(selected, valid, dtype),
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
