"""The filters' contract, their registry, and the helpers every filter shares.

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
- ``options``: keyword-only arguments with documented defaults; :func:`filter_options` reads them.

Filters are registered by name with :func:`register_filter` and looked up with :func:`get_filter`.
The helpers below are public within the package (the filters' modules import them); statistics use
valid tokens only: padded entries are replaced with zeros by ``torch.where`` before any reduction,
so even NaN/inf padding cannot leak into a statistic. Nothing here calls ``.item()``: every
decision is a tensor op, so filters never sync a GPU.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

from entropy_dynamics._registry import Registry
from entropy_dynamics.stats import TokenStats

__all__ = [
    "SIGMA_FLOOR",
    "FilterFn",
    "available_filters",
    "cap",
    "check_finite",
    "check_inputs",
    "clip_fractions",
    "descending_rank",
    "filter_options",
    "fraction",
    "get_filter",
    "masked_moments",
    "masked_quantile",
    "prepare",
    "register_filter",
    "two_sided_band",
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


def filter_options(name: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options filter ``name`` runs with: its keyword-only parameters and their defaults, in
    signature order, with ``given`` on top. The one reader of a filter's options (the config's
    check, the loss's ``exclude_mask``, the effective options shown to the user, a controller's
    defaults); a ``given`` option the filter does not take is refused (``ValueError``).

    Example: ``filter_options("clip_b", {"mu": 1.0})`` is
    ``{"mu": 1.0, "mu_plus": None, "mu_minus": None}``.
    """
    params = inspect.signature(get_filter(name)).parameters.values()
    options = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    for key in given or {}:
        if key not in options:
            raise ValueError(
                f"filter_options: filter {name!r} has no option {key!r}; "
                f"its options: {', '.join(options) or 'none'}"
            )
    return {**options, **(given or {})}


SIGMA_FLOOR = 1e-12
"""Below this std the reference code keeps every token."""


def check_finite(name: str, value: float) -> None:
    """Refuse an option that is not a finite number, naming it."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def check_inputs(stats: TokenStats, advantages: Tensor, response_mask: Tensor) -> None:
    """Refuse inputs that are not one ``(B, T)`` shape, naming the tensor."""
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


def masked_moments(values: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population variance (denominator n) of ``values`` over ``valid``; 0-d each."""
    n = valid.sum().clamp_min(1).to(values.dtype)
    mean = torch.where(valid, values, 0.0).sum() / n
    var = torch.where(valid, (values - mean) ** 2, 0.0).sum() / n
    return mean, var


def cap(ratio: float, valid: Tensor) -> Tensor:
    """``max(int(ratio · n_valid), 1)`` as a 0-d tensor, in float64 like the reference's Python
    ``int(ratio * n)`` (float32 could round 700.0 down to 699)."""
    n = valid.sum().to(torch.float64)
    return torch.floor(ratio * n).clamp_min(1.0)


def descending_rank(scores: Tensor) -> Tensor:
    """Rank of each entry of ``scores`` in a stable descending sort of the flattened tensor:
    0 for the largest; ties go to the lower flat index. Same shape as ``scores``."""
    flat = scores.reshape(-1)
    order = torch.argsort(flat, descending=True, stable=True)  # (N,)
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(flat.numel(), device=flat.device))
    return rank.view(scores.shape)


def fraction(part: Tensor, whole: Tensor, dtype: torch.dtype) -> Tensor:
    """``Σ part / max(Σ whole, 1)`` in ``dtype``, 0-d (two masks of one shape)."""
    return part.sum().to(dtype) / whole.sum().clamp_min(1).to(dtype)


def clip_fractions(
    prefix: str, valid: Tensor, keep: Tensor, advantages: Tensor, dtype: torch.dtype
) -> dict[str, Tensor]:
    """The reference code's metrics: dropped fraction of all valid tokens, of the valid tokens
    with ``A > 0`` and of those with ``A < 0`` (zero-advantage drops count only in the total)."""
    dropped = valid & ~keep
    pos, neg = valid & (advantages > 0), valid & (advantages < 0)
    return {
        f"{prefix}/frac_clipped": fraction(dropped, valid, dtype),
        f"{prefix}/frac_clipped_pos": fraction(dropped & pos, pos, dtype),
        f"{prefix}/frac_clipped_neg": fraction(dropped & neg, neg, dtype),
    }


def two_sided_band(
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


def prepare(
    stats: TokenStats, advantages: Tensor, response_mask: Tensor
) -> tuple[Tensor, Tensor, torch.dtype]:
    """Validate; return ``(valid (B, T) bool, advantages in the compute dtype, dtype)``."""
    check_inputs(stats, advantages, response_mask)
    dtype = torch.float64 if stats.discriminator.dtype == torch.float64 else torch.float32
    return response_mask != 0, advantages.detach().to(dtype), dtype


def masked_quantile(values: Tensor, valid: Tensor, q: float) -> Tensor:
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
