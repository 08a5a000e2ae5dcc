"""Loss aggregation (``aggregation.py``): the four modes by hand, the micro-batch shares that
reassemble them, and padding that never counts."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.aggregation import AGG_MODES, aggregate, aggregation_share, masked_mean


def test_aggregation_modes_match_hand_computation() -> None:
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    # Valid: row 0 {1, 2}, row 1 {4}, row 2 empty (ignored by sequence means).
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(7 / 3)
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx((1.5 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-sum").item() == pytest.approx((3 + 4) / 2)
    # token sum 7 over the padded width T = 3, or over a given constant.
    assert aggregate(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx(7 / 3)
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", norm=14).item() == pytest.approx(0.5)
    assert aggregate(loss, torch.zeros_like(mask), "token-mean").item() == 0.0
    with pytest.raises(ValueError, match="agg_mode"):
        aggregate(loss, mask, "sum")
    assert set(AGG_MODES) == {
        "token-mean",
        "seq-mean-token-mean",
        "seq-mean-token-sum",
        "seq-mean-token-sum-norm",
    }


def test_shares_of_a_split_sum_to_one_and_padding_never_counts() -> None:
    # rows 0-1 hold 3 tokens in 2 sequences, rows 2-3 hold 1 token in 1 sequence (row 3 empty)
    whole = torch.tensor([[1, 1], [1, 0], [1, 0], [0, 0]], dtype=torch.bool)
    parts = (whole[:2], whole[2:])
    expected = {
        "token-mean": (3 / 4, 1 / 4),
        "seq-mean-token-mean": (2 / 3, 1 / 3),
        "seq-mean-token-sum": (2 / 3, 1 / 3),
        "seq-mean-token-sum-norm": (1.0, 1.0),  # a constant divisor: each part counts whole
    }
    for mode in AGG_MODES:
        shares = [aggregation_share(mode, part, whole, torch.float64).item() for part in parts]
        assert shares == pytest.approx(expected[mode]), mode
    with pytest.raises(ValueError, match="agg_mode"):
        aggregation_share("sum", whole, whole)
    values = torch.tensor([[1.0, float("nan")], [3.0, float("inf")]])
    mask = torch.tensor([[True, False], [True, False]])
    assert masked_mean(values, mask).item() == 2.0
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0
