"""Triton kernels behind :func:`entropy_dynamics.stats.token_stats_from_hidden` on CUDA.

Imported lazily (only when triton is importable and the tensors are on CUDA, or under
``TRITON_INTERPRET=1`` in the tests), so the package never needs triton.

- Forward: the power-sums matmul kernel of :mod:`entropy_dynamics.kernels.triton_matmul` (each
  ``[BLOCK_M, BLOCK_N]`` logits tile from ``tl.dot``, folded straight into the streamed power sums
  ``A, B, C, D`` and ``x_k``; the logits never leave registers; the grid is row blocks ×
  vocabulary splits, the partial sums merged in torch), with the 64 × 128 × 64 tiles measured on
  the H100; ``backend="triton-matmul"`` runs the same kernel with its 128 × 128 defaults.
- Backward: one kernel recomputes a ``[rows, vocab chunk]`` tile of logits and writes
  ``grad_z`` of :mod:`entropy_dynamics.kernels.logit_grad` in float32 (an in-register copy of
  that formula, tested against it); the two large matmuls
  (``grad_z @ W`` and ``grad_zᵀ @ hidden``) are left to cuBLAS in the shared chunk loop.

Float32 inputs use IEEE float32 dot products (not TF32), matching torch's default matmul.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from entropy_dynamics.kernels.power_sums import finalize
from entropy_dynamics.kernels.triton_matmul import (
    _logits_tile,
    _precision,
    _stages,
    matmul_power_sums,
)

__all__ = ["forward", "grad_tile"]

_BLOCK_M, _BLOCK_N, _BLOCK_K = 64, 128, 64
_NUM_WARPS = 8


@triton.jit
def _grad_kernel(
    hidden_ptr,
    weight_ptr,
    bias_ptr,
    tokens_ptr,
    lse_ptr,
    entropy_ptr,
    g1_ptr,
    g2_ptr,
    out_ptr,
    n_rows,
    n_cols,
    dim,
    inv_t,
    stride_hn,
    stride_hd,
    stride_wv,
    stride_wd,
    stride_on,
    HAS_BIAS: tl.constexpr,
    HAS_G1: tl.constexpr,
    HAS_G2: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    x = _logits_tile(
        hidden_ptr, weight_ptr, bias_ptr, rows, cols, row_ok, col_ok, dim, inv_t,
        stride_hn, stride_hd, stride_wv, stride_wd,
        HAS_BIAS, PRECISION, False, BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip
    log_p = x - tl.load(lse_ptr + rows, mask=row_ok, other=0.0)[:, None]
    p = tl.exp(log_p)
    coef = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    if HAS_G1:
        g1 = tl.load(g1_ptr + rows, mask=row_ok, other=0.0)
        coef += g1[:, None]
    if HAS_G2:
        g2 = tl.load(g2_ptr + rows, mask=row_ok, other=0.0)
        ent = tl.load(entropy_ptr + rows, mask=row_ok, other=0.0)
        coef += g2[:, None] * (log_p + ent[:, None])
    grad = -p * coef
    if HAS_G1:
        tok = tl.load(tokens_ptr + rows, mask=row_ok, other=-1)
        grad += tl.where(cols[None, :] == tok[:, None], g1[:, None], 0.0)
    mask = row_ok[:, None] & col_ok[None, :]
    tl.store(out_ptr + rows[:, None] * stride_on + cols[None, :], grad * inv_t, mask=mask)


def forward(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, tokens: Tensor, inv_t: float, vocab: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(log p_k, H, S_k, E_p[S], logsumexp)`` in float32, each ``(N,)``; ``hidden`` ``(N, d)``:
    :func:`.triton_matmul.matmul_power_sums` with this module's 64 × 128 tiles (half inputs; the
    measured default) and the merged sums finished by :func:`.power_sums.finalize`."""
    tiles = {} if hidden.dtype == torch.float32 else {"block_m": _BLOCK_M, "block_n": _BLOCK_N,
                                                       "block_k": _BLOCK_K}  # fmt: skip
    sums, x_k = matmul_power_sums(hidden, weight, bias, tokens, inv_t, vocab, True,
                                  num_warps=_NUM_WARPS, **tiles)  # fmt: skip
    return finalize(sums, x_k)


def grad_tile(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    tokens: Tensor,
    lse: Tensor,
    entropy: Tensor,
    g1: Tensor | None,
    g2: Tensor | None,
    inv_t: float,
):
    """The backward's ``grad_z`` tile function (see ``streaming._backward_loop``)."""

    def tile(rows: slice, v0: int, v1: int) -> Tensor:
        h = hidden[rows]
        w = weight[v0:v1]
        n, v = h.shape[0], v1 - v0
        out = torch.empty(n, v, dtype=torch.float32, device=hidden.device)
        grid = (triton.cdiv(n, _BLOCK_M), triton.cdiv(v, _BLOCK_N))
        _grad_kernel[grid](
            h, w, bias[v0:v1] if bias is not None else h, tokens[rows] - v0,
            lse[rows], entropy[rows],
            g1[rows] if g1 is not None else lse, g2[rows] if g2 is not None else lse, out,
            n, v, h.shape[1], inv_t,
            h.stride(0), h.stride(1), w.stride(0), w.stride(1), out.stride(0),
            HAS_BIAS=bias is not None, HAS_G1=g1 is not None, HAS_G2=g2 is not None,
            PRECISION=_precision(hidden.dtype),
            BLOCK_M=_BLOCK_M, BLOCK_N=_BLOCK_N, BLOCK_K=_BLOCK_K, num_warps=_NUM_WARPS,
            num_stages=_stages(None, hidden.dtype),
        )  # fmt: skip
        return out

    return tile
