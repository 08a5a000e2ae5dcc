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

from collections.abc import Callable
from typing import Protocol

from torch import Tensor

from entropy_dynamics.stats import TokenStats

__all__ = ["FilterFn", "available_filters", "get_filter", "register_filter"]


class FilterFn(Protocol):
    def __call__(
        self, stats: TokenStats, advantages: Tensor, response_mask: Tensor, **options: object
    ) -> tuple[Tensor, dict[str, Tensor]]: ...


_FILTERS: dict[str, FilterFn] = {}


def register_filter(name: str) -> Callable[[FilterFn], FilterFn]:
    """Decorator registering a filter under ``name``."""

    def decorator(fn: FilterFn) -> FilterFn:
        if name in _FILTERS:
            raise ValueError(f"filter {name!r} is already registered")
        _FILTERS[name] = fn
        return fn

    return decorator


def get_filter(name: str) -> FilterFn:
    """The filter registered under ``name``; the error lists the registered names."""
    try:
        return _FILTERS[name]
    except KeyError:
        raise KeyError(
            f"unknown filter {name!r}; registered filters: {', '.join(sorted(_FILTERS))}"
        ) from None


def available_filters() -> list[str]:
    return sorted(_FILTERS)
