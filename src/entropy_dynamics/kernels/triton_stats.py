"""Triton kernels behind :func:`entropy_dynamics.stats.token_stats_from_hidden` on CUDA.

Imported lazily (only when triton is importable and the tensors are on CUDA, or under
``TRITON_INTERPRET=1`` in the tests), so the package never needs triton.

- Forward: the power-sums matmul kernel of :mod:`entropy_dynamics.kernels.triton_matmul` (each
  ``[BLOCK_M, BLOCK_N]`` logits tile from ``tl.dot``, folded straight into the streamed power sums
  ``A, B, C, D`` and ``x_k``; the logits never leave registers; the grid is row blocks ×
  vocabulary splits, the partial sums merged in torch), with the 64 × 128 × 64 tiles measured on
  the H100; ``backend="triton-matmul"`` runs the same kernel with its 128 × 128 defaults.
- Backward: the gradient matmul kernel of :mod:`entropy_dynamics.kernels.triton_matmul`
  recomputes a ``[rows, vocab chunk]`` tile of logits and writes ``grad_z`` of
  :mod:`entropy_dynamics.kernels.logit_grad` in float32 (the row's logsumexp as the reference, so
  ``exp(x - lse) = p``; the coefficients of ``logit_grad.grad_coefficients``, tested against
  ``logit_grad_``); the two large matmuls (``grad_z @ W`` and ``grad_zᵀ @ hidden``) are left to
  cuBLAS in the shared chunk loop.

Float32 inputs use IEEE float32 dot products (not TF32), matching torch's default matmul.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropy_dynamics.kernels.lm_head import LMHead
from entropy_dynamics.kernels.logit_grad import grad_coefficients
from entropy_dynamics.kernels.power_sums import finalize
from entropy_dynamics.kernels.triton_matmul import matmul_logit_grad, matmul_power_sums

__all__ = ["forward", "grad_tile"]

_BLOCK_M, _BLOCK_N, _BLOCK_K = 64, 128, 64
_NUM_WARPS = 8


def _tiles(dtype: torch.dtype) -> dict[str, int]:
    """The measured 64 × 128 × 64 tiles for half inputs; float32 takes triton_matmul's own."""
    if dtype == torch.float32:
        return {}
    return {"block_m": _BLOCK_M, "block_n": _BLOCK_N, "block_k": _BLOCK_K}


def forward(
    hidden: Tensor, head: LMHead, tokens: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(log p_k, H, S_k, E_p[S], logsumexp)`` in float32, each ``(N,)``; ``hidden`` ``(N, d)``,
    ``tokens`` ``(N,)``: :func:`.triton_matmul.matmul_power_sums` with this module's 64 × 128
    tiles (half inputs; the measured default) and the merged sums finished by
    :func:`.power_sums.finalize`."""
    sums, x_k = matmul_power_sums(hidden, head, tokens, True, num_warps=_NUM_WARPS,
                                  **_tiles(hidden.dtype))  # fmt: skip
    return finalize(sums, x_k)  # sums 5 × (N,), x_k (N,) -> 5 × (N,)


def grad_tile(
    hidden: Tensor,
    head: LMHead,
    tokens: Tensor,
    lse: Tensor,
    entropy: Tensor,
    g1: Tensor | None,
    g2: Tensor | None,
):
    """The backward's ``grad_z`` tile function (see ``streaming._backward_loop``): ``hidden``
    ``(N, d)``; ``tokens``, ``lse``, ``entropy``, ``g1``, ``g2`` ``(N,)``."""

    # With the row's logsumexp as the reference, e = exp(x - lse) = p and log A = 0: the grad_z
    # of logit_grad in the coefficient form of triton_matmul's gradient kernel.
    zero = torch.zeros_like(lse)  # (N,)
    coef, g2s, g1t = grad_coefficients(
        zero, entropy, zero if g1 is None else g1, zero if g2 is None else g2, head.inv_t
    )
    coefficients = torch.stack([lse, coef, g2s, g1t]).float()  # (4, N)
    tiles = _tiles(hidden.dtype)

    def tile(rows: slice, v0: int, v1: int) -> Tensor:
        h = hidden[rows]  # (r, d)
        out = torch.empty(h.shape[0], v1 - v0, dtype=torch.float32, device=h.device)  # (r, v)
        return matmul_logit_grad(
            h, head, tokens[rows], coefficients[:, rows].contiguous(), out, start=v0, stop=v1,
            num_warps=_NUM_WARPS, **tiles,
        )  # fmt: skip

    return tile
