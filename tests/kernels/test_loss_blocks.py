"""kernels.loss_blocks: the fused loss's per-backend block work (the torch and Triton blocks are
checked through ``fused_linear_loss`` in test_fused_loss and against each other in
test_triton_matmul; here the parts of their own)."""

from __future__ import annotations

import torch

from entropy_dynamics.kernels import LMHead
from entropy_dynamics.kernels.loss_blocks import (
    block_function,
    compact_rows_,
    torch_block,
    triton_block,
)


def test_gathering_live_rows_in_place_equals_index_select() -> None:
    block = torch.randn(9, 7, dtype=torch.float64)
    for live in ([0, 1, 2], [3, 5, 8], [1, 2, 4, 5, 6, 7, 8], [8]):
        keep = torch.tensor(live)
        expected = block.index_select(0, keep)
        torch.testing.assert_close(compact_rows_(block.clone(), keep), expected, rtol=0, atol=0)


def test_torch_block_statistics_and_gradient_of_a_tiny_block() -> None:
    # Two rows over a 3-token valid vocabulary (a 4th, padded row of W is left out), T = 1:
    # logits x = h Wᵀ; grad_z of L = Σ g1 log p_k is g1 (e_k - p).
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [9.0, 9.0]], dtype=torch.float64)
    hidden = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64)
    tokens = torch.tensor([2, 0])
    stats, grad_fn = torch_block(LMHead(weight, valid_vocab=3), hidden, tokens, True)
    x = hidden @ weight[:3].T  # (2, 3)
    log_p = torch.log_softmax(x, -1)
    p = log_p.exp()
    torch.testing.assert_close(stats[0], log_p.gather(-1, tokens[:, None]).squeeze(-1))
    torch.testing.assert_close(stats[1], -(p * log_p).sum(-1))
    g1 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    expected = g1[:, None] * (torch.nn.functional.one_hot(tokens, 3) - p)  # (2, 3)
    grad = grad_fn(g1, torch.zeros(2, dtype=torch.float64))
    assert grad.shape == (2, 3)
    torch.testing.assert_close(grad, expected)


def test_block_function_names_each_backend() -> None:
    # "triton-matmul" imports triton: its block is checked in test_triton_matmul
    assert block_function("torch") is torch_block and block_function("triton") is triton_block
