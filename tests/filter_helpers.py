"""Hand-built inputs of the filter tests: tensors from rows, TokenStats with chosen fields."""

from __future__ import annotations

import torch

from entropy_dynamics.advantages import broadcast_to_tokens
from entropy_dynamics.stats import TokenStats

__all__ = ["PAD", "mask_where", "row_advantages", "rows", "stats_with"]

PAD = float("nan")  # padded entries: must never reach a statistic


def rows(rows: list[list[float]], dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


def stats_with(shape, *, s=None, e=None, logp=None, h=None, dtype=torch.float32) -> TokenStats:
    """TokenStats with chosen fields; the others are zeros."""

    def field(x):
        return torch.zeros(shape, dtype=dtype) if x is None else x.to(dtype)

    return TokenStats(field(logp), field(h), field(s), field(e))


def row_advantages(values: list[float], mask: torch.Tensor) -> torch.Tensor:
    return broadcast_to_tokens(torch.tensor(values), mask)


def mask_where(shape, *cells) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for r, c in cells:
        mask[r, c] = True
    return mask
