"""Group-relative advantages against hand-derived values and a per-group torch.std reference."""

from __future__ import annotations

import math

import pytest
import torch

from entropy_dynamics.advantages import (
    available_advantages,
    batch_advantages,
    broadcast_to_tokens,
    contiguous_group_ids,
    dr_grpo_advantages,
    get_advantage_fn,
    grpo_advantages,
)

EPS = 1e-6


def _reference_grpo(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float) -> torch.Tensor:
    """Loop over groups with torch.mean / torch.std (correction=1), as the released code does."""
    out = torch.empty_like(rewards, dtype=torch.float64)
    for gid in group_ids.unique():
        members = group_ids == gid
        group = rewards[members].double()
        if group.numel() == 1:
            mean, std = 0.0, 1.0
        else:
            mean, std = group.mean(), group.std(correction=1)
        out[members] = (group - mean) / (std + eps)
    return out


def test_grpo_hand_values_with_interleaved_ids():
    # group 7: rewards [1, 0, 0, 1] -> mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3)
    # group 3: rewards [1, 1]       -> mean 1, std 0 -> A = 0 / (0 + eps) = 0
    # group 5: reward  [2]          -> size 1: mean 0, std 1 -> A = 2 / (1 + eps)
    rewards = torch.tensor([1.0, 1.0, 0.0, 2.0, 0.0, 1.0, 1.0])
    group_ids = torch.tensor([7, 3, 7, 5, 7, 3, 7])
    std = math.sqrt(1 / 3)
    expected = torch.tensor(
        [0.5 / (std + EPS), 0.0, -0.5 / (std + EPS), 2 / (1 + EPS), -0.5 / (std + EPS), 0.0,
         0.5 / (std + EPS)]
    )  # fmt: skip
    torch.testing.assert_close(grpo_advantages(rewards, group_ids), expected)


def test_grpo_matches_reference_on_random_groups():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.rand(40, generator=gen, dtype=torch.float64)
    group_ids = torch.randint(0, 9, (40,), generator=gen)
    got = grpo_advantages(rewards, group_ids, eps=1e-3)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, _reference_grpo(rewards, group_ids, 1e-3))


def test_contiguous_layout_equals_row_wise_formula():
    # rewards.view(P, G): each row is one prompt's group.
    gen = torch.Generator().manual_seed(1)
    grid = torch.randint(0, 2, (5, 4), generator=gen).float()  # (P, G) 0/1 rewards
    ids = contiguous_group_ids(5, 4)
    assert ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4]
    row_wise = (grid - grid.mean(1, keepdim=True)) / (grid.std(1, keepdim=True) + EPS)
    torch.testing.assert_close(grpo_advantages(grid.reshape(-1), ids), row_wise.reshape(-1))
    dr = grid - grid.mean(1, keepdim=True)
    torch.testing.assert_close(dr_grpo_advantages(grid.reshape(-1), ids), dr.reshape(-1))


def test_dr_grpo_hand_values():
    # group 0: [3, 1] -> mean 2 -> [1, -1]; group 1: [5] -> size 1, mean 0 -> 5
    rewards = torch.tensor([3.0, 5.0, 1.0])
    got = dr_grpo_advantages(rewards, torch.tensor([0, 1, 0]))
    torch.testing.assert_close(got, torch.tensor([1.0, 5.0, -1.0]))


def test_batch_advantages_ignore_groups():
    # all 4 rewards [0, 1, 2, 3]: mean 1.5, unbiased std sqrt((2.25+0.25+0.25+2.25)/3) = sqrt(5/3)
    rewards = torch.tensor([0.0, 1.0, 2.0, 3.0])
    std = math.sqrt(5 / 3)
    expected = (rewards - 1.5) / (std + EPS)
    torch.testing.assert_close(batch_advantages(rewards, torch.tensor([0, 0, 1, 1])), expected)
    # a batch of one response: mean 0, std 1
    torch.testing.assert_close(
        batch_advantages(torch.tensor([4.0]), torch.tensor([0])), torch.tensor([4 / (1 + EPS)])
    )


def test_integer_and_bool_rewards_are_cast_to_float32():
    got = grpo_advantages(torch.tensor([True, False]), torch.tensor([0, 0]))
    assert got.dtype == torch.float32
    # [1, 0]: mean 0.5, unbiased std sqrt(0.5)
    torch.testing.assert_close(got, torch.tensor([0.5, -0.5]) / (math.sqrt(0.5) + EPS))


def test_empty_batch():
    assert grpo_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_registry():
    assert available_advantages() == ["batch", "dr_grpo", "grpo"]
    assert get_advantage_fn("grpo") is grpo_advantages
    with pytest.raises(KeyError, match="batch, dr_grpo, grpo"):
        get_advantage_fn("ppo")


def test_broadcast_to_tokens_zero_on_padding():
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    expected = torch.tensor([[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]])
    torch.testing.assert_close(broadcast_to_tokens(adv, mask), expected)
    torch.testing.assert_close(broadcast_to_tokens(adv, mask.bool()), expected)


@pytest.mark.parametrize(
    ("rewards", "group_ids", "match"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), "rewards must be 1-D"),
        (torch.zeros(3), torch.zeros(2, dtype=torch.long), "group_ids must have the shape"),
        (torch.zeros(3), torch.zeros(3), "group_ids must be an integer"),
    ],
)
def test_bad_inputs(rewards, group_ids, match):
    with pytest.raises(ValueError, match=match):
        grpo_advantages(rewards, group_ids)


def test_bad_broadcast_and_group_layout():
    with pytest.raises(ValueError, match="3 responses but response_mask has 2 rows"):
        broadcast_to_tokens(torch.zeros(3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="group_size >= 1"):
        contiguous_group_ids(2, 0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        grpo_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), eps=-1.0)
