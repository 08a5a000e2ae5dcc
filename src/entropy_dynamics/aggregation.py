"""Loss aggregation over response tokens (verl's ``agg_loss`` semantics) and micro-batch shares."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AGG_MODES", "aggregate", "aggregation_share", "masked_mean"]

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def aggregate(loss_mat: Tensor, mask: Tensor, agg_mode: str, norm: float | None = None) -> Tensor:
    """Reduce a per-token loss to a scalar over ``mask``, with verl's ``agg_loss`` semantics.

    - ``token-mean``: ``Σ_{b,t} m·l / Σ_{b,t} m`` — every token counts once;
    - ``seq-mean-token-mean``: mean over sequences of each sequence's token mean;
    - ``seq-mean-token-sum``: mean over sequences of each sequence's token sum;
    - ``seq-mean-token-sum-norm``: ``Σ_{b,t} m·l / norm``, ``norm`` defaulting to ``T``.

    Sequence means run over the sequences with at least one token in ``mask`` (as current verl);
    an empty mask gives 0. Entries outside ``mask`` never count, even NaN or inf ones (padding),
    and get gradient 0.

    Args:
        loss_mat: ``(B, T)`` per-token values.
        mask: ``(B, T)`` bool or 0/1 weights.
        agg_mode: one of :data:`AGG_MODES`.
        norm: constant divisor ``> 0`` of ``seq-mean-token-sum-norm`` (``None``: ``max(T, 1)``;
            ignored by the other modes).

    Returns:
        0-d tensor.
    """
    if norm is not None and not norm > 0:
        raise ValueError(f"norm must be > 0 (a constant divisor), got {norm}")
    m = mask.to(loss_mat.dtype)
    token_sum = _masked_product(loss_mat, m).sum(-1)  # (B,)
    token_count = m.sum(-1)  # (B,)
    num_seqs = (token_count > 0).sum().clamp(min=1)  # sequences with a token in the mask
    if agg_mode == "token-mean":
        return token_sum.sum() / token_count.sum().clamp(min=1)
    if agg_mode == "seq-mean-token-mean":
        return (token_sum / token_count.clamp(min=1)).sum() / num_seqs
    if agg_mode == "seq-mean-token-sum":
        return token_sum.sum() / num_seqs
    if agg_mode == "seq-mean-token-sum-norm":
        return token_sum.sum() / (norm if norm is not None else max(loss_mat.shape[-1], 1))
    raise ValueError(f"agg_mode: unknown {agg_mode!r}; use one of {', '.join(AGG_MODES)}")


def aggregation_share(
    agg_mode: str, part: Tensor, whole: Tensor, dtype: torch.dtype | None = None
) -> Tensor:
    """Weight of a micro-batch's aggregate in the aggregate of the whole batch.

    ``aggregate(l, whole) = Σ_i share_i · aggregate(l_i, part_i)`` over a split of the rows:
    the token count ratio for ``token-mean``, the ratio of sequences with a token in the mask for
    the ``seq-mean-*`` modes, 1 for ``seq-mean-token-sum-norm`` (a constant divisor).

    Args:
        agg_mode: one of :data:`AGG_MODES`.
        part: ``(b, T)`` mask of the micro-batch's rows.
        whole: ``(B, T)`` mask of the whole batch.
        dtype: of the 0-d result (``None``: torch's default float dtype); the counts are exact,
            the ratio is rounded once to it.
    """
    dtype = dtype or torch.get_default_dtype()
    if agg_mode == "seq-mean-token-sum-norm":
        return torch.ones((), dtype=dtype)
    if agg_mode == "token-mean":
        counts = part.sum(), whole.sum().clamp(min=1)
    elif agg_mode in AGG_MODES:
        counts = part.any(-1).sum(), whole.any(-1).sum().clamp(min=1)
    else:
        raise ValueError(f"agg_mode: unknown {agg_mode!r}; use one of {', '.join(AGG_MODES)}")
    return counts[0].to(dtype) / counts[1].to(dtype)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` holds (same shape, bool or 0/1); 0 for an empty mask."""
    m = mask.to(values.dtype)
    return _masked_product(values, m).sum() / m.sum().clamp(min=1)


def _masked_product(values: Tensor, weights: Tensor) -> Tensor:
    """``values · weights``, exactly 0 where the weight is 0: ``torch.where``, not ``0 · NaN``."""
    return torch.where(weights != 0, values * weights, 0.0)
