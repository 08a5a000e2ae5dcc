"""Triton kernels behind :func:`entropy_dynamics.stats.token_stats_from_hidden` on CUDA.

Imported lazily (only when triton is importable and the tensors are on CUDA, or under
``TRITON_INTERPRET=1`` in the tests), so the package never needs triton.

- Forward: one kernel computes each ``[BLOCK_M, BLOCK_N]`` logits tile with ``tl.dot`` (float32
  accumulator) and folds it straight into the four streamed power sums of
  :mod:`entropy_dynamics.kernels.streaming` (``A, B, C, D`` relative to a running max) and ``x_k``;
  the logits never leave registers. The grid is (row blocks × vocabulary splits) so that small
  batches still fill the GPU; the per-split partial sums, ``(6, splits, N)`` floats, are merged in
  torch with the same rebasing formula as the torch path.
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

from entropy_dynamics.kernels.power_sums import finalize, merge_splits
from entropy_dynamics.kernels.triton_matmul import _logits_tile, _precision, _stages

__all__ = ["forward", "grad_tile"]

_BLOCK_M, _BLOCK_N, _BLOCK_K = 64, 128, 64
_NUM_WARPS = 8


@triton.jit
def _forward_kernel(
    hidden_ptr,
    weight_ptr,
    bias_ptr,
    tokens_ptr,
    partial_ptr,
    n_rows,
    vocab,
    dim,
    split_size,
    inv_t,
    stride_hn,
    stride_hd,
    stride_wv,
    stride_wd,
    HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    n_splits = tl.num_programs(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    tok = tl.load(tokens_ptr + rows, mask=row_ok, other=-1)
    v_begin = pid_s * split_size
    v_end = tl.minimum(v_begin + split_size, vocab)
    run_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    sum_a = tl.zeros((BLOCK_M,), tl.float32)
    sum_b = tl.zeros((BLOCK_M,), tl.float32)
    sum_c = tl.zeros((BLOCK_M,), tl.float32)
    sum_d = tl.zeros((BLOCK_M,), tl.float32)
    x_k = tl.zeros((BLOCK_M,), tl.float32)
    for v0 in range(v_begin, v_end, BLOCK_N):
        cols = v0 + tl.arange(0, BLOCK_N)
        col_ok = cols < v_end
        x = _logits_tile(
            hidden_ptr, weight_ptr, bias_ptr, rows, cols, row_ok, col_ok, dim, inv_t,
            stride_hn, stride_hd, stride_wv, stride_wd,
            HAS_BIAS, PRECISION, False, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        x_k += tl.sum(tl.where(cols[None, :] == tok[:, None], x, 0.0), axis=1)
        x = tl.where(col_ok[None, :], x, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(x, axis=1))
        # δ = old max − new max; the first tile has all sums 0, so any finite δ will do.
        delta = tl.where(run_max == float("-inf"), 0.0, run_max - new_max)
        scale = tl.exp(delta)
        rel = tl.where(col_ok[None, :], x - new_max[:, None], 0.0)
        e = tl.where(col_ok[None, :], tl.exp(rel), 0.0)
        e2 = e * e
        sum_b = scale * (sum_b + delta * sum_a) + tl.sum(rel * e, axis=1)
        sum_d = scale * scale * (sum_d + delta * sum_c) + tl.sum(rel * e2, axis=1)
        sum_a = scale * sum_a + tl.sum(e, axis=1)
        sum_c = scale * scale * sum_c + tl.sum(e2, axis=1)
        run_max = new_max
    field = n_splits * n_rows
    out = partial_ptr + pid_s * n_rows + rows
    tl.store(out, run_max, mask=row_ok)
    tl.store(out + field, sum_a, mask=row_ok)
    tl.store(out + 2 * field, sum_b, mask=row_ok)
    tl.store(out + 3 * field, sum_c, mask=row_ok)
    tl.store(out + 4 * field, sum_d, mask=row_ok)
    tl.store(out + 5 * field, x_k, mask=row_ok)


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


def _num_splits(n_rows: int, vocab: int, device: torch.device) -> int:
    """Vocabulary splits so that (row blocks × splits) covers about two waves of the GPU."""
    if device.type == "cuda":
        target = 2 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        target = 4  # interpreter: exercise the split merge without many programs
    row_blocks = triton.cdiv(n_rows, _BLOCK_M)
    return max(1, min(triton.cdiv(vocab, _BLOCK_N), triton.cdiv(target, row_blocks)))


def forward(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, tokens: Tensor, inv_t: float, vocab: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(log p_k, H, S_k, E_p[S], logsumexp)`` in float32, each ``(N,)``; ``hidden`` ``(N, d)``."""
    n_rows, dim = hidden.shape
    splits = _num_splits(n_rows, vocab, hidden.device)
    split_size = triton.cdiv(triton.cdiv(vocab, splits), _BLOCK_N) * _BLOCK_N
    splits = triton.cdiv(vocab, split_size)  # every split non-empty
    partial = torch.empty(6, splits, n_rows, dtype=torch.float32, device=hidden.device)
    grid = (triton.cdiv(n_rows, _BLOCK_M), splits)
    _forward_kernel[grid](
        hidden, weight, bias if bias is not None else hidden, tokens, partial,
        n_rows, vocab, dim, split_size, inv_t,
        hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
        HAS_BIAS=bias is not None, PRECISION=_precision(hidden.dtype),
        BLOCK_M=_BLOCK_M, BLOCK_N=_BLOCK_N, BLOCK_K=_BLOCK_K,
        num_warps=_NUM_WARPS, num_stages=_stages(None, hidden.dtype),
    )  # fmt: skip
    sums = merge_splits(tuple(partial[:5]))  # type: ignore[arg-type]
    return finalize(sums, partial[5].sum(0))


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
