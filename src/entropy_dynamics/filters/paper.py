"""The paper's token filters (arXiv 2602.03392): Clip_B and Clip_V (§5) and the sign intervention
of its validation (§4).

Clip_B and Clip_V drop the tokens whose entropy discriminator ``S_t`` is an outlier — against the
batch mean (Clip_B) or against its own per-position centre ``E_p[S]_t`` (Clip_V) — because, by
Theorems 3.2 and 3.3, those are the tokens whose update moves the entropy most. Each follows the
released code by default and the paper's two-sided band on request (``mu_plus``, ``mu_minus``).
The contract and the shared helpers are in :mod:`entropy_dynamics.filters.base`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropy_dynamics.filters.base import (
    SIGMA_FLOOR,
    cap,
    clip_fractions,
    descending_rank,
    fraction,
    masked_moments,
    prepare,
    register_filter,
    two_sided_band,
)
from entropy_dynamics.stats import TokenStats

__all__ = ["clip_b", "clip_v", "sign_intervention"]


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
    band = two_sided_band("clip_b", mu, mu_plus, mu_minus)
    valid, adv, dtype = prepare(stats, advantages, response_mask)
    s = stats.discriminator.detach().to(dtype)  # (B, T)
    s_mean, s_var = masked_moments(s, valid)
    sigma = s_var.sqrt()
    centred = s - s_mean  # (B, T)
    if band is not None:
        upper, lower = band
        keep = (centred >= -lower * sigma) & (centred <= upper * sigma)
    else:
        keep = (adv >= 0) | (centred >= -mu * sigma)
    keep = valid & (keep | (sigma < SIGMA_FLOOR))
    metrics = clip_fractions("clip_b", valid, keep, adv, dtype)
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
    band = two_sided_band("clip_v", mu, mu_plus, mu_minus)
    if not 0 <= max_frac <= 1:
        raise ValueError(f"clip_v: max_frac must lie in [0, 1], got {max_frac}")
    valid, adv, dtype = prepare(stats, advantages, response_mask)
    x = (stats.expected_discriminator.detach() - stats.discriminator.detach()).to(dtype)  # (B, T)
    _, x_var = masked_moments(x, valid)
    sigma = x_var.sqrt()
    if band is not None:
        upper, lower = band
        deviation = -x  # S - E_p[S]
        keep = (deviation >= -lower * sigma) & (deviation <= upper * sigma)
    else:
        candidate = valid & (adv <= 0) & (x > mu * sigma)
        negative = candidate & (adv < 0)
        rank = descending_rank(torch.where(negative, x, -torch.inf))  # (B, T)
        dropped = (candidate & ~negative) | (negative & (rank < cap(max_frac, valid)))
        keep = ~dropped
    keep = valid & (keep | (sigma < SIGMA_FLOOR))
    metrics = clip_fractions("clip_v", valid, keep, adv, dtype)
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
    valid, adv, dtype = prepare(stats, advantages, response_mask)
    s = stats.discriminator.detach().to(dtype)
    in_samples = valid & (torch.sign(adv) == signs[sample_sign])
    keep_mask = in_samples & (torch.sign(s) == s_signs[keep])
    return keep_mask, {
        "sign_intervention/frac_kept": fraction(keep_mask, valid, dtype),
        "sign_intervention/frac_sample_tokens": fraction(in_samples, valid, dtype),
    }
