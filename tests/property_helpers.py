"""Shared hypothesis settings, strategies and helpers of the property tests
(``test_properties_stats.py``, ``test_properties_losses.py``)."""

from __future__ import annotations

import math

import torch
from hypothesis import settings
from hypothesis import strategies as st

from entropy_dynamics.theory import MIN_TEMPERATURE

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None)
FEW = settings(max_examples=15, deadline=None, derandomize=True, database=None)

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
FIELDS = ("logprobs", "entropy", "discriminator", "expected_discriminator")
POISON = (math.nan, math.inf, -math.inf)

seeds = st.integers(0, 2**32 - 1)
temperatures = st.one_of(
    st.sampled_from([MIN_TEMPERATURE, 1.0]),
    st.floats(-5.0, 1.0).map(lambda e: max(MIN_TEMPERATURE, 10.0**e)),
)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def poison(x: torch.Tensor, valid: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``x`` with NaN, +inf or -inf (drawn per entry) wherever ``valid`` is false."""
    junk = torch.tensor(POISON, dtype=x.dtype)[torch.randint(3, x.shape, generator=gen)]
    return torch.where(valid, x, junk)
