"""Triton kernels for the block work of :mod:`entropy_dynamics.kernels.fused_loss` on CUDA.

The fused loss forms each ``(rows, V)`` block of raw logits with one cuBLAS matmul (float32
output, ``loss_blocks.triton_block``); these two kernels replace the torch element-wise passes
over that block:

- ``_stats_kernel`` — one program per row reads the row once, scaled by ``1 / T``, and folds it
  into the streamed power sums ``A, B, C, D`` relative to a per-lane running max (the rebasing
  rule of :mod:`entropy_dynamics.kernels.power_sums`: ``A' = e^δ A``, ``B' = e^δ (B + δ A)``,
  ``C' = e^{2δ} C``, ``D' = e^{2δ} (D + δ C)``), lanes merged at the end; it also picks ``x_k``.
- ``_grad_kernel`` — one program per row reads the row again and writes
  ``grad_z = e^{x - m} (coef + g2s (x - m)) + g1t·[i = k]`` in the matmuls' dtype (bf16 on a bf16
  model: no separate cast pass), with the per-row coefficients of
  :func:`entropy_dynamics.kernels.logit_grad.grad_coefficients` (the formula of
  :mod:`entropy_dynamics.kernels.logit_grad`, rearranged).

Imported only when used (CUDA with triton, or ``TRITON_INTERPRET=1`` in the tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["block_grad", "block_stats"]

_BLOCK = 1024


@triton.jit
def _stats_kernel(
    x_ptr, stride, tokens_ptr, out_ptr, n_rows, vocab, inv_t,
    WITH_ES: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)  # one program per row of the (r, V) block
    base = x_ptr + row.to(tl.int64) * stride
    token = tl.load(tokens_ptr + row)  # scalar
    # per-lane running max and sums, (BLOCK,) each, merged across lanes at the end; the initial
    # max is finite, so that δ · 0 never forms inf · 0 (a literal: jit'd code may not read
    # module globals)
    m = tl.full((BLOCK,), -1.0e30, tl.float32)  # (BLOCK,)
    a = tl.zeros((BLOCK,), tl.float32)
    b = tl.zeros((BLOCK,), tl.float32)
    c = tl.zeros((BLOCK,), tl.float32)
    d = tl.zeros((BLOCK,), tl.float32)
    x_k = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)  # (BLOCK,)
        valid = cols < vocab  # (BLOCK,)
        x = tl.load(base + cols, mask=valid, other=0.0).to(tl.float32) * inv_t  # (BLOCK,)
        x_k += tl.where(cols == token, x, 0.0)
        new_m = tl.where(valid, tl.maximum(m, x), m)  # (BLOCK,)
        delta = m - new_m  # (BLOCK,) ≤ 0
        scale = tl.exp(delta)  # (BLOCK,)
        rel = tl.where(valid, x - new_m, 0.0)  # (BLOCK,)
        e = tl.where(valid, tl.exp(rel), 0.0)  # (BLOCK,)
        b = scale * (b + delta * a) + rel * e  # (BLOCK,), as a, c, d
        a = scale * a + e
        if WITH_ES:
            scale2 = scale * scale  # (BLOCK,)
            e2 = e * e  # (BLOCK,)
            d = scale2 * (d + delta * c) + rel * e2
            c = scale2 * c + e2
        m = new_m
    row_max = tl.max(m, 0)  # scalar: the lanes merged onto the row's max
    delta = m - row_max  # (BLOCK,)
    scale = tl.exp(delta)  # (BLOCK,)
    tl.store(out_ptr + row, row_max)  # out is (6, r)
    tl.store(out_ptr + n_rows + row, tl.sum(scale * a, 0))
    tl.store(out_ptr + 2 * n_rows + row, tl.sum(scale * (b + delta * a), 0))
    if WITH_ES:
        scale2 = scale * scale
        tl.store(out_ptr + 3 * n_rows + row, tl.sum(scale2 * c, 0))
        tl.store(out_ptr + 4 * n_rows + row, tl.sum(scale2 * (d + delta * c), 0))
    tl.store(out_ptr + 5 * n_rows + row, tl.sum(x_k, 0))


@triton.jit
def _grad_kernel(
    x_ptr, stride_x, grad_ptr, stride_g, tokens_ptr, coef_ptr, vocab, inv_t, n_rows,
    BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)  # one program per row of the (r, V) block
    x_base = x_ptr + row.to(tl.int64) * stride_x
    g_base = grad_ptr + row.to(tl.int64) * stride_g
    token = tl.load(tokens_ptr + row)  # scalar, as the four coefficients of coef_ptr (4, r)
    row_max = tl.load(coef_ptr + row)
    coef = tl.load(coef_ptr + n_rows + row)
    g2s = tl.load(coef_ptr + 2 * n_rows + row)
    g1t = tl.load(coef_ptr + 3 * n_rows + row)
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)  # (BLOCK,)
        valid = cols < vocab  # (BLOCK,)
        x = tl.load(x_base + cols, mask=valid, other=0.0).to(tl.float32) * inv_t  # (BLOCK,)
        rel = x - row_max  # (BLOCK,)
        grad = tl.exp(rel) * (coef + g2s * rel) + tl.where(cols == token, g1t, 0.0)  # (BLOCK,)
        tl.store(g_base + cols, grad.to(grad_ptr.dtype.element_ty), mask=valid)


def block_stats(x: Tensor, tokens: Tensor, inv_t: float, with_es: bool) -> Tensor:
    """``(6, r)`` float32: ``max, A, B, C, D, x_k`` of the rows of raw logits ``x`` ``(r, V)``
    scaled by ``inv_t`` (``C = D = 0`` without ``with_es``)."""
    rows, vocab = x.shape
    out = torch.zeros(6, rows, dtype=torch.float32, device=x.device)  # (6, r)
    _stats_kernel[(rows,)](
        x, x.stride(0), tokens, out, rows, vocab, inv_t, WITH_ES=with_es, BLOCK=_BLOCK,
        num_warps=8,
    )  # fmt: skip
    return out


def block_grad(x: Tensor, tokens: Tensor, coefficients: Tensor, inv_t: float, out: Tensor):
    """Write ``grad_z`` of the block into ``out`` ``(r, V)`` (may be ``x`` itself);
    ``coefficients`` ``(4, r)`` float32: ``max, coef, g2s, g1t`` per row."""
    rows, vocab = x.shape
    _grad_kernel[(rows,)](
        x, x.stride(0), out, out.stride(0), tokens, coefficients, vocab, inv_t, rows,
        BLOCK=_BLOCK, num_warps=8,
    )  # fmt: skip
    return out
