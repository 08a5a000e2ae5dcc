"""kernels.lm_head: the lm_head parameter object, its checks and its block logits."""

from __future__ import annotations

import math

import pytest
import torch

from entropy_dynamics import theory
from entropy_dynamics.kernels.lm_head import (
    MIN_TEMPERATURE,
    LMHead,
    check_temperature,
    compute_dtype,
)


def test_construction_normalises_and_refuses_what_is_not_a_head() -> None:
    weight = torch.zeros(5, 3)
    head = LMHead(weight, temperature=2)
    assert head.valid_vocab == 5 and isinstance(head.temperature, float) and head.inv_t == 0.5
    assert LMHead(weight, valid_vocab=4).valid_vocab == 4
    with pytest.raises(ValueError, match="temperature"):
        LMHead(weight, temperature=MIN_TEMPERATURE / 2)
    with pytest.raises(ValueError, match=r"\(V, d\)"):
        LMHead(torch.zeros(5))
    with pytest.raises(ValueError, match=r"\(V, d\)"):
        LMHead(torch.zeros(5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="bias"):
        LMHead(weight, torch.zeros(4))
    with pytest.raises(ValueError, match="bias"):
        LMHead(weight, torch.zeros(5, dtype=torch.float64))
    for valid in (0, 6):
        with pytest.raises(ValueError, match=r"valid_vocab must lie in \[1, 5\]"):
            LMHead(weight, valid_vocab=valid)


def test_one_temperature_rule_shared_with_theory() -> None:
    assert theory.check_temperature is check_temperature
    assert theory.MIN_TEMPERATURE == MIN_TEMPERATURE
    for bad in (0.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="temperature"):
            check_temperature(bad)


def test_check_refuses_data_the_head_cannot_take() -> None:
    head = LMHead(torch.zeros(5, 3), valid_vocab=4)
    hidden, tokens = torch.zeros(2, 3), torch.tensor([0, 3])
    head.check(hidden, tokens)
    with pytest.raises(TypeError, match="floating-point"):
        head.check(hidden.long(), tokens)
    with pytest.raises(ValueError, match=r"d = hidden.shape\[-1\] = 2"):
        head.check(torch.zeros(2, 2), tokens)
    with pytest.raises(ValueError, match="dtype and device"):
        head.check(hidden.double(), tokens)
    with pytest.raises(ValueError, match="shape"):
        head.check(hidden, tokens[:1])
    with pytest.raises(TypeError, match="integer"):
        head.check(hidden, tokens.float())
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        head.check(hidden, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="finite"):
        LMHead(torch.zeros(5, 3), torch.tensor([0.0, 0, 0, 0, -math.inf])).check(hidden, tokens)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_logits_of_a_column_range(dtype) -> None:
    # hidden (2, 3), weight (5, 3), bias (5,) at T = 0.5: x = (h Wᵀ + b) / T, columns [1, 4)
    gen = torch.Generator().manual_seed(0)
    hidden, weight, bias = (torch.randn(*s, generator=gen) for s in ((2, 3), (5, 3), (5,)))
    hidden, weight, bias = hidden.to(dtype), weight.to(dtype), bias.to(dtype)
    head = LMHead(weight, bias, 0.5, valid_vocab=4)
    expected = (hidden.double() @ weight.double().T + bias.double()) / 0.5  # (2, 5)
    got = head.logits(hidden, compute_dtype(dtype), 1, 4)
    assert got.shape == (2, 3) and got.dtype == compute_dtype(dtype)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(got.double(), expected[:, 1:4], rtol=tol, atol=tol)
    assert head.logits(hidden, compute_dtype(dtype)).shape == (2, 4)  # the valid vocabulary
    w, b = head.rows()
    assert w.shape == (4, 3) and b.shape == (4,) and w.data_ptr() == weight.data_ptr()


def test_compute_dtype() -> None:
    assert compute_dtype(torch.float64) == torch.float64
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert compute_dtype(dtype) == torch.float32
